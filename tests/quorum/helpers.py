"""A quorum queue machine driven like Raft drives it: one command per log index, the
leader's clock in the metadata; and readers for the effects."""

from __future__ import annotations

from typing import Any

from warrenmq.queues.quorum import Command, Effect, Meta, QuorumMachine, Reply


class Log:
    def __init__(self, **config: Any) -> None:
        self.machine = QuorumMachine(config)
        self.index = 0
        self.now_ms = 1_000
        self.entries: list[tuple[Meta, Command]] = []

    def __call__(self, command: Command, at_ms: int | None = None) -> tuple[Reply, list[Effect]]:
        if at_ms is not None:
            self.now_ms = at_ms
        self.index += 1
        meta = Meta(self.index, self.now_ms)
        self.entries.append((meta, command))
        return self.machine.apply(meta, command)


def effects_of(effects: list[Effect], kind: str) -> list[Effect]:
    return [e for e in effects if e[0] == kind]


def delivered(effects: list[Effect]) -> dict[str, list[tuple[int, int, bool, int]]]:
    """consumer_id -> [(msg_id, raft_index, redelivered, delivery_count)]"""
    out: dict[str, list[tuple[int, int, bool, int]]] = {}
    for _, cid, batch in effects_of(effects, "deliver"):
        out.setdefault(cid, []).extend((m, ref.raft_index, r, n) for m, ref, r, n in batch)
    return out


def dead(effects: list[Effect]) -> dict[str, list[int]]:
    """reason -> Raft indexes dead-lettered"""
    out: dict[str, list[int]] = {}
    for _, reason, refs in effects_of(effects, "dead_letter"):
        out.setdefault(reason, []).extend(ref.raft_index for ref in refs)
    return out


def cursor(effects: list[Effect]) -> int | None:
    found = effects_of(effects, "release_cursor")
    return found[-1][1] if found else None
