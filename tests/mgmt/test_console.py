"""The web console in headless Chromium (Debian's chromium driven by Playwright): log in,
watch the overview chart move while a publisher runs, create a queue, publish and get a
message, add a user, import definitions, and page through 10,000 queues. Screenshots of the
main pages go to test-artifacts/console/ (kept by CI as artifacts)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from tests.support.node import wait_for

from .http import Api
from .http import q as seg

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
RABBITMQ_DEFINITIONS = Path(__file__).resolve().parents[1] / "fixtures" / \
    "rabbitmq-3.10-definitions.json"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
TIMEOUT_MS = 20_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(pip install playwright; the browser is Debian's chromium)")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def base(mgmt_node) -> str:
    return f"http://127.0.0.1:{mgmt_node.ports['mgmt']}/"


@pytest.fixture
def page(browser, base):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(base)
    pg.fill("#login-username", "guest")
    pg.fill("#login-password", "guest")
    pg.click("#login-submit")
    pg.wait_for_selector("#main h1")
    yield pg
    context.close()
    assert not errors, f"JavaScript errors in the console: {errors}"


def shot(pg, name: str) -> None:
    pg.evaluate("window.scrollTo(0, 0)")  # the sticky top bar belongs at the top
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_login_refuses_a_wrong_password_then_accepts_the_right_one(browser, base):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(base)
    pg.wait_for_selector("#login-form")
    shot(pg, "login")
    pg.fill("#login-username", "guest")
    pg.fill("#login-password", "wrong")
    pg.click("#login-submit")
    pg.wait_for_function("document.querySelector('#login-error').textContent.length > 0")
    assert "Login failed" in pg.inner_text("#login-error")
    pg.fill("#login-password", "guest")
    pg.click("#login-submit")
    pg.wait_for_selector("text=Overview")
    assert "guest" in pg.inner_text("#who-name")
    context.close()


def test_overview_chart_moves_while_a_publisher_runs(page, mgmt_node):
    stop = threading.Event()

    def publish() -> None:
        conn = pika.BlockingConnection(pika.URLParameters(mgmt_node.url()))
        ch = conn.channel()
        ch.queue_declare("console-load")
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            for _ in range(50):
                ch.basic_publish("", "console-load", b"x" * 100)
            conn.sleep(0.01)
        conn.close()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        # the chart's highest drawn rate rises above the idle scale (1/s) as samples arrive
        page.wait_for_function(
            "() => { const c = document.querySelector('#chart-rates');"
            " return c && Number(c.dataset.max || 0) > 10; }", timeout=30_000)
        page.wait_for_function(
            "() => parseInt(document.querySelector('#chart-lengths').dataset.max || 0) > 1",
            timeout=30_000)
        page.wait_for_selector(".node-card")
        shot(page, "overview")
    finally:
        stop.set()
        publisher.join(30)
    assert "Connections" in (page.text_content(".grid-5") or "")


def test_leaving_the_overview_while_its_figures_are_on_their_way(page):
    """The overview's figures arrive after the user went to another page: nothing is drawn
    into the page that is gone (the `page` fixture fails on any JavaScript error)."""
    held: list = []
    page.route("**/api/overview?msg_rates_age*", lambda route: held.append(route))
    page.goto(page.url.split("#")[0] + "#/overview")
    wait_for(lambda: page.wait_for_timeout(50) or bool(held), 20,
             what="the overview asking for its figures")
    page.goto(page.url.split("#")[0] + "#/queues")
    page.wait_for_selector("#main h1:has-text('Queues')")
    for route in list(held):
        route.continue_()  # the answers arrive now, on the queues page
    page.wait_for_timeout(300)  # let them be handled; an error would be caught at teardown
    assert page.locator("#chart-rates").count() == 0


def test_create_a_queue_then_publish_and_get_a_message(page, api: Api):
    page.goto(page.url.split("#")[0] + "#/queues")
    page.click("#add-queue-panel summary")
    page.fill("#add-queue-name", "console-orders")
    page.click("#add-queue-submit")
    page.wait_for_selector("a:text-is('console-orders')")
    shot(page, "queues")
    q = api.ok("GET", "/api/queues/%2F/console-orders")
    assert q["durable"] is True and q["messages"] == 0
    page.click("a:text-is('console-orders')")
    page.wait_for_selector("#queue-details")
    form = page.locator(".publish-form")
    form.locator("textarea[name=payload]").fill("hello from the console")
    form.locator("select[name=delivery_mode]").select_option("2")
    form.locator("button[type=submit]").click()
    wait_for(lambda: api.ok("GET", "/api/queues/%2F/console-orders")["messages"] == 1,
             10, what="the published message in the queue")
    page.select_option("#get-form select[name=ackmode]", "ack_requeue_false")
    page.click("#get-form button[type=submit]")
    page.wait_for_selector("#get-results pre.msg")
    assert page.inner_text("#get-results pre.msg") == "hello from the console"
    assert '"delivery_mode":2' in page.inner_text("#get-results").replace(" ", "")
    shot(page, "queue")
    wait_for(lambda: api.ok("GET", "/api/queues/%2F/console-orders")["messages"] == 0,
             10, what="the message to be gone after an ack")


def test_add_a_user_who_can_then_log_in(page, api: Api):
    page.goto(page.url.split("#")[0] + "#/admin/users")
    page.fill("#add-user-name", "console-ops")
    page.fill("#add-user-password", "s3cret")
    page.fill("#add-user-tags", "monitoring")
    page.select_option("#add-user select[name=vhost]", "/")
    page.click("#add-user-submit")
    page.wait_for_selector("#users-table td:text-is('console-ops')")
    shot(page, "users")
    assert api.as_user("console-ops", "s3cret").ok("GET", "/api/whoami") == {
        "name": "console-ops", "tags": ["monitoring"]}
    assert api.ok("GET", "/api/permissions/%2F/console-ops")["configure"] == ".*"


def test_import_definitions_exported_from_rabbitmq(page, api: Api, tmp_path):
    doc = json.loads(RABBITMQ_DEFINITIONS.read_text())
    upload = tmp_path / "rabbitmq-export.json"
    shutil.copy(RABBITMQ_DEFINITIONS, upload)
    page.goto(page.url.split("#")[0] + "#/admin/definitions")
    page.set_input_files("#definitions-file", str(upload))
    page.click("#import-definitions")
    page.wait_for_selector("#flash:has-text('Definitions imported')")
    shot(page, "definitions")
    for q in doc["queues"]:
        assert api.get(f"/api/queues/{seg(q['vhost'])}/{seg(q['name'])}").status == 200
    for u in doc["users"]:
        assert api.get(f"/api/users/{u['name']}").status == 200


def test_ten_thousand_queues_page_on_the_server(page, mgmt_node, api: Api):
    conn = pika.BlockingConnection(pika.URLParameters(mgmt_node.url()))
    ch = conn.channel()
    for i in range(10_000):
        ch.queue_declare(f"bulk-{i:05d}", arguments={}, passive=False)
    conn.close()
    page.goto(page.url.split("#")[0] + "#/queues")
    page.wait_for_selector("text=/1\\d,\\d{3} total/")
    assert page.locator("table.data tbody tr").count() == 50
    page.fill("input[type=search]", "bulk-0999")
    page.wait_for_selector("text=/10 of 1\\d,\\d{3} match/")
    assert page.locator("table.data tbody tr").count() == 10
