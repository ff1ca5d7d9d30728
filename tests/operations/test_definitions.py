"""RabbitMQ's definitions JSON both ways: a file exported by RabbitMQ 3.10 (the fixture, made
with Debian's rabbitmq-server and rabbitmqctl) imports into WarrenMQ, and WarrenMQ's export
imports into a private RabbitMQ node, with passwords that still work on both."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pika
import pytest

from tests.support.rabbitmq import RabbitNode, rabbitmq  # noqa: F401  (the session fixture)

from .conftest import Ctl

FIXTURE = Path(__file__).parent.parent / "fixtures" / "rabbitmq-3.10-definitions.json"
RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")


def _comparable(doc: dict) -> dict:
    """The entities of a definitions document, order-free (what both brokers must agree on)."""
    def rows(section: str, drop: tuple[str, ...] = ()) -> list[str]:
        return sorted(json.dumps({k: v for k, v in e.items() if k not in drop}, sort_keys=True)
                      for e in doc.get(section, []))
    users = [json.dumps({"name": u["name"], "password_hash": u["password_hash"],
                         "tags": sorted(u["tags"] if isinstance(u["tags"], list) else
                                        [t for t in u["tags"].split(",") if t])},
                        sort_keys=True) for u in doc["users"]]
    return {"users": sorted(users), "vhosts": sorted(v["name"] for v in doc["vhosts"]),
            "permissions": rows("permissions"), "topic_permissions": rows("topic_permissions"),
            "policies": rows("policies"), "queues": rows("queues", ("type",)),
            "exchanges": rows("exchanges", ("internal",)), "bindings": rows("bindings")}


def test_rabbitmq_export_imports_into_warrenmq(op_node, ctl: Ctl):
    out = ctl.ok("import_definitions", str(FIXTURE))
    assert "Successfully imported definitions" in out
    assert "is of type" not in out  # every queue type of the export is served here
    assert "work\tquorum" in ctl.ok("-q", "--no-table-headers", "list_queues", "name", "type")
    assert ctl.ok("-q", "--no-table-headers", "list_vhosts").split() == \
        ["/", "dev/team", "qa", "staging"]
    # RabbitMQ's salted SHA-256 hashes carried over: the passwords work here
    ctl.ok("authenticate_user", "alice", "s3cret")
    ctl.ok("authenticate_user", "bob", "hunter2")
    conn = pika.BlockingConnection(pika.URLParameters(op_node.url(user="alice",
                                                                  password="s3cret")))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("orders", "eu.paris", b"routed by the imported binding")
    assert ch.basic_get("orders.eu", auto_ack=True)[2] == b"routed by the imported binding"
    conn.close()
    rows = ctl.ok("-q", "--no-table-headers", "list_queues", "name", "policy").splitlines()
    assert "orders.eu\tttl-orders" in rows and "work\tha-all" in rows
    assert "staging\tae\t^events$\texchanges\t" in ctl.ok("list_policies", "-p", "staging")
    # and the export gives back what was imported
    exported = json.loads(ctl.ok("export_definitions", "-"))
    fixture = json.loads(FIXTURE.read_text())
    mine, theirs = _comparable(exported), _comparable(fixture)
    guest = [u for u in mine["users"] if '"name": "guest"' in u]
    assert mine == {**theirs, "users": sorted([u for u in theirs["users"]
                                               if '"name": "guest"' not in u] + guest)}


def test_import_validates_everything_before_changing_anything(ctl: Ctl, tmp_path):
    doc = json.loads(FIXTURE.read_text())
    doc["policies"].append({"vhost": "/", "name": "bad", "pattern": "^x", "apply-to": "all",
                            "definition": {"ha-mode": "sometimes"}, "priority": 0})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    r = ctl("import_definitions", str(bad))
    assert r.returncode == 65
    assert "policies: policy 'bad' in vhost '/': \"sometimes\" is not a valid ha-mode" \
        in r.stderr
    assert ctl.ok("-q", "--no-table-headers", "list_vhosts").split() == ["/"]
    (tmp_path / "junk.json").write_text("{not json")
    r = ctl("import_definitions", str(tmp_path / "junk.json"))
    assert r.returncode == 65 and "is not valid JSON" in r.stderr
    r = ctl("import_definitions", str(tmp_path / "absent.json"))
    assert r.returncode == 66 and "cannot read" in r.stderr


def test_import_from_stdin_and_export_to_a_file(ctl: Ctl, tmp_path):
    doc = {"vhosts": [{"name": "piped"}],
           "users": [{"name": "plain", "password": "given-in-clear", "tags": "a,b"}],
           "permissions": [{"user": "plain", "vhost": "piped", "configure": ".*",
                            "write": ".*", "read": ".*"}]}
    ctl.ok("import_definitions", "-", stdin=json.dumps(doc))
    ctl.ok("authenticate_user", "plain", "given-in-clear")
    target = tmp_path / "out.json"
    ctl.ok("export_definitions", str(target))
    exported = json.loads(target.read_text())
    assert {"name": "piped", "limits": [], "metadata": {"description": "", "tags": []}} in \
        exported["vhosts"]
    plain = next(u for u in exported["users"] if u["name"] == "plain")
    assert plain["tags"] == ["a", "b"]
    assert plain["hashing_algorithm"] == "rabbit_password_hashing_sha256"


def _rabbitmqctl_env(node: RabbitNode) -> dict:
    """The private node's environment (HOME holds its Erlang cookie; its own epmd port),
    read from its launcher process, which is how rabbitmqctl finds that node."""
    raw = Path(f"/proc/{node.proc.pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    keep = ("HOME", "ERL_EPMD_PORT", "ERL_EPMD_ADDRESS", "PATH")
    return {**{k: v for k, v in env.items() if k in keep or k.startswith("RABBITMQ_")},
            "LANG": "C.UTF-8"}


@pytest.mark.rabbitmq
def test_warrenmq_export_imports_into_rabbitmq(op_node, ctl: Ctl, rabbitmq, tmp_path):  # noqa: F811
    if not isinstance(rabbitmq, RabbitNode) or rabbitmq.proc is None:
        pytest.skip("needs a private RabbitMQ node (not WARREN_TEST_RABBITMQ_URL) for "
                    "rabbitmqctl import_definitions")
    if not RABBITMQCTL.exists():
        pytest.skip(f"{RABBITMQCTL} is not installed")
    ctl.ok("import_definitions", str(FIXTURE))
    ctl.ok("add_user", "made-here", "warren-pw")
    ctl.ok("set_user_tags", "made-here", "policymaker")
    ctl.ok("set_permissions", "-p", "staging", "made-here", "^mh-", "^mh-", ".*")
    ctl.ok("set_policy", "-p", "staging", "--priority", "3", "--apply-to", "queues", "mh",
           "^mh-", '{"max-length-bytes":1048576,"overflow":"reject-publish"}')
    exported = tmp_path / "warren.json"
    ctl.ok("export_definitions", str(exported))

    env = _rabbitmqctl_env(rabbitmq)
    node = ["-n", env["RABBITMQ_NODENAME"]]

    def rabbitmqctl(*args: str) -> str:
        r = subprocess.run([str(RABBITMQCTL), *node, *args], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 0, f"rabbitmqctl {args}: {r.stdout}{r.stderr}"
        return r.stdout

    rabbitmqctl("import_definitions", str(exported))
    back = tmp_path / "rabbit.json"
    rabbitmqctl("export_definitions", str(back))
    theirs = _comparable(json.loads(back.read_text()))
    mine = _comparable(json.loads(exported.read_text()))
    for section in ("vhosts", "permissions", "topic_permissions", "policies", "exchanges",
                    "bindings"):
        assert set(mine[section]) <= set(theirs[section]), section
    # queue types may differ (RabbitMQ serves 'work' as the quorum queue it was declared as)
    assert set(mine["queues"]) <= set(theirs["queues"])
    assert set(mine["users"]) - {u for u in mine["users"] if '"guest"' in u} <= \
        set(theirs["users"])
    # the password set through warrenctl works on RabbitMQ: the hash format is the same
    assert "Success" in rabbitmqctl("authenticate_user", "made-here", "warren-pw")
    assert os.environ.get("WARREN_COOKIE_FILE")  # our node used its own cookie
