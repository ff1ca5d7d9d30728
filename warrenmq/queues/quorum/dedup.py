"""Dropping the second apply of a command proposed twice.

A replica proposes a command, names it (origin, ref) and waits for its apply; when the
group's term changes before that, the leader it went to may have lost it, so the proposer
sends it again (`metalog.submit(..., idempotent=True)`). Both copies may then commit. This
table, part of the replicated state, lets every replica apply the first copy and skip the
second, deterministically.

Each entry also carries `low`, the proposer's lowest ref still waiting when it proposed:
every ref below it was applied already, or given up (its caller was refused), so a copy of
it arriving now is dropped too. Per origin the table keeps the highest `low` seen and the
refs applied at or above it, so it stays as small as the proposer's window of outstanding
commands. Origins are node incarnations; the oldest are forgotten past `MAX_ORIGINS` (a
copy from a node restarted that many times since cannot still be in flight).
"""

from __future__ import annotations

from typing import Any

MAX_ORIGINS = 64
PRUNE_AT = 1024  # applied refs kept per origin before those below `low` are dropped


class Applied:
    __slots__ = ("_origins",)

    def __init__(self) -> None:
        # origin -> [low, set of applied refs (those below low are dead weight), the set's
        # size that triggers the next pruning]; insertion order = first seen in the log
        self._origins: dict[str, list[Any]] = {}

    def first(self, origin: str, ref: int, low: int | None) -> bool:
        """Record the apply of (origin, ref); False if it was applied (or given up) before.
        `low` None: an entry from before this table, never a copy."""
        if low is None:
            return True
        seen = self._origins.get(origin)
        if seen is None:
            seen = self._origins[origin] = [low, set(), PRUNE_AT]
            if len(self._origins) > MAX_ORIGINS:
                del self._origins[next(iter(self._origins))]
        if ref < seen[0] or ref in seen[1]:
            return False
        refs = seen[1]
        if low > seen[0]:
            seen[0] = low
            # refs below `low` answer nothing any more (the first test refuses them): drop
            # them only once they pile up, not with a pass over the window per command
            if len(refs) > seen[2]:
                seen[1] = refs = {r for r in refs if r >= low}
                # a window wider than PRUNE_AT would otherwise be pruned on every command
                seen[2] = max(PRUNE_AT, 2 * len(refs))
        refs.add(ref)
        return True

    def snapshot(self) -> list[list[Any]]:
        return [[origin, low, sorted(r for r in refs if r >= low)]
                for origin, (low, refs, _) in self._origins.items()]

    @classmethod
    def from_snapshot(cls, data: list[list[Any]]) -> Applied:
        table = cls()
        for origin, low, refs in data:
            table._origins[origin] = [low, set(refs), max(PRUNE_AT, 2 * len(refs))]
        return table
