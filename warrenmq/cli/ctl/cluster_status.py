"""warrenctl cluster_status: the cluster as this node sees it: members, running nodes,
versions, alarms, listeners, partitions. `--formatter json` uses rabbitmqctl's keys."""

from __future__ import annotations

import argparse

from .context import Context

name = "cluster_status"
group = "Cluster"
description = "Displays all the nodes in the cluster grouped by node type, together with the "\
    "currently running nodes"
usage = "cluster_status"


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Cluster status of node {ctx.node} ...")
    r = ctx.call("cluster_status")
    if ctx.formatter == "json":
        ctx.document(r)
        return None
    p = ctx.print
    p("Basics\n")
    p(f"Cluster name: {r['cluster_name']}\n")
    p("Disk Nodes\n")
    for n in r["disk_nodes"]:
        p(n)
    p("\nRunning Nodes\n")
    for n in r["running_nodes"]:
        p(n)
    p("\nVersions\n")
    for n, v in r["versions"].items():
        p(f"{n}: WarrenMQ {v['warrenmq_version']} on {v['runtime_version']}")
    p("\nAlarms\n")
    p("\n".join(f"{a['resource']} alarm on node {a['node']}" for a in r["alarms"])
      or "(none)")
    p("\nNetwork Partitions\n")
    p("(none)" if not r["partitions"] else str(r["partitions"]))
    p("\nListeners\n")
    for n, ls in r["listeners"].items():
        for lst in ls:
            p(f"Node: {n}, interface: {lst['interface']}, port: {lst['port']}, protocol: "
              f"{lst['protocol']}, purpose: {lst['purpose']}")
    return None
