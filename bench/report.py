"""BENCHMARKS.md (tables, goals with pass/short) and BENCHMARKS.json (every figure, the machine)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Bench

KEYCLOAK_GRANTS_PER_VCPU = 120  # Keycloak's published token grants per second per vCPU
EXPORT_MAX_RSS_MB = 150


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 3) if base else None


def _goal(goal: str, measured: str, ok: bool) -> dict:
    return {"goal": goal, "measured": measured, "status": "pass" if ok else "short"}


def goals(bench: Bench) -> list[dict]:
    results, extra = bench.results, bench.extra
    a = {k: v["median"] for k, v in results["A"].items()}
    live_vs_floor = _ratio(a["live"]["rps"], a["floor"]["rps"]) or 0
    async_vs_floor = _ratio(a["live_async_commit"]["rps"], a["floor"]["rps"]) or 0
    live_vs_dot = _ratio(a["live"]["rps"], a["dot"]["rps"]) or 0
    half = extra["half_rate"]
    normalized_a = live_vs_floor
    c = {k: v["median"] for k, v in results["C"].items()}
    normalized_c = _ratio(c["live"]["rps"], c["floor"]["rps"]) or 0
    scale = _ratio(normalized_c, normalized_a) or 0
    cores = extra["machine"]["cores"]
    refresh_target = 2 * KEYCLOAK_GRANTS_PER_VCPU * cores
    refresh = results["T"]["refresh"]["median"]
    revocation = extra["revocation"]
    listed = [
        _goal(
            "introspection with tool context and audit >= 0.8 x floor req/s",
            # The status is the product default's; the line says the same for the setting off.
            f"product default: {live_vs_floor:.2f} x ({a['live']['rps']:.0f} vs {a['floor']['rps']:.0f} "
            f"req/s), {'met' if live_vs_floor >= 0.8 else 'short'}; AUDIT_HOT_PATH_SYNCHRONOUS_COMMIT=0: "
            f"{async_vs_floor:.2f} x ({a['live_async_commit']['rps']:.0f} req/s), "
            f"{'met' if async_vs_floor >= 0.8 else 'short'}",
            live_vs_floor >= 0.8,
        ),
        _goal(
            "its p99 <= 10 ms at half its peak rate (open loop)",
            f"p99 {half['p99_ms']:.1f} ms at {half['rate']:.0f} req/s offered "
            f"({half['achieved_rps']:.0f} served)",
            half["p99_ms"] <= 10 and half["failures"] == 0,
        ),
        _goal(
            "introspection >= 8 x DOT's stock IntrospectTokenView",
            f"{live_vs_dot:.2f} x ({a['live']['rps']:.0f} vs {a['dot']['rps']:.0f} req/s)",
            live_vs_dot >= 8,
        ),
        _goal(
            f"{extra['tokens']['C']:,} tokens and {extra['events_seeded']:,} events cost <= 10 % "
            f"of throughput "
            f"vs {extra['tokens']['A']:,} and 0 (floor-normalised)",
            f"{scale:.2f} x (live/floor {normalized_c:.2f} vs {normalized_a:.2f}; raw "
            f"{c['live']['rps']:.0f} vs {a['live']['rps']:.0f} req/s)",
            scale >= 0.9,
        ),
        _goal(
            f"refresh grants >= 2 x Keycloak's {KEYCLOAK_GRANTS_PER_VCPU}/s per vCPU x {cores} cores "
            f"= {refresh_target}/s",
            f"{refresh['rps']:.0f} req/s ({refresh['bad_status']} refused)",
            refresh["rps"] >= refresh_target and refresh["bad_status"] == 0,
        ),
    ]
    for fmt, e in extra["export"].items():
        listed.append(
            _goal(
                f"export {fmt} >= 0.5 x COPY throughput, peak memory <= {EXPORT_MAX_RSS_MB} MB",
                f"{e['ratio_to_copy']:.2f} x ({e['rows_per_s']:,} vs {e['copy_rows_per_s']:,} rows/s), "
                f"{e['peak_rss_mb']:.0f} MB",
                e["ratio_to_copy"] >= 0.5 and e["peak_rss_mb"] <= EXPORT_MAX_RSS_MB,
            )
        )
    listed.append(
        _goal(
            "0 stale answers after revocation",
            f"{revocation['stale']} stale of {revocation['checks_after']} checks after "
            f"{revocation['revoked']} revocations",
            revocation["stale"] == 0 and revocation["revoked"] > 0 and revocation["errors"] == 0,
        )
    )
    return listed


def _other_statuses(statuses: dict[str, int]) -> str:
    """The answers that were not 200, by status: "400: 224", or "0"."""
    other = sorted((code, n) for code, n in statuses.items() if code != "200")
    return ", ".join(f"{code}: {n}" for code, n in other) or "0"


def _table(bench: Bench, phase: str) -> list[str]:
    rows = [
        "| scenario | req/s | p50 ms | p99 ms | baseline | ratio | other answers / socket errors | answer |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    results = bench.results[phase]
    for key, scenario in bench.scenarios[phase].items():
        m = results[key]["median"]
        base = scenario.baseline
        ratio = _ratio(m["rps"], results[base]["median"]["rps"]) if base else None
        rows.append(
            f"| {scenario.label} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | {base or '—'} | "
            f"{f'{ratio:.2f}' if ratio is not None else '—'} | {_other_statuses(m['statuses'])} / "
            f"{m['socket_errors']} | "
            f"`{scenario.answer.replace('|', '/')}` |"
        )
    return rows


def write_report(bench: Bench, out: Path) -> dict:
    extra, profile = bench.extra, bench.profile
    listed = goals(bench)
    total = round(time.monotonic() - bench.started, 1)
    summary = {
        "profile": bench.profile_name,
        "settings": profile.__dict__,
        "machine": extra["machine"],
        "load_average": {"start": extra["load_average_start"], "end": extra["load_average_end"]},
        "phases": bench.results,
        "half_rate": extra["half_rate"],
        "revocation": extra["revocation"],
        "export": extra["export"],
        "events_seeded": extra["events_seeded"],
        "tokens": extra["tokens"],
        "goals": listed,
        "timings_seconds": bench.timings,
        "total_seconds": total,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")

    machine = extra["machine"]
    a, b, c = (bench.results[p] for p in "ABC")
    half, revocation = extra["half_rate"], extra["revocation"]
    a_live, a_uncached = a["live"]["median"]["rps"], a["live_uncached"]["median"]["rps"] or 1
    a_async, a_live_or_1 = a["live_async_commit"]["median"]["rps"], a_live or 1
    a_floor = a["floor"]["median"]["rps"] or 1
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (profile `{bench.profile_name}`) in {total:.0f} s on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; every figure and the machine are in "
        f"[{out.with_suffix('.json').name}]({out.with_suffix('.json').name}). "
        f"Load average {extra['load_average_start']} at the start, {extra['load_average_end']} at the end.",
        "",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gb']} GB, Linux "
        f"{machine['kernel']}; Python {machine['python']}, Django {machine['django']}, django-oauth-toolkit "
        f"{machine['django_oauth_toolkit']}, PostgreSQL {machine['postgres']}, Redis {machine['redis']}, "
        f"gunicorn {machine['gunicorn']} ({machine['gunicorn_workers']} sync workers), {machine['wrk']}; "
        f"commit {machine['git_commit']}.",
        "",
        f"Load: wrk -t2 -c8, POST bodies from Lua scripts (bench/lua), {profile.rounds} run(s) of "
        f"{profile.long} s (main scenarios) or {profile.short} s (the others) each, taken in turns within a "
        "phase; figures are medians, ratios are to the baseline measured in the same phase. "
        "Every scenario's answer was checked once before its load (last column).",
        "",
        "## Goals",
        "",
        "| goal | measured | |",
        "| --- | --- | --- |",
        *(f"| {g['goal']} | {g['measured']} | **{g['status']}** |" for g in listed),
        "",
        f"## Introspection — phase A: {extra['tokens']['A']:,} tokens, no seeded events",
        "",
        *_table(bench, "A"),
        "",
        f"The introspection cache (Redis, policies.introspection): "
        f"{a_live / a_uncached:.2f} × the req/s of the same console with it off "
        "(`INTROSPECTION_CACHE_SECONDS=0`, a second gunicorn of the same size, idle otherwise).",
        "",
        f"With `AUDIT_HOT_PATH_SYNCHRONOUS_COMMIT=0` (introspection's audit event commits without "
        f"waiting for the WAL flush; what can be lost: docs/AUDIT.md), a third gunicorn of the same size: "
        f"{a_async:.0f} req/s, {a_async / a_live_or_1:.2f} × the product default "
        f"and {a_async / a_floor:.2f} × the floor.",
        "",
        "The peer is DOT's `IntrospectTokenView`, unchanged, on this project's DOT settings and "
        "database, called with a Bearer token holding the `introspection` scope (DOT's documented, "
        "fastest form). One difference to a stock deployment: its Bearer check reads "
        "`token.scopes`, which lists all scopes through the console's scopes backend (one query of "
        "the tool actions) where a `SCOPES` setting costs none.",
        "",
        f"Latency at half the peak rate (open loop, `python -m bench.load paced`, fresh connection per "
        f"request, timed from when each request was due): {half['rate']:.0f} req/s offered for "
        f"{profile.long} s, {half['achieved_rps']:.0f} served, p50 {half['p50_ms']:.1f} ms, p99 "
        f"{half['p99_ms']:.1f} ms, max {half['max_ms']:.1f} ms, {half['failures']} failed.",
        "",
        f"Revocation under load (wrk on introspection meanwhile, {revocation['load_rps']} req/s): "
        f"{revocation['revoked']} tokens revoked through POST /oauth/revoke/ (RFC 7009), each introspected "
        f"{revocation['checks_after'] // max(1, revocation['revoked'])} times on fresh connections as soon "
        f"as its revocation returned: **{revocation['stale']} stale** answers "
        f"({revocation['active_before']} were "
        f"active just before; {revocation['errors']} errors).",
        "",
        f"## Token endpoint and event API — phase T (after phase A: {extra['tokens']['A']:,} tokens)",
        "",
        *_table(bench, "T"),
        "",
        f"Event API: {bench.results['T']['ingest']['median']['rps'] * profile.batch:.0f} events/s recorded, "
        f"in batches of {profile.batch} with unique event ids.",
        "",
        f"Refresh-grant target: 2 × Keycloak's published {KEYCLOAK_GRANTS_PER_VCPU} grants/s per vCPU × "
        f"{machine['cores']} cores = {2 * KEYCLOAK_GRANTS_PER_VCPU * machine['cores']}/s. Each refresh "
        "request "
        "consumes a fresh pre-minted refresh token (they rotate).",
        "",
        "## Scale: tokens and audit events",
        "",
        "| phase | tokens | seeded events | floor req/s | introspection req/s | p99 ms | vs phase A (raw) | "
        "vs phase A (floor-normalised) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    normal_a = a["live"]["median"]["rps"] / a["floor"]["median"]["rps"]
    for name, phase, events in (("A", a, 0), ("B", b, 0), ("C", c, extra["events_seeded"])):
        live, floor = phase["live"]["median"], phase["floor"]["median"]
        lines.append(
            f"| {name} | {extra['tokens'][name]:,} | {events:,} | {floor['rps']:.0f} | {live['rps']:.0f} | "
            f"{live['p99_ms']:.1f} | {live['rps'] / a['live']['median']['rps']:.2f} | "
            f"{live['rps'] / floor['rps'] / normal_a:.2f} |"
        )
    lines += [
        "",
        f"Events: {extra['events_seeded']:,} seeded (target {profile.events_target:,}; seeding stops "
        "when the "
        "time budget is used), plus those the load itself wrote.",
        "",
        f"## Audit export of {next(iter(extra['export'].values()))['rows']:,} events",
        "",
        "| format | export s | rows/s | peak RSS MB | COPY s | COPY rows/s | export / COPY throughput |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {fmt} | {e['seconds']} | {e['rows_per_s']:,} | {e['peak_rss_mb']} | {e['copy_seconds']} | "
            f"{e['copy_rows_per_s']:,} | {e['ratio_to_copy']:.2f} |"
            for fmt, e in extra["export"].items()
        ),
        "",
        "`manage.py export_audit --event-type bench.seeded` against psql's "
        "`\\copy (SELECT <the same columns> "
        "... ORDER BY id) TO` (CSV; for JSON Lines `row_to_json`); peak RSS from the kernel (wait4).",
        "",
        "## Time budget",
        "",
        "| step | seconds |",
        "| --- | ---: |",
        *(f"| {name} | {seconds} |" for name, seconds in bench.timings.items()),
        f"| **total** | **{total}** |",
        "",
    ]
    out.write_text("\n".join(lines))
    return summary
