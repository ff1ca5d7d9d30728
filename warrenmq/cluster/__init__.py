"""The cluster seam: node names, the shared cookie and the authenticated control transport.

Today its only user is `warrenctl` talking to one node; node-to-node messages (join, Raft
traffic, forwarding) will travel over the same transport.
"""
