"""The table that drops a command's second copy (warrenmq/queues/quorum/dedup.py)."""

from warrenmq.queues.quorum.dedup import MAX_ORIGINS, PRUNE_AT, Applied


def test_a_copy_applied_again_is_dropped_and_others_pass():
    t = Applied()
    assert t.first("n1", 1, 1)
    assert t.first("n1", 2, 1)
    assert not t.first("n1", 1, 1)  # the copy of ref 1, proposed again to a new leader
    assert not t.first("n1", 2, 2)
    assert t.first("n2", 1, 1)  # another origin's refs are its own


def test_refs_below_low_are_dropped_and_the_table_stays_small():
    t = Applied()
    for ref in range(1, 1001):
        assert t.first("n1", ref, ref)  # nothing outstanding below each one
    # only the refs at or above the last low are kept
    assert t.snapshot() == [["n1", 1000, [1000]]]
    assert not t.first("n1", 10, 10)  # a very late copy
    for ref in range(1001, 10_001):
        assert t.first("n1", ref, ref)
    # pruned in bulk, so memory stays bounded however many commands went through
    assert len(t._origins["n1"][1]) <= PRUNE_AT + 1
    assert t.snapshot() == [["n1", 10_000, [10_000]]]


def test_out_of_order_copies_of_waiting_refs_still_apply_once():
    t = Applied()
    # refs 1..3 outstanding together; 2 and 3 commit first, then 1 arrives
    assert t.first("n1", 2, 1)
    assert t.first("n1", 3, 1)
    assert t.first("n1", 1, 1)
    assert not t.first("n1", 3, 1)
    assert t.first("n1", 4, 4)
    assert not t.first("n1", 2, 4)


def test_entries_from_before_the_table_always_apply():
    t = Applied()
    assert t.first("n1", 1, None)
    assert t.first("n1", 1, None)


def test_snapshot_round_trip_keeps_the_decisions():
    t = Applied()
    t.first("n1", 5, 3)
    t.first("n1", 7, 3)
    u = Applied.from_snapshot(t.snapshot())
    assert not u.first("n1", 5, 3)
    assert not u.first("n1", 2, 3)
    assert u.first("n1", 6, 3)


def test_oldest_origins_are_forgotten_past_the_bound():
    t = Applied()
    for i in range(MAX_ORIGINS + 1):
        t.first(f"n{i}", 1, 1)
    origins = [row[0] for row in t.snapshot()]
    assert len(origins) == MAX_ORIGINS and "n0" not in origins
