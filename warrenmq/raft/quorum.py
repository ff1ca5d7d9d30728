"""Majority arithmetic, apart from everything else so it can be read and tested alone.

`committed_index` is the paper's rule (5.3, 5.4.2) without the term condition: the highest
index N such that a majority of voters have match_index >= N. The caller adds the other
half of the rule (only an entry of the leader's current term is committed by counting).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(n: int) -> int:
    return n // 2 + 1


def committed_index(voters: Collection[int], match_index: Mapping[int, int]) -> int:
    """Highest index replicated on a majority of `voters` (0 for no voters)."""
    if not voters:
        return 0
    matched = sorted((match_index.get(v, 0) for v in voters), reverse=True)
    # The majority-th highest value is held by a majority (it and everyone above it).
    return matched[majority(len(voters)) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """Won once a majority granted, lost once a majority can no longer grant."""
    need = majority(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    missing = sum(1 for v in voters if v not in votes)
    if granted >= need:
        return VoteResult.WON
    if granted + missing >= need:
        return VoteResult.PENDING
    return VoteResult.LOST


def has_quorum(voters: Collection[int], active: Collection[int]) -> bool:
    return sum(1 for v in voters if v in active) >= majority(len(voters))
