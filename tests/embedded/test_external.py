"""The example suite (tests/embedded/suite), unchanged, against Debian's rabbitmq-server with
--warren-external: the same tests pass on RabbitMQ as on the embedded WarrenMQ, and every
vhost warren_vhost made through the management API is gone afterwards."""

from __future__ import annotations

import base64
import json
import urllib.request

import pytest

from tests.embedded.conftest import SUITE

pytestmark = pytest.mark.rabbitmq


def vhost_names(mgmt_url: str) -> list[str]:
    token = base64.b64encode(b"guest:guest").decode()
    req = urllib.request.Request(f"{mgmt_url}api/vhosts",
                                 headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return sorted(v["name"] for v in json.loads(resp.read()))


def suite_size() -> int:
    return sum(f.read_text().count("\ndef test_") + f.read_text().count("\nasync def test_")
               for f in SUITE.glob("test_*.py"))


def test_example_suite_passes_against_rabbitmq(pytester, rabbitmq_management):
    amqp_url, mgmt_url = rabbitmq_management
    result = pytester.runpytest_subprocess(
        str(SUITE), "-p", "no:cacheprovider", "--warren-external", amqp_url,
        "--warren-external-mgmt", mgmt_url, timeout=300)
    result.assert_outcomes(passed=suite_size())
    assert "fixtures use the external broker at 127.0.0.1:" in result.stdout.str()
    assert vhost_names(mgmt_url) == ["/"]
