"""Fixtures of the replicated-queue fault tests."""

from __future__ import annotations

import pytest

from tests.ha.support import Say


@pytest.fixture
def say(capsys: pytest.CaptureFixture[str]) -> Say:
    """Print past pytest's capture: what a run measured (failover times, message counts) is
    worth seeing on every run, not only on a failure."""
    def emit(text: str) -> None:
        with capsys.disabled():
            print(f"\n{text}", flush=True)
    return emit


@pytest.fixture
def dump_on_abort(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes started by the test dump their threads' stacks to their log on SIGABRT, which
    is what `stop_all` sends a node that does not stop."""
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")
