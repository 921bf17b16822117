"""A real Celery worker, consuming from Redis and writing to the test database.

Tests that need tasks to run as they do in production take the ``celery_worker`` fixture (and a
``transactional_db``, so that what they write is committed and visible to the worker). Every
other test runs tasks inline: ``console.test_settings`` makes Celery eager.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings

from console.celery import app

ROOT = Path(__file__).resolve().parent.parent


class Worker:
    def __init__(self, process: subprocess.Popen, queue: str):
        self.process = process
        self.queue = queue

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def celery_worker(transactional_db, tmp_path) -> Iterator[Worker]:
    """Start ``celery worker`` on a queue of its own; tasks sent during the test go to it."""
    with running_worker(tmp_path, "--pool=solo") as worker:
        yield worker


@contextmanager
def running_worker(tmp_path, *pool: str, **settings_env: str) -> Iterator[Worker]:
    """A worker with the ``pool`` options (e.g. prefork with one child, whose death a fault test
    causes) and extra environment for its settings."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    db = settings.DATABASES["default"]
    # The worker uses the test database pytest-django created, not the one in DATABASE_URL.
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    env["DATABASE_URL"] = f"postgres://{db['USER']}:{db['PASSWORD']}@{host}:{port}/{db['NAME']}"
    env["DJANGO_SETTINGS_MODULE"] = "console.test_settings"
    env["CELERY_TASK_ALWAYS_EAGER"] = "0"
    env.update(settings_env)
    log = (tmp_path / "celery-worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "console", "worker", *pool, "-Q", queue, "-l", "INFO"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    worker = Worker(process, queue)
    previous = (app.conf.task_always_eager, app.conf.task_default_queue)
    app.conf.task_always_eager = False
    app.conf.task_default_queue = queue
    try:
        _wait_until_ready(app, queue, process)
        yield worker
    finally:
        app.conf.task_always_eager, app.conf.task_default_queue = previous
        worker.stop()
        log.close()


def _wait_until_ready(app, queue: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited with {process.returncode}")
        replies = app.control.inspect(timeout=1).active_queues() or {}
        if any(q["name"] == queue for queues in replies.values() for q in queues):
            return
    raise RuntimeError("celery worker did not start")
