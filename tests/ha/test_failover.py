"""The leader's node of replicated queues fails under load; nothing confirmed is lost.

For each seed and each fault (SIGKILL, SIGSTOP, a partition cutting the leader's node off)
a 3-node cluster serving a quorum queue and an `ha-all` mirrored queue loses the node that
leads them while publishers with confirms (pika, aio-pika) and consumers with manual acks
on the other nodes keep working (`tests/ha/scenario.py` says how a run goes). What must
hold:
- the survivors elect new leaders and every publisher is confirmed again, the one that was
  connected to the failed node after moving elsewhere and publishing again what was not
  confirmed;
- after the fault is healed every confirmed message has been received at least once, from
  its queue and intact; a message published once and delivered again is flagged
  redelivered;
- consumers on the surviving nodes keep their subscription (no reconnect);
- a partitioned leader confirms nothing published to it after the cut.
The time to failover (the fault to the first delivery of a message published after it) is
printed, never asserted. WARREN_HA_SEEDS=N runs seeds 1..N, WARREN_HA_SEED=S seed S alone;
a failure prints its seed and the command that replays it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ha.scenario import run_failover
from tests.ha.support import FAULTS, Say, seeds


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("dump_on_abort")
@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("fault", FAULTS)
def test_leader_failure_loses_no_confirmed_message(
        tmp_path: Path, request: pytest.FixtureRequest, fault: str, seed: int, say: Say) -> None:
    run_failover(tmp_path, request.node.nodeid, fault, seed, say)
