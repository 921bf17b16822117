"""The benchmark's own PostgreSQL, Redis and gunicorn, on free ports in a temporary directory.

Started here rather than reusing the machine's servers, so the benchmark neither disturbs them nor
depends on their tuning. PostgreSQL keeps its durable defaults (fsync and synchronous commit
on), as in production: an audit event must survive a crash, and that cost belongs in the figures.
As in scripts/with-services, initdb and postgres run as the ``postgres`` OS user when we are root.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise RuntimeError("no PostgreSQL server binaries (initdb): install the postgresql package")
    return Path(candidates[-1]).parent


class Services:
    """Start with ``start()``, always ``stop()``; ``database_url`` / ``redis_url`` once started."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="console-bench.", dir="/tmp"))
        self.pg_data: Path | None = None
        self.redis: subprocess.Popen | None = None
        self.database_url = self.redis_url = ""
        self.pg_user = None
        if os.geteuid() == 0:
            self.pg_user = "postgres"
            if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0:
                raise RuntimeError("running as root needs the postgres OS user (the postgresql package)")

    def _as_pg(self, *command: str) -> list[str]:
        return ["runuser", "-u", self.pg_user, "--", *command] if self.pg_user else list(command)

    def start(self) -> None:
        bin_dir = pg_bin()
        self.pg_bin = bin_dir
        pg_dir = self.tmp / "pg"
        pg_dir.mkdir()
        if self.pg_user:
            shutil.chown(self.tmp, self.pg_user)
            shutil.chown(pg_dir, self.pg_user)
        port = free_port()
        subprocess.run(
            self._as_pg(
                str(bin_dir / "initdb"),
                "-D",
                str(pg_dir / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ),
            check=True,
            capture_output=True,
            cwd="/",
        )
        self.pg_data = pg_dir / "data"
        options = f"-h 127.0.0.1 -p {port} -k {pg_dir} -c shared_buffers=256MB -c max_connections=50"
        subprocess.run(
            self._as_pg(
                str(bin_dir / "pg_ctl"),
                "-D",
                str(self.pg_data),
                "-l",
                str(pg_dir / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ),
            check=True,
            capture_output=True,
            cwd="/",
        )
        subprocess.run(
            [
                str(bin_dir / "psql"),
                f"postgres://postgres@127.0.0.1:{port}/postgres",
                "-qc",
                "create database console",
            ],
            check=True,
            capture_output=True,
        )
        self.database_url = f"postgres://postgres@127.0.0.1:{port}/console"

        redis_port = free_port()
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
                "--logfile",
                str(self.tmp / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(100):
            if (
                subprocess.run(
                    ["redis-cli", "-p", str(redis_port), "ping"], capture_output=True
                ).stdout.strip()
                == b"PONG"
            ):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("Redis did not start: " + (self.tmp / "redis.log").read_text())
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(timeout=30)
        if self.pg_data is not None:
            subprocess.run(
                self._as_pg(
                    str(self.pg_bin / "pg_ctl"), "-D", str(self.pg_data), "-m", "immediate", "-w", "stop"
                ),
                capture_output=True,
                cwd="/",
            )
        shutil.rmtree(self.tmp, ignore_errors=True)


class Gunicorn:
    """The console under gunicorn, sync workers, settings ``bench.settings`` (DEBUG off)."""

    def __init__(self, workers: int, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="bench-gunicorn.", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "console.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--worker-class",
                "sync",
                "--timeout",
                "120",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + Path(self.log.name).read_text())
            try:
                request = urllib.request.Request(self.url + "/bench/floor/", data=b"", method="POST")
                with urllib.request.urlopen(request, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer:\n" + Path(self.log.name).read_text())

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.unlink(self.log.name)
