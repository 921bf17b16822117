"""A throwaway stack the fault tests may break: PostgreSQL, Redis and the console under gunicorn.

Each service is a real server in a temporary directory on a free loopback port, never the
machine's own. PostgreSQL runs with ``fsync=off`` (it survives its own crash, not the machine's)
but with ``synchronous_commit`` on: an answer the console gave is durable as it would be in
production, which is what "no acknowledged audit event is lost" is about. Redis saves its data on
``SHUTDOWN SAVE`` and reloads it at start, so a cache comes back with the entries it had.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gunicorn
import psycopg

from tests.support import free_loopback_port

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll ``condition`` until it returns something true; generous deadlines, no timing claims."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _postgres_bin() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    # Debian's layout, /usr/lib/postgresql/<major version>/bin: the newest one.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not candidates:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl): install the postgresql package")
    return Path(candidates[-1]).parent


class Postgres:
    def __init__(self, base: Path):
        self.bin = _postgres_bin()
        self.dir = base / "pg"
        self.data = self.dir / "data"
        self.port = free_loopback_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/console"
        # initdb and postgres refuse to run as root; the Debian package's postgres user can.
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.run_as, *args], cwd="/", capture_output=True, text=True, check=check, timeout=120
        )

    def init(self) -> None:
        self.dir.mkdir()
        if self.run_as:
            shutil.chown(self.dir.parent, "postgres")
            shutil.chown(self.dir, "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip
        self.start()
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE console")

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c full_page_writes=off"
        log = str(self.dir / "server.log")
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            log,
            "-w",
            "-t",
            "120",
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str) -> None:
        """``fast`` is a clean shutdown; ``immediate`` a crash: no checkpoint, recovery from WAL."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "120", "stop")

    def discard(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False
        )

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()


class Redis:
    def __init__(self, base: Path):
        self.dir = base / "redis"
        self.dir.mkdir()
        self.port = free_loopback_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        # No automatic snapshots; SHUTDOWN SAVE writes one and the next start loads it.
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_until(lambda: self.cli("ping") == "PONG", 60, "Redis to start")

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return result.stdout.strip()

    def stop(self) -> None:
        """Stop with a snapshot, so Redis comes back with every key it held (cached answers too)."""
        self.cli("shutdown", "save")
        self.process.wait(timeout=60)

    def keys(self) -> int:
        return int(self.cli("dbsize") or 0)

    def discard(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Seed:
    """What tests/faults/seed.py created: the MCP server's credentials and live access tokens."""

    server_basic: str
    agent_client_id: str
    tokens: list[str]
    delegation_tokens: dict[str, list[str]] = field(default_factory=dict)


class Console:
    """The console under gunicorn (sync workers, as the Dockerfile runs it), on the stack's services."""

    def __init__(self, base: Path, env: dict[str, str], workers: int = 2):
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env, self.workers = env, workers
        self.log_path = base / "gunicorn.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.log_path.open("a")
        # gunicorn 27+ opens a control socket at one path per user; another gunicorn on the machine
        # (make bench, a second test session) must not share it.
        control = ["--no-control-socket"] if gunicorn.version_info >= (27,) else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "console.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers), "--timeout", "60", "--graceful-timeout", "5", *control],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

    def wait_until_serving(self) -> None:
        wait_until(self._answers, 120, "gunicorn to serve the console", interval=0.3)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(
                self.url + "/.well-known/oauth-authorization-server", timeout=10
            ) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return sorted(int(pid) for pid in children)

    def worker_rss_kib(self) -> dict[int, int]:
        """Resident memory of each gunicorn worker (VmRSS, KiB)."""
        sizes = {}
        for pid in self.worker_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes[pid] = int(line.split()[1])
        return sizes

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # quick shutdown: the stack is thrown away
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class Stack:
    """PostgreSQL + Redis + migrated schema + seeded objects + the console under gunicorn."""

    def __init__(self) -> None:
        # Under /tmp: the postgres OS user must be able to reach it.
        self.base = Path(tempfile.mkdtemp(prefix="console-faults-", dir="/tmp"))
        self.pg = Postgres(self.base)
        self.redis = Redis(self.base)
        self.env = self._environment()
        self.console = Console(self.base, self.env)

    def _environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "DJANGO"))}
        env.update(
            DATABASE_URL=self.pg.url,
            REDIS_URL=self.redis.url,
            DJANGO_SETTINGS_MODULE="console.test_settings",
            CONSOLE_ISSUER="http://127.0.0.1",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            MEDIA_ROOT=str(self.base / "media"),
            # A database that does not answer is a prompt 503, not a hanging request.
            DATABASE_CONNECT_TIMEOUT="3",
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> None:
        self.pg.init()
        self.redis.start()
        # gunicorn boots while migrate runs (Django reads nothing from the database to start).
        self.console.start()
        self.manage("migrate", "--noinput")
        self.console.wait_until_serving()
        self.seeded = self.seed("faults", tokens=48, delegations=2)

    def manage(self, *args: str) -> str:
        return self.python("manage.py", *args)

    def python(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def seed(self, name: str, tokens: int, delegations: int = 0) -> Seed:
        """A fresh MCP server, human and agent with ``tokens`` live access tokens (tests/faults/seed.py)."""
        out = self.python("-m", "tests.faults.seed", name, str(tokens), str(delegations))
        return Seed(**json.loads(out.strip().splitlines()[-1]))

    def events_with_correlation_prefix(self, prefix: str) -> dict[str, int]:
        rows = self.pg.query(
            "SELECT correlation_id, count(*) FROM audit_auditevent WHERE correlation_id LIKE %s "
            "GROUP BY correlation_id",
            (prefix + "%",),
        )
        return dict(rows)

    def close(self) -> None:
        self.console.stop()
        self.redis.discard()
        self.pg.discard()
        shutil.rmtree(self.base, ignore_errors=True)
