"""The pytest plugin, run in inner pytest sessions (pytester): the fixtures, their scopes and
clean-up, and the options for an external broker."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from warrenmq.embedded import Broker

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
"""

TWO_TESTS = """
import json
import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

seen = {}


def test_one(warren_broker, warren_url, warren_vhost):
    seen["broker"], seen["vhost"] = warren_broker, warren_vhost.name
    assert warren_url == warren_broker.url
    assert warren_vhost.url == warren_broker.url_for(warren_vhost.name) == str(warren_vhost)
    assert warren_vhost.isolated
    with pika.BlockingConnection(pika.URLParameters(warren_vhost.url)) as connection:
        connection.channel().queue_declare("same-name")


def test_two(warren_broker, warren_vhost, pytestconfig):
    assert warren_broker is seen["broker"]  # one broker for the session
    assert warren_vhost.name != seen["vhost"]
    vhosts = [row[0] for row in warren_broker.call("list_vhosts")["rows"]]
    assert sorted(vhosts) == sorted(["/", warren_vhost.name])  # test_one's vhost is gone
    with pika.BlockingConnection(pika.URLParameters(warren_vhost.url)) as connection:
        with pytest.raises(ChannelClosedByBroker) as closed:
            connection.channel().queue_declare("same-name", passive=True)
    assert closed.value.reply_code == 404
    with open(pytestconfig.rootpath / "seen.json", "w") as f:
        json.dump({"data_dir": str(warren_broker.data_dir), "mode": warren_broker.mode}, f)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    return pytester


def threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("warrenmq ")]


def test_one_broker_per_session_and_a_fresh_vhost_per_test(inner):
    before = threads()
    inner.makepyfile(TWO_TESTS)
    inner.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
    seen = json.loads((inner.path / "seen.json").read_text())
    assert seen["mode"] == "thread"
    assert not Path(seen["data_dir"]).exists()  # the session's broker was stopped
    assert threads() == before


def test_process_mode_option(inner):
    inner.makepyfile(TWO_TESTS)
    result = inner.runpytest("-p", "no:cacheprovider", "--warren-mode", "process")
    result.assert_outcomes(passed=2)
    seen = json.loads((inner.path / "seen.json").read_text())
    assert seen["mode"] == "process"
    assert not Path(seen["data_dir"]).exists()


def test_no_broker_starts_unless_a_fixture_asks(inner):
    inner.makepyfile("""
        import threading

        def test_plain():
            assert not [t for t in threading.enumerate() if t.name.startswith("warrenmq ")]
    """)
    inner.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.parametrize("args, message", [
    (["--warren-external", "http://localhost/"], "--warren-external: expected an amqp:// URL"),
    (["--warren-external", "amqps://localhost/"], "amqps is not supported"),
    (["--warren-external", "amqp://localhost/", "--warren-external-mgmt", "ftp://x/"],
     "--warren-external: expected an http(s):// management URL"),
    (["--warren-external-mgmt", "http://localhost:15672/"],
     "--warren-external-mgmt needs --warren-external"),
    (["--warren-mode", "docker"], "invalid choice: 'docker'"),
])
def test_bad_options_are_usage_errors(inner, args, message):
    inner.makepyfile("def test_x(): pass")
    result = inner.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_external_broker_without_management_api(inner):
    """WarrenMQ without its management plugin stands in for a RabbitMQ without one."""
    inner.makepyfile("""
        import pika

        def test_url(warren_url, warren_broker):
            assert warren_url == warren_broker.url
            with pika.BlockingConnection(pika.URLParameters(warren_url)):
                pass

        def test_vhost(warren_vhost):
            pass
    """)
    with Broker() as external:
        mgmt = f"http://127.0.0.1:{closed_port()}/"
        args = ["-p", "no:cacheprovider", "--warren-external", external.url,
                "--warren-external-mgmt", mgmt]
        result = inner.runpytest(*args)
        result.assert_outcomes(passed=1, errors=1)
        assert f"fixtures use the external broker at 127.0.0.1:{external.port}" in \
            result.stdout.str()
        result.stdout.fnmatch_lines([
            "*warren_vhost needs to create a vhost on the external broker, which AMQP cannot "
            f"do: no management API at {mgmt.rstrip('/')}*--warren-shared-vhost*"])

        inner.makepyfile(test_shared="""
            def test_shared(warren_vhost, warren_broker):
                assert warren_vhost.name == "/" and not warren_vhost.isolated
                assert warren_vhost.url == warren_broker.url
                assert warren_vhost.unique("q") != warren_vhost.unique("q")
        """)
        inner.runpytest(*args, "--warren-shared-vhost", "test_shared.py").assert_outcomes(
            passed=1)
        assert [r[0] for r in external.call("list_vhosts")["rows"]] == ["/"]


EXTERNAL_TWO_TESTS = """
import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

seen = {}


def test_one(warren_vhost):
    seen["vhost"] = warren_vhost.name
    assert warren_vhost.isolated
    with pika.BlockingConnection(pika.URLParameters(warren_vhost.url)) as connection:
        connection.channel().queue_declare("same-name")


def test_two(warren_broker, warren_vhost):
    names = [v["name"] for v in warren_broker.mgmt.request("GET", "/api/vhosts")]
    assert sorted(names) == sorted(["/", warren_vhost.name])  # test_one's vhost is gone
    with pika.BlockingConnection(pika.URLParameters(warren_vhost.url)) as connection:
        with pytest.raises(ChannelClosedByBroker) as closed:
            connection.channel().queue_declare("same-name", passive=True)
    assert closed.value.reply_code == 404
"""


def test_external_broker_from_the_environment_with_management_api(inner, monkeypatch):
    """The management path (PUT/DELETE /api/vhosts, PUT /api/permissions) against WarrenMQ's
    own RabbitMQ-compatible management API; RabbitMQ's is exercised in test_external.py."""
    with Broker(management=True) as external:
        if external.mgmt_url is None:
            pytest.skip("this node has no management plugin")
        monkeypatch.setenv("WARREN_EXTERNAL_URL", external.url)
        monkeypatch.setenv("WARREN_EXTERNAL_MGMT_URL", external.mgmt_url)
        inner.makepyfile(EXTERNAL_TWO_TESTS)
        inner.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
        assert [r[0] for r in external.call("list_vhosts")["rows"]] == ["/"]


def test_the_readme_example_runs(inner):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Testing your code against WarrenMQ", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    inner.makepyfile(test_readme=example)
    inner.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
