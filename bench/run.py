"""`make bench` (``python -m bench``): the console as in production, measured under load.

Starts its own PostgreSQL and Redis (bench.services), migrates, serves the console with gunicorn
(``bench.settings``: production settings, DEBUG off) and seeds data in bulk (bench.seed). Then,
from separate processes (wrk, bench.load, bench.revocation, manage.py), in phases:

  A  10,000 tokens, no seeded events: the floor, introspection with tool context (live, revoked,
     expired, foreign-audience, unknown tokens) and DOT's stock introspection view;
     then the latency at half the peak rate (open loop) and the revocation-under-load check
  T  the token endpoint (refresh grant; client_credentials at DOT's stock view and at ours)
     and the event API (batches)
  B  1,000,000 tokens: the floor and introspection again
  E  audit export of 1,000,000 events (CSV, JSON Lines) against PostgreSQL's COPY
  C  1,000,000 tokens and up to 10,000,000 events (as many as the time budget allows): again

Within a phase the scenarios run in turns (round 1 of each, then round 2, ...), and each figure is
the median of its rounds and is given as a ratio to its baseline from the same phase, so a machine
that slows down for a while shifts both. Writes BENCHMARKS.md and BENCHMARKS.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from bench.load import Result, median_result, paced, wrk
from bench.services import ROOT, Gunicorn, Services

FORM = "application/x-www-form-urlencoded"
TOOL, ACTION = "search", "read"
POOL = 64  # tokens a scenario cycles through


@dataclass(frozen=True)
class Profile:
    tokens_small: int
    tokens_large: int
    export_events: int
    events_target: int
    long: int  # seconds per run of the main scenarios
    short: int  # seconds per run of the others
    rounds: int
    batch: int  # events per event API request
    revocations: int
    budget: int  # seconds for the whole run; event seeding stops in time to fit it
    refresh_rate_cap: int  # refresh tokens minted per second of refresh load
    warm_up: bool = True  # load every worker once before measuring (pointless for the smoke run)


PROFILES = {
    "full": Profile(10_000, 1_000_000, 1_000_000, 10_000_000, 10, 4, 3, 100, 500, 13 * 60, 1500),
    "quick": Profile(10_000, 100_000, 100_000, 300_000, 3, 2, 1, 100, 100, 5 * 60, 1500),
    "smoke": Profile(200, 400, 500, 1_000, 1, 1, 1, 10, 5, 120, 100, warm_up=False),
}


@dataclass
class Scenario:
    key: str
    label: str
    path: str
    duration: int
    check: Callable[[int, dict], bool]
    expected: str
    bodies: list[Path] = field(default_factory=list)  # one file per round (cycled)
    authorization: str = ""
    content_type: str = FORM
    consume: bool = False
    baseline: str | None = "floor"
    preflight_body: str | None = None
    ingest_event: str = ""  # event API: JSON template of one event, %s = its id
    server: str = ""  # base URL of another gunicorn than the main one
    answer: str = ""  # the preflight's answer, shown in the report

    def env(self, round_: int) -> dict[str, str]:
        env = {"BENCH_AUTHORIZATION": self.authorization, "BENCH_CONTENT_TYPE": self.content_type}
        if self.bodies:
            env["BENCH_BODIES"] = str(self.bodies[round_ % len(self.bodies)])
            env["BENCH_CONSUME"] = "1" if self.consume else "0"
        else:
            env.update(BENCH_EVENT=self.ingest_event, BENCH_RUN=uuid.uuid4().hex[:12])
        return env


class Bench:
    """One run of the benchmark: its phases, their figures, the report."""

    def __init__(self, profile_name: str, workers: int, out: Path) -> None:
        self.profile_name, self.profile = profile_name, PROFILES[profile_name]
        self.workers, self.out = workers, out
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self.results: dict[str, dict] = {}  # phase -> scenario key -> figures
        self.scenarios: dict[str, dict] = {}  # phase -> key -> Scenario
        self.extra: dict[str, object] = {}
        self.profiles: dict[str, str] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-bodies."))

    # --- helpers --------------------------------------------------------------------------------

    def timed(self, name: str, function: Callable, *args, **kwargs):
        start = time.monotonic()
        try:
            return function(*args, **kwargs)
        finally:
            self.timings[name] = round(time.monotonic() - start, 1)
            print(f"bench: {name}: {self.timings[name]} s", file=sys.stderr, flush=True)

    def write_bodies(self, name: str, bodies: list[str]) -> Path:
        path = self.tmp / f"{name}.txt"
        path.write_text("\n".join(bodies) + "\n")
        return path

    def base(self, scenario: Scenario) -> str:
        return scenario.server or self.url

    def post(
        self, path: str, body: str, authorization: str, content_type: str, base: str = ""
    ) -> tuple[int, dict]:
        parts = urlsplit(base or self.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        headers = {
            "Content-Type": content_type,
            **({"Authorization": authorization} if authorization else {}),
        }
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        raw = response.read()
        connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, {"raw": raw[:200].decode(errors="replace")}

    def ask(self, scenario: Scenario, body: str | None = None) -> tuple[bool, str]:
        """One request of ``scenario``: whether it got the answer the scenario measures, and it."""
        if body is None and scenario.bodies:
            body = scenario.bodies[0].read_text().splitlines()[0]
        elif body is None:
            body = json.dumps({"events": [json.loads(scenario.ingest_event % f"check-{uuid.uuid4()}")]})
        status, answer = self.post(
            scenario.path, body, scenario.authorization, scenario.content_type, self.base(scenario)
        )
        shown = {k: v for k, v in answer.items() if k not in ("access_token", "refresh_token", "id_token")}
        return scenario.check(status, answer), f"{status} {json.dumps(shown, sort_keys=True)[:160]}"

    def preflight(self, scenario: Scenario) -> None:
        """One request before the load: the scenario must get the answer it is meant to measure."""
        ok, scenario.answer = self.ask(scenario, scenario.preflight_body)
        if not ok:
            raise RuntimeError(f"{scenario.key}: expected {scenario.expected}, got {scenario.answer}")

    def postflight(self, scenario: Scenario) -> None:
        """One request after the load (not for bodies that are spent once sent): an answer that
        changed under load (e.g. a rate limit's 429) is shown in the report."""
        if scenario.consume:
            return
        ok, answer = self.ask(scenario)
        if not ok:
            scenario.answer += f"; after the load: {answer}"

    def run_phase(self, phase: str, scenarios: list[Scenario]) -> None:
        for scenario in scenarios:
            self.preflight(scenario)
        runs: dict[str, list[Result]] = {s.key: [] for s in scenarios}
        for round_ in range(self.profile.rounds):
            for scenario in scenarios:
                script = "pool.lua" if scenario.bodies else "ingest.lua"
                env = scenario.env(round_)
                if not scenario.bodies:
                    env["BENCH_BATCH"] = str(self.profile.batch)
                with self.profiled(scenario, round_):
                    url = self.base(scenario) + scenario.path
                    runs[scenario.key].append(wrk(url, script, env, scenario.duration))
                self.drain(self.base(scenario))
        for scenario in scenarios:
            self.postflight(scenario)
        self.scenarios[phase] = {s.key: s for s in scenarios}
        self.results[phase] = {
            key: {"median": median_result(r).as_dict(), "runs": [x.as_dict() for x in r]}
            for key, r in runs.items()
        }

    def warm_up(self, scenarios: list[Scenario]) -> None:
        """Load every worker once before measuring: first requests import and compile lazily."""
        for scenario in scenarios:
            if scenario.key in ("floor", "live", "live_uncached", "live_async_commit", "dot"):
                wrk(self.base(scenario) + scenario.path, "pool.lua", scenario.env(0), 1)
                self.drain(self.base(scenario))

    def drain(self, base: str = "") -> None:
        """Wait until every worker is free again. wrk stops timing at the end of its run, but the
        requests it left queued are still served, and would be served during the next scenario
        (a client secret under a slow password hasher takes a core for most of a second)."""
        batch = 2 * self.workers
        deadline = time.monotonic() + 300
        with ThreadPoolExecutor(batch) as pool:
            while time.monotonic() < deadline:
                start = time.monotonic()
                list(pool.map(lambda _: self.post("/bench/floor/", "", "", FORM, base), range(batch)))
                if time.monotonic() - start < 1:
                    return

    @contextlib.contextmanager
    def profiled(self, scenario: Scenario, round_: int) -> Iterator[None]:
        """With BENCH_PYSPY=key,key..., py-spy samples every gunicorn worker during the first run of
        those scenarios; the hottest functions go to var/bench-profiles/."""
        wanted = os.environ.get("BENCH_PYSPY", "").split(",")
        if round_ != 0 or scenario.key not in wanted or scenario.key in self.profiles:
            yield
            return
        folder = ROOT / "var" / "bench-profiles"
        folder.mkdir(exist_ok=True)
        recorders = [
            subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(scenario.duration),
                    "--format",
                    "raw",
                    "--output",
                    str(folder / f"{scenario.key}-{pid}.raw"),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in self.servers[self.base(scenario)].worker_pids()
        ]
        try:
            yield
        finally:
            for recorder in recorders:
                recorder.wait()
            self.profiles[scenario.key] = summarize_profiles(sorted(folder.glob(f"{scenario.key}-*.raw")))
            (folder / f"{scenario.key}.txt").write_text(self.profiles[scenario.key])

    def rps(self, phase: str, key: str) -> float:
        return self.results[phase][key]["median"]["rps"]

    # --- the run --------------------------------------------------------------------------------

    def run(self, external: bool) -> dict:
        services = None if external else Services()
        gunicorn = uncached = async_commit = None
        try:
            if services is not None:
                self.timed("start PostgreSQL and Redis", services.start)
                os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = (
                    services.database_url,
                    services.redis_url,
                )
            os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
            import django

            django.setup()
            from django.core.management import call_command

            self.timed("migrate", call_command, "migrate", verbosity=0)
            gunicorn = self.timed("start gunicorn", Gunicorn, self.workers, {})
            self.url = gunicorn.url
            # The same console with the introspection cache off (policies.introspection): the
            # "before" of the fast path, measured in the same run. Idle but for its one scenario.
            uncached = self.timed(
                "start gunicorn, introspection cache off",
                Gunicorn,
                self.workers,
                {"INTROSPECTION_CACHE_SECONDS": "0"},
            )
            self.uncached_url = uncached.url
            # The same console with AUDIT_HOT_PATH_SYNCHRONOUS_COMMIT off: introspection's audit
            # event commits without waiting for the WAL flush (docs/AUDIT.md). Idle but for its row.
            async_commit = self.timed(
                "start gunicorn, hot-path audit commit asynchronous",
                Gunicorn,
                self.workers,
                {"AUDIT_HOT_PATH_SYNCHRONOUS_COMMIT": "0"},
            )
            self.async_commit_url = async_commit.url
            self.servers = {gunicorn.url: gunicorn, uncached.url: uncached, async_commit.url: async_commit}
            self.measure(gunicorn)
        finally:
            for server in (gunicorn, uncached, async_commit):
                if server is not None:
                    server.stop()
            if services is not None:
                services.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.report()

    def measure(self, gunicorn: Gunicorn) -> None:
        from bench import seed
        from bench.machine import describe, load_average

        p = self.profile
        self.extra["load_average_start"] = load_average()
        self.world = world = self.timed("seed: objects", seed.seed_world)
        self.timed(f"seed: {p.tokens_small:,} tokens", seed.seed_tokens, world, p.tokens_small)
        self.server_auth = (
            "Basic " + base64.b64encode(f"{world.server_client_id}:{world.server_secret}".encode()).decode()
        )

        # Phase A: introspection, with few tokens and no seeded events.
        live = self.introspection_bodies("live-a", seed.LIVE, self.spread(p.tokens_small))
        scenarios = self.introspection_scenarios(live)
        if p.warm_up:
            self.timed("warm-up (not measured)", self.warm_up, scenarios)
        self.timed("phase A: introspection", self.run_phase, "A", scenarios)
        self.timed("latency at half the peak rate", self.half_rate, live)
        self.timed("revocation under load", self.revocation_under_load, live)

        # Phase T: token endpoint and event API.
        self.timed("phase T: token endpoint and event API", self.run_phase, "T", self.token_scenarios(live))

        # Phase B: the floor and introspection again, with many more tokens.
        self.timed(f"seed: tokens up to {p.tokens_large:,}", seed.seed_tokens, world, p.tokens_large)
        live_b = self.introspection_bodies("live-b", seed.LIVE, self.spread(p.tokens_large))
        floor_and_live = self.introspection_scenarios(live_b)[:2]
        self.timed(f"phase B: {p.tokens_large:,} tokens", self.run_phase, "B", floor_and_live)

        # Phase E: export.
        written = self.timed(f"seed: {p.export_events:,} events", seed.seed_events, p.export_events)
        self.timed("phase E: export", self.export)

        # Phase C: the same, with as many more events as fit the time budget.
        remaining_after = 2 * p.rounds * (p.long + 2) + 30
        deadline = self.started + p.budget - remaining_after
        written += self.timed(
            "seed: more events",
            seed.seed_events,
            p.events_target - written,
            start=written,
            deadline=deadline,
        )
        self.extra["events_seeded"] = written
        self.timed(
            f"phase C: {p.tokens_large:,} tokens and the seeded events",
            self.run_phase,
            "C",
            floor_and_live,
        )
        self.extra["load_average_end"] = load_average()
        self.extra["machine"] = describe(os.environ["REDIS_URL"], self.workers)
        self.extra["tokens"] = {"A": p.tokens_small, "B": p.tokens_large, "C": p.tokens_large}

    def spread(self, total: int) -> list[int]:
        """POOL token numbers spread evenly over 1..total."""
        step = max(1, total // POOL)
        return list(range(1, total + 1, step))[:POOL]

    def introspection_bodies(self, name: str, prefix: str, numbers: list[int]) -> Path:
        """Introspection with tool context of the tokens <prefix><n>, one body per token."""
        return self.write_bodies(
            name, [urlencode({"token": f"{prefix}{n}", "tool": TOOL, "action": ACTION}) for n in numbers]
        )

    def introspection_scenarios(self, live: Path) -> list[Scenario]:
        from bench import seed

        p, special = self.profile, range(1, self.world.special + 1)

        def inactive(status: int, answer: dict) -> bool:
            return status == 200 and answer.get("active") is False

        def allowed(status: int, answer: dict) -> bool:
            decision = answer.get("decision", {})
            return status == 200 and answer.get("active") is True and decision.get("allowed") is True

        def bodies(name: str, prefix: str) -> list[Path]:
            return [self.introspection_bodies(name, prefix, list(special))]

        unknown = self.write_bodies(
            "unknown",
            [urlencode({"token": uuid.uuid4().hex, "tool": TOOL, "action": ACTION}) for _ in special],
        )
        intro, auth = "/oauth/introspect/", self.server_auth
        return [
            Scenario(
                "floor",
                "floor: trivial JSON view, same middleware",
                "/bench/floor/",
                p.long,
                lambda s, a: s == 200,
                "200",
                [live],
                auth,
                baseline=None,
            ),
            Scenario(
                "live",
                "introspection, live token, tool context + audit",
                intro,
                p.long,
                allowed,
                "active, decision allowed",
                [live],
                auth,
            ),
            Scenario(
                "live_uncached",
                "introspection, live token, tool context + audit, introspection cache off",
                intro,
                p.long,
                allowed,
                "active, decision allowed",
                [live],
                auth,
                server=self.uncached_url,
            ),
            Scenario(
                "live_async_commit",
                "introspection, live token, tool context + audit, AUDIT_HOT_PATH_SYNCHRONOUS_COMMIT=0",
                intro,
                p.long,
                allowed,
                "active, decision allowed",
                [live],
                auth,
                server=self.async_commit_url,
            ),
            Scenario(
                "revoked",
                "introspection, revoked token",
                intro,
                p.short,
                inactive,
                "inactive",
                bodies("revoked", seed.REVOKED),
                auth,
            ),
            Scenario(
                "expired",
                "introspection, expired token",
                intro,
                p.short,
                inactive,
                "inactive",
                bodies("expired", seed.EXPIRED),
                auth,
            ),
            Scenario(
                "foreign",
                "introspection, token bound to another MCP server",
                intro,
                p.short,
                inactive,
                "inactive",
                bodies("foreign", seed.FOREIGN),
                auth,
            ),
            Scenario(
                "unknown",
                "introspection, unknown token",
                intro,
                p.short,
                inactive,
                "inactive",
                [unknown],
                auth,
            ),
            Scenario(
                "dot",
                "peer: DOT's stock IntrospectTokenView (Bearer, introspection scope)",
                "/bench/dot/introspect/",
                p.long,
                lambda s, a: s == 200 and a.get("active") is True,
                "active",
                [self.write_bodies("dot", [f"token={seed.LIVE}{n}" for n in self.spread(self.world.tokens)])],
                f"Bearer {self.world.peer_bearer}",
            ),
        ]

    def token_scenarios(self, live: Path) -> list[Scenario]:
        """The token endpoint and the event API, with the floor again as their baseline."""
        from oauth2_provider.settings import oauth2_settings

        from bench import seed

        p, world = self.profile, self.world
        per_round = p.refresh_rate_cap * p.long
        first, _ = self.timed(
            f"seed: {per_round * p.rounds + 1:,} refresh tokens",
            seed.seed_refresh_tokens,
            world,
            per_round * p.rounds + 1,
        )

        def refresh_body(n: int) -> str:
            return urlencode(
                {
                    "grant_type": "refresh_token",
                    "refresh_token": f"{seed.REFRESH}{n}",
                    "client_id": world.agent_client_id,
                }
            )

        rounds = [
            self.write_bodies(
                f"refresh-{r}", [refresh_body(first + 1 + r * per_round + k) for k in range(per_round)]
            )
            for r in range(p.rounds)
        ]
        peer_basic = (
            "Basic " + base64.b64encode(f"{world.peer_client_id}:{world.peer_secret}".encode()).decode()
        )
        cc = self.write_bodies("cc", ["grant_type=client_credentials"])
        ours_cc = self.write_bodies(
            "ours-cc", [urlencode({"grant_type": "client_credentials", "client_id": world.agent_client_id})]
        )
        digest = hashlib.sha256(b"{}").hexdigest()
        event = json.dumps(
            {
                "event_id": "%s",
                "token": f"{seed.LIVE}1",
                "tool": TOOL,
                "action": ACTION,
                "outcome": "success",
                "duration_ms": 42,
                "arguments_digest": digest,
                "occurred": "2026-01-05T09:00:00Z",
            }
        )

        def minted(status: int, answer: dict) -> bool:
            return status == 200 and "access_token" in answer

        floor = self.introspection_scenarios(live)[0]
        floor.duration = p.short
        return [
            floor,
            Scenario(
                "refresh",
                "token endpoint: refresh_token grant (rotating)",
                "/oauth/token/",
                p.long,
                minted,
                "200 with tokens",
                rounds,
                consume=True,
                preflight_body=refresh_body(first),
            ),
            Scenario(
                "ours_cc",
                "our token endpoint: client_credentials (refused by design)",
                "/oauth/token/",
                p.short,
                lambda s, a: s == 400 and a.get("error") == "unsupported_grant_type",
                "400 unsupported_grant_type",
                [ours_cc],
            ),
            Scenario(
                "ingest",
                f"event API: batches of {p.batch} events",
                "/api/audit/server-events/",
                p.long,
                lambda s, a: s == 200 and len(a.get("recorded", [])) == 1,
                "200 recorded",
                authorization=self.server_auth,
                content_type="application/json",
                ingest_event=event,
            ),
            Scenario(
                "dot_cc",
                "DOT's stock TokenView: client_credentials (how a peer deployment gets its bearer "
                f"token; client secret hashed with {oauth2_settings.CLIENT_SECRET_HASHER!r})",
                "/bench/dot/token/",
                p.short,
                minted,
                "200 with a token",
                [cc],
                peer_basic,
            ),
        ]

    def half_rate(self, live: Path) -> None:
        rate = max(1.0, self.rps("A", "live") / 2)
        duration = self.profile.long
        result = paced(
            self.url + "/oauth/introspect/", rate, duration, live, {"Authorization": self.server_auth}
        )
        self.extra["half_rate"] = result

    def revocation_under_load(self, live: Path) -> None:
        from bench import seed

        pool = set(self.spread(self.world.tokens))
        candidates = [n for n in range(1, self.world.tokens + 1) if n not in pool]
        tokens = [
            f"{seed.LIVE}{n}"
            for n in random.sample(candidates, min(self.profile.revocations, len(candidates)))
        ]
        config = self.tmp / "revocation.json"
        config.write_text(
            json.dumps(
                {
                    "base_url": self.url,
                    "server_authorization": self.server_auth,
                    "agent": self.world.agent_client_id,
                    "tool": TOOL,
                    "action": ACTION,
                    "tokens": tokens,
                    "seconds": 2 * self.profile.long,
                }
            )
        )
        env = {"BENCH_AUTHORIZATION": self.server_auth, "BENCH_CONTENT_TYPE": FORM, "BENCH_BODIES": str(live)}
        load: list[Result] = []
        finished = threading.Event()

        def keep_loading() -> None:  # short wrk runs back to back, until the check is done
            while not finished.is_set():
                load.append(wrk(self.url + "/oauth/introspect/", "pool.lua", env, 1))

        thread = threading.Thread(target=keep_loading)
        thread.start()
        time.sleep(0.5)
        try:
            checked = subprocess.run(
                [sys.executable, "-m", "bench.revocation", str(config)],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
        finally:
            finished.set()
            thread.join()
            self.drain()
        counts = json.loads(checked.stdout)
        counts["load_rps"] = round(median_result(load).rps) if load else None
        self.extra["revocation"] = counts

    def export(self) -> None:
        from audit.export import COLUMNS
        from bench.seed import SEEDED_EVENT_TYPE

        target = self.tmp / "export"
        target.mkdir()
        figures = {}
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings"}
        select = (
            f"SELECT {', '.join(COLUMNS)} FROM audit_auditevent "
            f"WHERE event_type = '{SEEDED_EVENT_TYPE}' ORDER BY id"
        )
        psql = shutil.which("psql") or "psql"
        for fmt in ("csv", "jsonl"):
            output = target / f"events.{fmt}"
            command = [
                sys.executable,
                "manage.py",
                "export_audit",
                "--format",
                fmt,
                "--output",
                str(output),
                "--event-type",
                SEEDED_EVENT_TYPE,
            ]
            seconds, rss = run_measured(command, env)
            copy_sql = (
                f"\\copy ({select}) TO '{target}/copy.{fmt}' WITH (FORMAT csv, HEADER)"
                if fmt == "csv"
                else f"\\copy (SELECT row_to_json(e) FROM ({select}) e) TO '{target}/copy.{fmt}'"
            )
            copy_seconds, copy_rss = run_measured([psql, os.environ["DATABASE_URL"], "-qc", copy_sql], env)
            rows = json.loads((target / f"events.{fmt}.manifest.json").read_text())["rows"]
            figures[fmt] = {
                "rows": rows,
                "seconds": round(seconds, 2),
                "rows_per_s": round(rows / seconds),
                "peak_rss_mb": round(rss, 1),
                "bytes": output.stat().st_size,
                "copy_seconds": round(copy_seconds, 2),
                "copy_rows_per_s": round(rows / copy_seconds),
                "copy_bytes": (target / f"copy.{fmt}").stat().st_size,
                "ratio_to_copy": round(copy_seconds / seconds, 3),
            }
            for path in target.iterdir():
                path.unlink()
        self.extra["export"] = figures

    def report(self) -> dict:
        from bench.report import write_report

        return write_report(self, self.out)


def summarize_profiles(files: list[Path], top: int = 25) -> str:
    """The functions most often on the stack (inclusive) and on top of it (self), from py-spy's
    collapsed stacks ("frame;frame;... count" per line)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for file in files:
        for line in file.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames, n = stack.split(";"), int(count)
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    lines = [f"{total} samples", "", "inclusive %  function"]
    lines += [f"{100 * n / total:10.1f}  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``command``; its wall time (s) and peak resident memory (MB), from the kernel (wait4)."""
    start = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {process.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=PROFILES, default="full")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", 3)))
    parser.add_argument(
        "--out", type=Path, default=ROOT / "BENCHMARKS.md", help="BENCHMARKS.md; .json beside it"
    )
    parser.add_argument(
        "--external-services",
        action="store_true",
        help="use DATABASE_URL and REDIS_URL as given instead of starting throwaway servers",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is missing (Debian: apt-get install wrk; `make bench` installs it)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.profile, args.workers, args.out)
    summary = bench.run(args.external_services)
    print(f"bench: wrote {args.out} and {args.out.with_suffix('.json')} in {summary['total_seconds']} s")
    for goal in summary["goals"]:
        print(f"  {goal['status']:5}  {goal['goal']}: {goal['measured']}")
