"""The management API on a real node: authentication and tags, API changes being the same
as AMQP ones (a declared queue is a real queue, a publish is routed and confirmed), paging
over many queues, and rates that follow the traffic."""

from __future__ import annotations

import pika

from tests.support.node import wait_for

from .http import Api, q


def test_no_credentials_is_401_with_a_challenge(api: Api):
    r = api.as_user(None).get("/api/overview")
    assert r.status == 401
    assert r.body == {"error": "not_authorized", "reason": "Not_Authorized"}
    assert r.headers.get("WWW-Authenticate", "").startswith("Basic ")


def test_a_wrong_password_is_401(api: Api):
    r = api.as_user("guest", "nope").get("/api/whoami")
    assert r.status == 401 and r.body["reason"] == "Login failed"


def test_a_management_user_cannot_create_users_403(api: Api):
    api.ok("PUT", "/api/users/only-mgmt", {"password": "pw", "tags": "management"})
    mgr = api.as_user("only-mgmt", "pw")
    assert mgr.ok("GET", "/api/whoami") == {"name": "only-mgmt", "tags": ["management"]}
    r = mgr.put("/api/users/intruder", {"password": "x", "tags": "administrator"})
    assert r.status == 403
    assert r.body == {"error": "not_authorised", "reason": "Not administrator user"}
    assert api.get("/api/users/intruder").status == 404
    # and without permissions on '/', its queues stay out of sight
    assert mgr.get("/api/queues/%2F").status == 403
    assert mgr.ok("GET", "/api/queues") == []


def test_a_user_without_management_tags_cannot_log_in(api: Api):
    api.ok("PUT", "/api/users/plain", {"password": "pw", "tags": ""})
    r = api.as_user("plain", "pw").get("/api/overview")
    assert r.status == 401 and r.body["reason"] == "Not management user"


def test_api_queue_is_a_real_queue_and_publish_routes_with_confirms(api: Api, mgmt_node):
    api.ok("PUT", "/api/queues/%2F/api-real", {"durable": True,
                                                "arguments": {"x-max-length": 5}})
    conn = pika.BlockingConnection(pika.URLParameters(mgmt_node.url()))
    ch = conn.channel()
    # the AMQP redeclare sees the API's declaration, arguments and all
    ch.queue_declare("api-real", durable=True, arguments={"x-max-length": 5})
    api.ok("POST", "/api/bindings/%2F/e/amq.direct/q/api-real", {"routing_key": "rk"})
    r = api.ok("POST", "/api/exchanges/%2F/amq.direct/publish",
               {"properties": {"delivery_mode": 2, "headers": {"k": "v"},
                               "content_type": "text/plain"},
                "routing_key": "rk", "payload": "via http", "payload_encoding": "string"})
    assert r == {"routed": True}
    assert api.ok("POST", "/api/exchanges/%2F/amq.direct/publish",
                  {"properties": {}, "routing_key": "nowhere", "payload": "x",
                   "payload_encoding": "string"}) == {"routed": False}
    method, props, body = ch.basic_get("api-real", auto_ack=True)
    assert body == b"via http" and method.routing_key == "rk"
    assert props.delivery_mode == 2 and props.headers == {"k": "v"}
    assert props.content_type == "text/plain"
    # an inequivalent redeclare through the API is refused as AMQP refuses it
    r = api.put("/api/queues/%2F/api-real", {"durable": False})
    assert r.status == 400 and "inequivalent arg 'durable'" in r.body["reason"]
    conn.close()


def test_paging_sorting_filtering_and_columns(api: Api):
    for i in range(30):
        api.ok("PUT", f"/api/queues/%2F/page-{i:02d}", {"durable": False})
    for _ in range(3):
        api.ok("POST", "/api/exchanges/%2F/amq.default/publish",
               {"properties": {}, "routing_key": "page-07", "payload": "m",
                "payload_encoding": "string"})
    page = api.ok("GET", "/api/queues?page=2&page_size=10&name=page-&sort=name")
    assert page["filtered_count"] == 30 and page["page_count"] == 3
    assert [q["name"] for q in page["items"]] == [f"page-{i:02d}" for i in range(10, 20)]
    top = api.ok("GET", "/api/queues?page=1&page_size=1&name=%5Epage-&use_regex=true"
                        "&sort=messages&sort_reverse=true&columns=name,messages")
    assert top["items"] == [{"name": "page-07", "messages": 3}]
    bad = api.get("/api/queues?page=9&page_size=10&name=page-")
    assert bad.status == 400


def test_rates_follow_a_publisher(api: Api, mgmt_node):
    conn = pika.BlockingConnection(pika.URLParameters(mgmt_node.url()))
    ch = conn.channel()
    ch.queue_declare("rated")

    def rate() -> float:
        for _ in range(200):
            ch.basic_publish("", "rated", b"r")
        o = api.ok("GET", "/api/overview")
        q = api.ok("GET", "/api/queues/%2F/rated")
        return o["message_stats"]["publish_details"]["rate"] > 0 and \
            q["message_stats"]["publish_details"]["rate"] > 0

    wait_for(rate, 15, 0.2, what="publish rates to show")
    conn.close()


def test_closing_a_connection_through_the_api(api: Api, mgmt_node):
    before = {c["name"] for c in api.ok("GET", "/api/connections")}
    conn = pika.BlockingConnection(pika.URLParameters(mgmt_node.url()))
    new = wait_for(lambda: {c["name"] for c in api.ok("GET", "/api/connections")} - before,
                   10, what="the connection to be listed")
    (name,) = new
    assert api.delete(f"/api/connections/{q(name)}",
                      headers={"X-Reason": "maintenance"}).status == 204

    def closed() -> bool:
        try:
            conn.process_data_events(0.05)
        except pika.exceptions.ConnectionClosedByBroker as e:
            assert e.reply_code == 320 and "maintenance" in e.reply_text
            return True
        return False

    wait_for(closed, 10, what="the client to receive connection.close")
