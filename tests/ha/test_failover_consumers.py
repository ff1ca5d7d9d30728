"""A consumer on the node that led replicated queues when it failed: its messages go on.

The failover scenario of test_failover.py (`tests/ha/scenario.py`), with one more consumer
(manual acks) on the leader's node. When that node is SIGKILLed, what the consumer held
unacknowledged, and whatever the queue would assign it next, must reach the consumers on the
surviving nodes (flagged redelivered when it had been delivered). When the node is
SIGSTOPped its client gives up on the silent connection; the node, once continued, ends the
consumer itself and the same must hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ha.scenario import run_failover
from tests.ha.support import Say, seeds


# sigkill caught consumers of a dead leader's node never being downed (their messages stayed
# checked out to them for good); QuorumQueues._down_departed now downs them
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("dump_on_abort")
@pytest.mark.parametrize("fault", [
    "sigkill",
    # the stopped node, once continued, ends its consumer itself (the client has hung up)
    "sigstop",
])
def test_consumer_on_failed_leaders_node_gives_its_messages_back(
        tmp_path: Path, request: pytest.FixtureRequest, fault: str, say: Say) -> None:
    run_failover(tmp_path, request.node.nodeid, fault, seeds()[0], say, consumer_on_leader=True)
