"""Load generators: wrk at fixed concurrency, and an open-loop generator at a fixed rate.

wrk (Debian's package) is closed-loop: each connection sends its next request when the answer
came, so it finds the peak rate. Latency at a given rate needs an open loop instead (wrk2 is not
in Debian): ``python -m bench.load paced`` sends requests on a fixed schedule, each on a fresh
connection, and times each from the moment it was due, so a slow answer delays nothing else and
is not hidden (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

LUA_DIR = Path(__file__).resolve().parent / "lua"
THREADS, CONNECTIONS = 2, 8


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    # Answers with a status >= 400 (wrk's "non-2xx or 3xx") and socket errors/timeouts.
    bad_status: int
    socket_errors: int
    statuses: dict[str, int]  # answers by HTTP status

    def as_dict(self) -> dict:
        return asdict(self)


def wrk(url: str, script: str, env: dict[str, str], duration: int) -> Result:
    """One wrk run of ``duration`` seconds, -t2 -c8; ``env`` feeds the Lua script."""
    command = [
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{duration}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA_DIR / script),
        url,
    ]
    full_env = {**os.environ, **env, "BENCH_LUA_DIR": str(LUA_DIR), "BENCH_THREADS": str(THREADS)}
    done = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    seconds = raw["duration_us"] / 1e6
    return Result(
        rps=raw["requests"] / seconds,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        requests=raw["requests"],
        bad_status=raw["status"],
        socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        statuses=raw["statuses"],
    )


def median_result(results: list[Result]) -> Result:
    """The median of several runs, figure by figure."""
    return Result(
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        requests=sum(r.requests for r in results),
        bad_status=sum(r.bad_status for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        statuses=dict(sum((Counter(r.statuses) for r in results), Counter())),
    )


# --- Open loop at a fixed rate --------------------------------------------------------------------


def http_request(url: str, body: str, headers: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    lines = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Connection: close",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body.encode())}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


async def _paced(url: str, rate: float, duration: float, payloads: list[bytes]) -> dict:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failures = 0

    async def one(payload: bytes, due: float) -> None:
        nonlocal failures
        try:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(payload)
            answer = await reader.read()
            writer.close()
            ok = answer.startswith(b"HTTP/1.1 2") or answer.startswith(b"HTTP/1.0 2")
        except OSError:
            ok = False
        if ok:
            latencies.append(loop.time() - due)
        else:
            failures += 1

    start = loop.time() + 0.05
    count = int(rate * duration)
    tasks = []
    for n in range(count):
        due = start + n / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(payloads[n % len(payloads)], due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else 0.0

    return {
        "rate": rate,
        "sent": count,
        "ok": len(latencies),
        "failures": failures,
        "achieved_rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(50),
        "p99_ms": percentile(99),
        "max_ms": latencies[-1] * 1000 if latencies else 0.0,
    }


def paced(url: str, rate: float, duration: int, bodies_file: Path, headers: dict[str, str]) -> dict:
    """Run the open-loop generator in its own process; its figures as a dict."""
    command = [sys.executable, "-m", "bench.load", "paced", url, str(rate), str(duration), str(bodies_file)]
    env = {**os.environ, "BENCH_HEADERS": json.dumps(headers)}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=duration + 120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("mode", choices=["paced"])
    parser.add_argument("url")
    parser.add_argument("rate", type=float)
    parser.add_argument("duration", type=int)
    parser.add_argument("bodies", type=Path)
    args = parser.parse_args()
    headers = json.loads(os.environ.get("BENCH_HEADERS", "{}"))
    payloads = [http_request(args.url, body, headers) for body in args.bodies.read_text().splitlines()]
    print(json.dumps(asyncio.run(_paced(args.url, args.rate, args.duration, payloads))))


if __name__ == "__main__":
    main()
