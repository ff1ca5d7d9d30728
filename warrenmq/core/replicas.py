"""Where a replicated queue's replicas go: RabbitMQ's ha-mode / ha-params, over the cluster.

`ha-mode: all` puts a replica on every node; `exactly` with `ha-params: N` on N nodes (the
current replicas kept first, so a change moves as little as it can); `nodes` with a list on
the listed nodes that are cluster members (the queue's home node when none is). The home node
(where the queue was declared, its first leader) always comes first. Pure: names in, names
out.
"""

from __future__ import annotations

from typing import Any


def ha_members(mode: Any, params: Any, home: str, current: list[str],
               cluster: list[str]) -> list[str]:
    """The replica set an ha-* policy asks for; [home] when there is no ha-mode."""
    mode = mode.decode() if isinstance(mode, bytes) else mode
    alive = [n for n in cluster]
    others = sorted(n for n in alive if n != home)
    base = [home] if home in alive or not current else [current[0]]
    if mode == "all":
        return base + [n for n in others if n not in base]
    if mode == "exactly":
        count = params if isinstance(params, int) and not isinstance(params, bool) else 1
        kept = [n for n in current if n in alive and n not in base]
        fill = [n for n in others if n not in kept and n not in base]
        return (base + kept + fill)[:max(1, count)]
    if mode == "nodes":
        wanted = [p.decode() if isinstance(p, bytes) else str(p) for p in (params or [])]
        chosen = [n for n in wanted if n in alive]
        return chosen or base
    return base


def policy_replicas(definition: dict, home: str, current: list[str],
                    cluster: list[str]) -> list[str] | None:
    """None when the policy asks for no replication (an ordinary classic queue)."""
    mode = definition.get("ha-mode")
    if mode is None:
        return None
    return ha_members(mode, definition.get("ha-params"), home, current, cluster)
