"""Fixtures shared by the cluster transport tests."""

from __future__ import annotations

import pytest

from .support import Trio


@pytest.fixture
async def trio(tmp_path):
    """Three Raft hosts on real loopback links (see support.Trio), stopped after the test."""
    t = Trio(tmp_path)
    yield t
    await t.close()
