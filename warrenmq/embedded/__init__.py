"""A real WarrenMQ node for test suites, without Docker: `Broker` starts one inside the current
process (its own event loop on a thread) or as a child process, on an ephemeral loopback
port, in memory or on a given data directory. `warrenmq.testing` builds the pytest fixtures
on it.
"""

from .broker import Broker, BrokerError

__all__ = ["Broker", "BrokerError"]
