"""Runs every interaction script under testdata/ and compares its recorded output.

RAFT_REWRITE=1 python -m pytest tests/raft/test_interaction.py  re-records the outputs
(review the diff before keeping it)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from .interaction import run_script

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_interaction_script(script: Path) -> None:
    text = script.read_text()
    actual = run_script(text)
    if os.environ.get("RAFT_REWRITE") == "1":
        script.write_text(actual)
        return
    if actual != text:
        diff = "".join(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                "recorded",
                "actual",
            )
        )
        pytest.fail(f"{script.name} output changed (RAFT_REWRITE=1 re-records):\n{diff}")


def test_scripts_exist() -> None:
    assert len(SCRIPTS) >= 5
