"""The interpreter for the Raft interaction scripts in testdata/*.txt (etcd's idea).

A script is a list of blocks separated by blank lines; each block is optional `#` comment
lines, one command, a `----` line and the output the command produced. `run_script`
executes the commands and returns the script with every output regenerated; the test
compares that with the file, and RAFT_REWRITE=1 writes it back instead of comparing, so
expected output is recorded, never typed by hand.

Commands (ids are node ids):
  add-nodes N [voters=(1 2 3)]       N new nodes; voters default to the new nodes
  campaign ID                        start an election (pre-vote first)
  propose ID DATA                    propose a command on ID
  propose-conf-change ID add|remove NODE
  transfer-leadership FROM TO
  tick ID [N] | tick-election ID | tick-heartbeat ID
  process-ready ID...                handle each node's Ready (persist, send, apply)
  deliver-msgs ID... [drop=(ID...)]  deliver the queued messages to the listed nodes, and
                                     discard those queued for the nodes in drop
  stabilize [ID...]                  Readys and messages until nothing moves
  partition 1 | 2 3 / heal           cut / restore links (messages across a cut are lost)
  compact ID                         snapshot at the applied index, then compact the log
  restart ID                         restart from what ID persisted
  status ID / raft-log ID            show state / show the stored log
"""

from __future__ import annotations

import re

from warrenmq.raft import ConfChangeOp, RaftError, Role

from .env import Env, fmt_entry

_LIST = re.compile(r"(\w+)=\(([^)]*)\)")


def _ids(text: str) -> list[int]:
    return [int(x) for x in re.split(r"[\s,]+", text.strip()) if x]


class Interpreter:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env = Env(out=self.lines.append)

    def run(self, command: str) -> list[str]:
        self.lines.clear()
        opts = {k: _ids(v) for k, v in _LIST.findall(command)}
        words = _LIST.sub("", command).split()
        name, args = words[0], words[1:]
        try:
            handler = getattr(self, "cmd_" + name.replace("-", "_"))
        except AttributeError:
            raise ValueError(f"unknown command {name!r}") from None
        try:
            handler(args, opts)
        except RaftError as e:
            self.lines.append(f"error: {type(e).__name__}: {e}")
        return list(self.lines) or ["ok"]

    def cmd_add_nodes(self, args: list[str], opts: dict[str, list[int]]) -> None:
        voters = frozenset(opts["voters"]) if "voters" in opts else None
        for i in self.env.add_nodes(int(args[0]), voters):
            self.lines.append(f"added node {i} voters={sorted(self.env.nodes[i].voters)}")

    def cmd_campaign(self, args: list[str], opts: dict[str, list[int]]) -> None:
        self.env.nodes[int(args[0])].campaign()

    def cmd_propose(self, args: list[str], opts: dict[str, list[int]]) -> None:
        index = self.env.nodes[int(args[0])].propose(args[1].encode())
        self.lines.append(f"proposed at index {index}")

    def cmd_propose_conf_change(self, args: list[str], opts: dict[str, list[int]]) -> None:
        op = ConfChangeOp[args[1].upper()]
        index = self.env.nodes[int(args[0])].propose_conf_change(op, int(args[2]))
        self.lines.append(f"proposed at index {index}")

    def cmd_transfer_leadership(self, args: list[str], opts: dict[str, list[int]]) -> None:
        self.env.nodes[int(args[0])].transfer_leadership(int(args[1]))

    def cmd_tick(self, args: list[str], opts: dict[str, list[int]]) -> None:
        self.env.tick(int(args[0]), int(args[1]) if len(args) > 1 else 1)

    def cmd_tick_election(self, args: list[str], opts: dict[str, list[int]]) -> None:
        self.env.tick_election(int(args[0]))

    def cmd_tick_heartbeat(self, args: list[str], opts: dict[str, list[int]]) -> None:
        node = self.env.nodes[int(args[0])]
        self.env.tick(node.id, node.config.heartbeat_tick)

    def cmd_process_ready(self, args: list[str], opts: dict[str, list[int]]) -> None:
        for i in _ids(" ".join(args)):
            self.env.handle_ready(i)

    def cmd_deliver_msgs(self, args: list[str], opts: dict[str, list[int]]) -> None:
        for i in opts.get("drop", []):
            self.env.deliver(i, drop=True)
        for i in _ids(" ".join(args)) if args else sorted(self.env.nodes):
            self.env.deliver(i)

    def cmd_stabilize(self, args: list[str], opts: dict[str, list[int]]) -> None:
        self.env.stabilize(_ids(" ".join(args)) or None)

    def cmd_partition(self, args: list[str], opts: dict[str, list[int]]) -> None:
        groups = [set(_ids(g)) for g in " ".join(args).split("|")]
        self.env.partition(*groups)

    def cmd_heal(self, args: list[str], opts: dict[str, list[int]]) -> None:
        self.env.heal()

    def cmd_compact(self, args: list[str], opts: dict[str, list[int]]) -> None:
        node = self.env.nodes[int(args[0])]
        st = self.env.storages[node.id]
        applied = node.applied_index
        st.create_snapshot(applied, node.voters, b"state@%d" % applied)
        st.compact(applied)
        self.lines.append(f"snapshot at {applied}, log now starts at {st.first_index()}")

    def cmd_restart(self, args: list[str], opts: dict[str, list[int]]) -> None:
        self.env.restart(int(args[0]))

    def cmd_status(self, args: list[str], opts: dict[str, list[int]]) -> None:
        n = self.env.nodes[int(args[0])]
        self.lines.append(
            f"{n.id} {n.role.value} term={n.term} vote={n.vote} lead={n.leader_id} "
            f"commit={n.commit_index} applied={n.applied_index} voters={sorted(n.voters)}"
        )
        if n.role is Role.LEADER:
            for v, pr in sorted(n.progress.items()):
                self.lines.append(f"  {v}: {pr}")

    def cmd_raft_log(self, args: list[str], opts: dict[str, list[int]]) -> None:
        st = self.env.storages[int(args[0])]
        ents = st.entries(st.first_index(), st.last_index() + 1, 1 << 30)
        if not ents:
            self.lines.append(f"log is empty: first index={st.first_index()}")
        for e in ents:
            self.lines.append(fmt_entry(e))


def run_script(text: str) -> str:
    interp = Interpreter()
    out: list[str] = []
    blocks = [b for b in re.split(r"\n\s*\n", text.strip("\n")) if b.strip()]
    for block in blocks:
        lines = block.split("\n")
        head: list[str] = []
        for line in lines:
            if line == "----":
                break
            head.append(line)
        commands = [h for h in head if h.strip() and not h.startswith("#")]
        if len(commands) != 1:
            raise ValueError(f"a block needs exactly one command, got {commands!r}")
        out.extend(head)
        out.append("----")
        out.extend(interp.run(commands[0]))
        out.append("")
    return "\n".join(out)
