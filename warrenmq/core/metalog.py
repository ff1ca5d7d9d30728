"""Where a node's metadata commands are ordered before they are applied.

`MetaLog.submit(node, origin, ref, command)` must eventually call
`node.committed(command, origin, ref)` on every node, in one order for all of them, or
`node.refused(ref, error)` on the proposing node. The shell's implementation is a Raft group
(server/metalog.py); `LocalMetaLog` applies at once, for the sans-IO tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .node import Node


class MetaLog(ABC):
    @abstractmethod
    def submit(self, node: Node, origin: str, ref: int, command: dict) -> None: ...


class LocalMetaLog(MetaLog):
    def submit(self, node: Node, origin: str, ref: int, command: dict) -> None:
        node.committed(command, origin, ref)
