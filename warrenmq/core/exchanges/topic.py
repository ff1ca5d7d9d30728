"""topic: binding keys are dot-separated words where `*` matches one word and `#` zero or more.

Bindings live in a trie of words; routing results are cached per routing key until the
bindings change (topic routing keys repeat a lot in practice).
"""

from __future__ import annotations

from .base import Binding, Dest, ExchangeType

_CACHE_MAX = 4096


class _Node:
    __slots__ = ("children", "dests")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.dests: dict[Dest, int] = {}


class TopicExchange(ExchangeType):
    def __init__(self) -> None:
        super().__init__()
        self.root = _Node()
        self.cache: dict[str, tuple[Dest, ...]] = {}

    def _added(self, binding: Binding) -> None:
        node = self.root
        for word in _words(binding.routing_key):
            node = node.children.setdefault(word, _Node())
        node.dests[binding.dest] = node.dests.get(binding.dest, 0) + 1
        self.cache.clear()

    def _removed(self, binding: Binding) -> None:
        path = [self.root]
        words = _words(binding.routing_key)
        for word in words:
            path.append(path[-1].children[word])
        node = path[-1]
        if node.dests[binding.dest] == 1:
            del node.dests[binding.dest]
        else:
            node.dests[binding.dest] -= 1
        for i in range(len(words), 0, -1):  # prune empty branches
            child = path[i]
            if child.dests or child.children:
                break
            del path[i - 1].children[words[i - 1]]
        self.cache.clear()

    def route(self, routing_key, headers):
        hit = self.cache.get(routing_key)
        if hit is None:
            found: set[Dest] = set()
            _match(self.root, _words(routing_key), 0, found)
            hit = tuple(found)
            if len(self.cache) >= _CACHE_MAX:
                self.cache.clear()
            self.cache[routing_key] = hit
        return hit


def _words(key: str) -> list[str]:
    # As in RabbitMQ, the empty key has no words at all (not one empty word): '*' does not
    # match it, '#' and '' do.
    return key.split(".") if key else []


def _match(node: _Node, words: list[str], i: int, found: set[Dest]) -> None:
    children = node.children
    hash_node = children.get("#")
    if hash_node is not None:
        # '#' consumes zero or more words
        for j in range(i, len(words) + 1):
            _match(hash_node, words, j, found)
    if i == len(words):
        found.update(node.dests)
        return
    word = words[i]
    child = children.get(word)
    if child is not None:
        _match(child, words, i + 1, found)
    star = children.get("*")
    if star is not None:
        _match(star, words, i + 1, found)
