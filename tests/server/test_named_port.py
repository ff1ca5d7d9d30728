"""A node name that carries a port (NAME@HOST:PORT) is where the node listens for peers and
warrenctl: the name's port is the cluster port, and a contradicting cluster port is refused."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.node import start_node
from warrenmq.config import ConfigError, load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("nodename, port", [
    ("a@127.0.0.1:40001", 40001),
    ("a@[::1]:40002", 40002),
    ("a@localhost:25672", 25672),
])
def test_the_port_in_the_name_becomes_the_cluster_port(nodename, port):
    assert load({"nodename": nodename}, environ={}).dist_port == port


@pytest.mark.parametrize("nodename", ["a@127.0.0.1", "a@[::1]", "a"])
def test_a_name_without_a_port_leaves_the_cluster_port_alone(nodename):
    assert load({"nodename": nodename}, environ={}).dist_port == 25672
    assert load({"nodename": nodename, "dist_port": 0}, environ={}).dist_port == 0


def test_the_same_port_given_both_ways_is_accepted(tmp_path: Path):
    conf = tmp_path / "warren.conf"
    conf.write_text("distribution.listener.port_range.min = 40003\n")
    cfg = load({"nodename": "a@127.0.0.1:40003", "config_file": str(conf)},
               environ={"WARREN_DIST_PORT": "40003"})
    assert cfg.dist_port == 40003


def test_a_contradicting_cluster_port_is_refused_whatever_its_source(tmp_path: Path):
    conf = tmp_path / "warren.conf"
    conf.write_text("distribution.listener.port_range.min = 40005\n")
    for overrides, environ in [
        ({"dist_port": 40005}, {}),
        ({"dist_port": 0}, {}),  # "any free port" cannot be the port the name promises
        ({}, {"WARREN_DIST_PORT": "40005"}),
        ({"config_file": str(conf)}, {}),
    ]:
        with pytest.raises(ConfigError) as e:
            load({"nodename": "a@127.0.0.1:40004", **overrides}, environ=environ)
        assert "says the cluster port is 40004" in str(e.value)
        assert "set to" in str(e.value)


def test_a_node_named_with_a_port_listens_there_and_answers_warrenctl(tmp_path: Path):
    port = _free_port()
    node = start_node(tmp_path, "named", nodename=f"named@127.0.0.1:{port}")
    try:
        assert node.ports["dist"] == port
        assert node.address == f"named@127.0.0.1:{port}"  # what warrenctl -n is given
        r = node.ctl("status", "--formatter", "json")
        assert r.returncode == 0, r.stderr
        assert f'"node_name": "named@127.0.0.1:{port}"' in r.stdout
    finally:
        node.stop()


def test_the_server_refuses_a_name_and_a_cluster_port_that_disagree(tmp_path: Path):
    named, other = _free_port(), _free_port()
    env = {**os.environ, "WARREN_COOKIE_FILE": str(tmp_path / "cookie")}
    r = subprocess.run([sys.executable, "-m", "warrenmq.cli.server", "--bind", "127.0.0.1",
                        "--nodename", f"n@127.0.0.1:{named}", "--dist-port", str(other),
                        "--node-port", "0", "--mgmt-port", "0",
                        "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2
    assert f"says the cluster port is {named}" in r.stderr
    assert f"set to {other}" in r.stderr
