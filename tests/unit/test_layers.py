"""The package layering of docs/architecture.md, enforced: the pure cores import no I/O
framework and nothing above them; the protocol codec and Raft stand alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "warrenmq"

PURE = ("amqp", "core", "meta", "queues", "raft")
SHELLS = ("server", "mgmt", "cli", "embedded", "testing", "perf")
IO_MODULES = {"asyncio", "socket", "selectors", "threading", "subprocess", "aiohttp", "uvloop"}


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by a file (relative imports resolved)."""
    package = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join((*base, node.module)) if node.module else ".".join(base)
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PURE)
def test_pure_cores_do_no_io_and_import_no_shell(package):
    for path in _files(package):
        imported = _imports(path)
        io = {m for m in imported if m.split(".")[0] in IO_MODULES}
        assert not io, f"{path.relative_to(ROOT)} imports {sorted(io)}"
        up = {m for m in imported if m.startswith("warrenmq.") and m.split(".")[1] in SHELLS}
        assert not up, f"{path.relative_to(ROOT)} imports the shell: {sorted(up)}"


@pytest.mark.parametrize("package", ["amqp", "raft"])
def test_codec_and_raft_stand_alone(package):
    for path in _files(package):
        others = {m for m in _imports(path)
                  if m.startswith("warrenmq.") and m.split(".")[1] != package}
        assert not others, f"{path.relative_to(ROOT)} imports {sorted(others)}"


def test_store_imports_no_shell():
    for path in _files("store"):
        up = {m for m in _imports(path) if m.startswith("warrenmq.")
              and m.split(".")[1] in SHELLS}
        assert not up, f"{path.relative_to(ROOT)} imports the shell: {sorted(up)}"
