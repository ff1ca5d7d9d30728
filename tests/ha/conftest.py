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
