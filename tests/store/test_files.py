"""atomic_write: the new content appears whole, the temporary file never stays behind."""

from __future__ import annotations

import os

import pytest

from warrenmq.store import atomic_write, fsync_directory


def test_atomic_write_creates_then_replaces_a_file(tmp_path):
    target = tmp_path / "meta.snapshot"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write(target, memoryview(b"second, longer content"))
    assert target.read_bytes() == b"second, longer content"
    assert os.listdir(tmp_path) == ["meta.snapshot"]


def test_atomic_write_of_a_large_buffer_writes_every_byte(tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 3)
    atomic_write(tmp_path / "big", bytearray(data))
    assert (tmp_path / "big").read_bytes() == data


def test_atomic_write_into_a_missing_directory_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "file", b"x")
    assert os.listdir(tmp_path) == []


def test_a_failed_rename_removes_the_temporary_file_and_keeps_the_target(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # a directory cannot be replaced by a file
    (target / "inside").write_bytes(b"keep")
    with pytest.raises(IsADirectoryError):
        atomic_write(target, b"x")
    assert sorted(os.listdir(tmp_path)) == ["taken"]
    assert (target / "inside").read_bytes() == b"keep"


def test_fsync_directory_rejects_a_file(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_directory(tmp_path / "f")
