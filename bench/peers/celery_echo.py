"""The Celery peer of bench/dispatch.py: one trivial task, Redis as broker and result backend.

bench/dispatch.py starts ``celery -A celery_echo worker --concurrency 2 --pool prefork``
with this directory as the working directory, and sends the tasks itself.
Needs ``pip install celery redis`` and a Redis server (default
redis://127.0.0.1:6379/15; set BENCH_CELERY_REDIS to change it).
"""

from __future__ import annotations

import os

from celery import Celery

REDIS_URL = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/15")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "coopgrid-bench-echo")

app = Celery("coopgrid_bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    result_expires=600,  # the bench's results vanish from Redis on their own
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.echo")
def echo(x: int) -> int:
    return x
