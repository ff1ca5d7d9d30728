"""The 3-node clusters bench/ha.py compares, behind one small interface (`Side`).

A side knows its nodes' AMQP URIs and names, runs its CLI (warrenctl / rabbitmqctl) against a
node, says where a queue's replicas are (`replicas`: leader or master, and the replicas online
or synchronised, parsed from `list_queues`), SIGKILLs one node and starts it again on its data
(waiting until every node lists the whole cluster as running). The clusters themselves are
started and stopped by the same helpers the tests use (tests/support: cluster.py and
rabbitmq.py), so nodes are on loopback ports in a temporary directory and only processes we
started are ever signalled.

`ForeignCpu` measures how much CPU the rest of the machine used over a span: the run's
numbers mean little when something else was busy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NODES = 3
REJOIN_TIMEOUT_S = 180.0


@dataclass
class Replicas:
    """Where a queue lives, by node name: its leader (master) and the replicas that are
    online (quorum) or synchronised (mirrored), leader included."""

    leader: str
    members: list[str]
    in_sync: list[str]


class Side(ABC):
    """One broker's 3-node cluster: addresses, the CLI, and killing and restarting a node."""

    broker = ""
    # CPU seconds of killed processes that this process will never reap (see `ForeignCpu`)
    killed_cpu_s = 0.0

    @abstractmethod
    def size(self) -> int:
        ...

    @abstractmethod
    def uri(self, i: int) -> str:
        ...

    @abstractmethod
    def name(self, i: int) -> str:
        ...

    @abstractmethod
    def ctl(self, i: int, *args: str) -> subprocess.CompletedProcess:
        ...

    @abstractmethod
    def replicas(self, queue: str, via: int) -> Replicas | None:
        ...

    @abstractmethod
    def kill(self, i: int) -> None:
        """SIGKILL node i (and only it)."""
        ...

    @abstractmethod
    def restart(self, i: int) -> None:
        """Start a killed node again on its data and wait until the cluster is whole."""
        ...

    @abstractmethod
    def stop(self) -> None:
        ...

    def index(self, name: str) -> int:
        for i in range(self.size()):
            if self.name(i) == name:
                return i
        raise LookupError(f"{name!r} is not a node of this cluster")

    def ctl_ok(self, i: int, *args: str) -> str:
        r = self.ctl(i, *args)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} exited {r.returncode}: "
                               f"{(r.stderr or r.stdout).strip()[:300]}")
        return r.stdout


def _uri(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/"


def _table_rows(text: str) -> list[dict[str, str]]:
    """The rows of a CLI's tab-separated table, keyed by its header line (`name\\t...`)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("name\t")), None)
    if start is None:
        return []
    header = lines[start].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False))
            for line in lines[start + 1:] if line.strip()]


def _names(cell: str) -> list[str]:
    """`[a, b]` or `a` as a list of node names."""
    cell = cell.strip()
    if cell.startswith("[") and cell.endswith("]"):
        cell = cell[1:-1]
    return [part.strip() for part in cell.split(",") if part.strip()]


def _pid_node(pid: str) -> str:
    """The node of an Erlang pid as rabbitmqctl prints it: `<NAME@HOST.N.N.N>`."""
    return pid.strip().strip("<>").rsplit(".", 3)[0]


class WarrenSide(Side):
    broker = "WarrenMQ"

    def __init__(self, workdir: Path) -> None:
        from tests.support.cluster import start_cluster

        self.nodes = start_cluster(workdir, NODES, "join")

    def size(self) -> int:
        return len(self.nodes)

    def uri(self, i: int) -> str:
        return _uri(self.nodes[i].port)

    def name(self, i: int) -> str:
        return self.nodes[i].name

    def index(self, name: str) -> int:
        from tests.support.cluster import identity

        for i, node in enumerate(self.nodes):
            if identity(node.name) == identity(name):
                return i
        raise LookupError(f"{name!r} is not a node of this cluster")

    def ctl(self, i: int, *args: str) -> subprocess.CompletedProcess:
        return self.nodes[i].ctl(*args, timeout_s=60.0)

    def replicas(self, queue: str, via: int) -> Replicas | None:
        out = self.ctl_ok(via, "list_queues", "--formatter", "json", "name", "leader",
                          "members", "online")
        for row in json.loads(out):
            if row.get("name") == queue:
                return Replicas(row.get("leader") or "", list(row.get("members") or []),
                                list(row.get("online") or []))
        return None

    def kill(self, i: int) -> None:
        proc = self.nodes[i].proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def restart(self, i: int) -> None:
        from tests.support.cluster import wait_cluster
        from tests.support.node import launch

        launch(self.nodes[i], 60.0)
        wait_cluster(self.nodes, timeout_s=REJOIN_TIMEOUT_S)

    def stop(self) -> None:
        from tests.support.cluster import stop_cluster

        stop_cluster(self.nodes)


class RabbitSide(Side):
    broker = "RabbitMQ"

    def __init__(self, workdir: Path) -> None:
        from tests.support.rabbitmq import start_rabbitmq_cluster

        self.cluster = start_rabbitmq_cluster(workdir, NODES)

    def size(self) -> int:
        return len(self.cluster)

    def uri(self, i: int) -> str:
        return _uri(self.cluster[i].port)

    def name(self, i: int) -> str:
        return self.cluster[i].nodename

    def ctl(self, i: int, *args: str) -> subprocess.CompletedProcess:
        return self.cluster.ctl(self.cluster[i], *args, timeout_s=60.0)

    def replicas(self, queue: str, via: int) -> Replicas | None:
        out = self.ctl_ok(via, "list_queues", "name", "type", "pid", "slave_pids",
                          "synchronised_slave_pids", "leader", "members", "online")
        for row in _table_rows(out):
            if row.get("name") != queue:
                continue
            if row.get("type") == "quorum":
                return Replicas(row.get("leader", ""), _names(row.get("members", "")),
                                _names(row.get("online", "")))
            master = _pid_node(row.get("pid", "")) if row.get("pid") else ""
            mirrors = [_pid_node(p) for p in _names(row.get("slave_pids", ""))]
            synced = [_pid_node(p) for p in _names(row.get("synchronised_slave_pids", ""))]
            return Replicas(master, [master, *mirrors], [master, *synced])
        return None

    def kill(self, i: int) -> None:
        node = self.cluster[i]
        assert node.proc is not None
        # beam.smp is the script's child: killed together, it is reaped by init, and its CPU
        # would leave our accounts and look like another process's
        self.killed_cpu_s += _group_cpu_s(node.proc.pid)
        os.killpg(node.proc.pid, signal.SIGKILL)  # beam.smp and the script that started it
        node.proc.wait(30)
        node.stop()  # sweeps what else carried the node's marker (port programs)

    def restart(self, i: int) -> None:
        # the helpers that started the node start it again: same name, HOME (cookie), epmd
        # and data; its AMQP and distribution ports are new
        from tests.support.rabbitmq import (
            _spawn_rabbit,
            _wait_serving,
            rabbitmq_cluster_status,
        )

        old = self.cluster[i]
        assert old.data_dir is not None and old.home is not None
        node = _spawn_rabbit(old.data_dir, old.nodename.split("@")[0], old.home,
                             old.epmd_port, old.marker, False)
        node.ctl_marker = self.cluster.marker
        self.cluster[i] = node
        _wait_serving(node, REJOIN_TIMEOUT_S)
        names = sorted(n.nodename for n in self.cluster)
        deadline = time.monotonic() + REJOIN_TIMEOUT_S
        for n in self.cluster:
            while sorted(rabbitmq_cluster_status(n).get("running_nodes", [])) != names:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{n.nodename} does not list {names} as running")
                time.sleep(0.25)

    def stop(self) -> None:
        self.cluster.stop()


def _processes() -> Iterator[tuple[int, int, int, int]]:
    """(pid, parent pid, process group, CPU ticks: utime stime cutime cstime) of every
    process there is."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        yield (int(entry), int(fields[1]), int(fields[2]),
               sum(int(x) for x in fields[11:15]))


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the processes of group `pgid` (and the children they
    reaped)."""
    return sum(t for _, _, group, t in _processes() if group == pgid) / ForeignCpu.HZ


def start_side(broker: str, workdir: Path) -> Side:
    return RabbitSide(workdir) if broker == "RabbitMQ" else WarrenSide(workdir)




class ForeignCpu:
    """CPU time used on the machine by processes outside this run (this process and its
    descendants: brokers, workers, CLIs), and time stolen by the hypervisor, over a span.

    The load average cannot say this: it counts the run's own brokers and clients. Machine
    busy time comes from /proc/stat; ours is this process (all threads), the children it
    reaped (os.times) and every live descendant including what it reaped (cutime/cstime),
    so a process that ends within the span is still counted once, through its parent; and
    what the side's SIGKILLed nodes had used, which nobody of ours reaps."""

    HZ = os.sysconf("SC_CLK_TCK")

    def __init__(self, side: Side | None = None) -> None:
        self.side = side  # whose killed processes count as ours (`Side.killed_cpu_s`)
        self.started = time.monotonic()
        self.busy0, self.steal0 = self._machine()
        self.ours0 = self._ours() + self._killed()

    def _killed(self) -> float:
        return self.side.killed_cpu_s if self.side is not None else 0.0

    @staticmethod
    def _machine() -> tuple[float, float]:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        return ((user + nice + system + irq + softirq) / ForeignCpu.HZ,
                steal / ForeignCpu.HZ)

    @staticmethod
    def _ours() -> float:
        parent: dict[int, int] = {}
        ticks: dict[int, int] = {}
        for pid, ppid, _, t in _processes():
            parent[pid] = ppid
            ticks[pid] = t
        me = os.getpid()
        total = 0
        for pid in ticks:
            up = parent.get(pid, 0)
            while up > 1 and up != me:
                up = parent.get(up, 0)
            if up == me:
                total += ticks[pid]
        t = os.times()
        return total / ForeignCpu.HZ + t.user + t.system + t.children_user + t.children_system

    def result(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        busy, steal = self._machine()
        foreign = (busy - self.busy0) - (self._ours() + self._killed() - self.ours0)
        return {"minutes": elapsed / 60,
                "foreign_cpu_pct": max(0.0, 100.0 * foreign / elapsed),
                "steal_pct": 100.0 * (steal - self.steal0) / elapsed}


