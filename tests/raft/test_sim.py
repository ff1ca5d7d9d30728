"""The deterministic simulator in CI: many short seeded runs, each checking the safety
invariants after every event and liveness once faults stop (see sim.py).

A failure names its seed; replay it with `python -m tests.raft.sim --seed N --verbose`.
RAFT_SIM_SEEDS=START:END widens the range; RAFT_SIM_SOAK=N runs N long runs (not in CI).
"""

from __future__ import annotations

import os
import time

import pytest

from . import sim

CHUNKS = 16
SEEDS_PER_CHUNK = 100  # 1,600 runs in all, about 10 s on one core


def _range() -> range:
    spec = os.environ.get("RAFT_SIM_SEEDS")
    if spec:
        start, end = (int(x) for x in spec.split(":"))
        return range(start, end)
    return range(CHUNKS * SEEDS_PER_CHUNK)


def _chunks() -> list[range]:
    seeds = _range()
    size = max(1, len(seeds) // CHUNKS)
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


@pytest.mark.parametrize("seeds", _chunks(), ids=lambda r: f"seeds{r.start}-{r.stop - 1}")
def test_simulated_runs_keep_raft_safe_and_live(seeds: range) -> None:
    failures = []
    for seed in seeds:
        try:
            sim.run_seed(seed)
        except sim.Violation as e:
            failures.append(f"{e}\n  replay: python -m tests.raft.sim --seed {seed} --verbose")
    assert not failures, "\n".join(failures[:3])


def test_same_seed_same_run() -> None:
    a = sim.run_seed(4242)
    b = sim.run_seed(4242)
    assert a == b and a["events"] > 100


def test_runs_exercise_the_faults() -> None:
    totals: dict[str, int] = {}
    for seed in range(200):
        for k, v in sim.run_seed(seed).items():
            totals[k] = totals.get(k, 0) + v
    for what in ("crashes", "snapshots", "snapshot_msgs", "conf_changes", "timeout_now", "dropped"):
        assert totals[what] > 10, (what, totals)
    assert totals["elections"] > 400


def test_the_checker_catches_a_host_that_sends_before_its_fsync() -> None:
    """A deliberately broken host (messages leave before the Ready is durable, so a crash
    can forget a vote or an acknowledged entry) must be caught by the invariants."""
    caught = []
    for seed in range(300):
        try:
            sim.run_seed(seed, send_before_sync=True)
        except sim.Violation as e:
            caught.append(str(e))
            if len(caught) >= 2:
                break
    assert caught, "300 seeds of a broken host and no invariant noticed"


@pytest.mark.skipif(not os.environ.get("RAFT_SIM_SOAK"), reason="soak: set RAFT_SIM_SOAK=N")
def test_soak() -> None:
    n = int(os.environ["RAFT_SIM_SOAK"])
    t0 = time.monotonic()
    for seed in range(1_000_000, 1_000_000 + n):
        sim.run_seed(seed, long=True)
    print(f"{n} long runs in {time.monotonic() - t0:.0f}s")
