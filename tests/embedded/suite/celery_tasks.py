"""The Celery application of the example tests. As in most projects, the broker comes from
the environment (CELERY_BROKER_URL, which Celery reads itself); results come back through
the rpc:// backend, i.e. over AMQP too."""

from __future__ import annotations

from celery import Celery

app = Celery("celery_tasks", backend="rpc://")
app.conf.task_default_queue = "celery-examples"


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True, max_retries=3, default_retry_delay=0)
def flaky(self, fail_times: int) -> int:
    """Fails `fail_times` times, then succeeds: returns how many retries it took."""
    if self.request.retries < fail_times:
        raise self.retry(exc=RuntimeError("not yet"))
    return self.request.retries
