"""What the figures were measured on: hardware, kernel, versions, commit and how busy it was."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _output(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=30).stdout.strip()
    except OSError:
        return ""


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe(redis_url: str, workers: int) -> dict:
    import redis

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    commit = _output("git", "rev-parse", "HEAD")
    dirty = bool(_output("git", "status", "--porcelain", "--untracked-files=no"))
    wrk_version = _output("sh", "-c", "wrk --version 2>&1 | head -n 1")
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "kernel": platform.release(),
        "os": _output("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "python": platform.python_version(),
        "django": version("Django"),
        "django_oauth_toolkit": version("django-oauth-toolkit"),
        "gunicorn": version("gunicorn"),
        "gunicorn_workers": workers,
        "postgres": postgres,
        "redis": redis.Redis.from_url(redis_url).info("server")["redis_version"],
        "wrk": wrk_version,
        "git_commit": commit + (" (with uncommitted changes)" if dirty else ""),
    }
