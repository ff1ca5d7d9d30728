"""Celery with the warren_vhost fixture: CELERY_BROKER_URL from the fixture, the rpc://
result backend, and a worker either in the test process or as `celery -A ... worker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

HERE = Path(__file__).parent


@pytest.fixture
def celery_app(warren_vhost, monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", warren_vhost.url)
    app = Celery("example", backend="rpc://")  # broker: CELERY_BROKER_URL

    @app.task
    def multiply(x, y):
        return x * y

    app.multiply = multiply
    return app


def test_in_process_worker(celery_app):
    # without_heartbeat=False: the worker's heartbeat timer is what wakes its event loop to
    # notice the shutdown request; without it the worker thread never ends
    with start_worker(celery_app, pool="solo", perform_ping_check=False,
                      without_heartbeat=False):
        result = celery_app.multiply.delay(6, 7)
        assert result.get(timeout=10) == 42


@pytest.fixture
def celery_worker_process(warren_vhost):
    """`celery -A celery_tasks worker` in a subprocess, on this test's vhost."""
    env = {**os.environ, "CELERY_BROKER_URL": warren_vhost.url}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--pool=solo",
         "--loglevel=WARNING", "--without-gossip", "--without-mingle"],
        cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    yield worker
    # warm shutdown; the worker notices it at its next heartbeat timer (2 s), which is why
    # the worker keeps its heartbeat here
    worker.send_signal(signal.SIGTERM)
    try:
        worker.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.communicate(timeout=20)


def test_worker_subprocess(warren_vhost, celery_worker_process):
    client = Celery("client", broker=warren_vhost.url, backend="rpc://")
    result = client.send_task("celery_tasks.add", (2, 3), queue="celery-examples")
    assert result.get(timeout=30) == 5
    retried = client.send_task("celery_tasks.flaky", (2,), queue="celery-examples")
    assert retried.get(timeout=30) == 2
