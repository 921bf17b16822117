"""Revocation under load: ``python -m bench.revocation CONFIG`` (run while wrk loads the console).

For each token, in random order, for at most ``seconds``: introspect it (it must be active, and
a cache may now hold it), revoke it through the agent's own door (RFC 7009, POST /oauth/revoke/),
and as soon as that returned, introspect it again twice, each time on a fresh connection (so
possibly on another worker). Any "active" answer after the revocation returned is stale. Prints
the counts as JSON.
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import time
from urllib.parse import urlencode, urlsplit

CHECKS_AFTER_REVOCATION = 2


def post(base_url: str, path: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]:
    """One POST on a fresh connection (never a kept-alive one)."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(
            "POST",
            path,
            urlencode(form),
            {"Content-Type": "application/x-www-form-urlencoded", "Connection": "close", **headers},
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def check(config: dict) -> dict[str, int]:
    tokens = list(config["tokens"])
    random.shuffle(tokens)
    auth = {"Authorization": config["server_authorization"]}
    context = {"tool": config["tool"], "action": config["action"]}
    counts = {
        "tokens": len(tokens),
        "active_before": 0,
        "revoked": 0,
        "checks_after": 0,
        "stale": 0,
        "errors": 0,
    }

    def active(token: str) -> bool | None:
        status, body = post(config["base_url"], "/oauth/introspect/", {"token": token, **context}, auth)
        return json.loads(body).get("active") if status == 200 else None

    deadline = time.monotonic() + config["seconds"]
    for token in tokens:
        if time.monotonic() > deadline:
            break
        counts["active_before"] += active(token) is True
        status, _ = post(
            config["base_url"], "/oauth/revoke/", {"token": token, "client_id": config["agent"]}, {}
        )
        if status != 200:
            counts["errors"] += 1
            continue
        counts["revoked"] += 1
        for _ in range(CHECKS_AFTER_REVOCATION):
            answer = active(token)
            counts["checks_after"] += 1
            counts["stale"] += answer is True
            counts["errors"] += answer is None
    return counts


if __name__ == "__main__":
    with open(sys.argv[1]) as file:
        print(json.dumps(check(json.load(file))))
