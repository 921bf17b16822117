"""The signing keys of a trusted IdP: inline, or fetched from its JWKS URL and cached.

The cache is Django's (Redis in production), shared by every worker, so all nodes see the same
keys and an admin's change of the URL takes effect everywhere. A key id not in the cached set
triggers one refetch (the IdP rotated its keys), at most every ``REFETCH_SECONDS`` per IdP so
that assertions with made-up key ids cannot make us hammer the IdP. A failed fetch is remembered
for as long, so that an IdP outage does not cost every assertion (and a worker) a fetch, and a
fetch never takes longer than ``FETCH_DEADLINE_SECONDS`` in all.
"""

from __future__ import annotations

import hashlib
import json
import time

import jwt
import requests
from django.core.cache import cache

from identity.models import TrustedIdentityProvider, jwks_url_problem

CACHE_SECONDS = 300
REFETCH_SECONDS = 30
FETCH_TIMEOUT_SECONDS = 5  # to connect, and between two reads
FETCH_DEADLINE_SECONDS = 8  # the whole fetch (a trickling answer is cut off)
READ_CHUNK = 8192
MAX_JWKS_BYTES = 64 * 1024


class KeysUnavailable(Exception):
    """The IdP's keys could not be fetched or parsed."""


def _cache_key(url: str, kind: str) -> str:
    return f"identity:jwks:{kind}:{hashlib.sha256(url.encode()).hexdigest()}"


def _fetch(url: str) -> dict:
    """The JWK Set at ``url``, fetched and cached; a failure is cached too (for REFETCH_SECONDS)."""
    failed = cache.get(_cache_key(url, "failed"))
    if failed is not None:
        raise KeysUnavailable(failed)
    try:
        document = _download(url)
    except KeysUnavailable as error:
        cache.set(_cache_key(url, "failed"), str(error), REFETCH_SECONDS)
        raise
    cache.set(_cache_key(url, "set"), document, CACHE_SECONDS)
    return document


def _download(url: str) -> dict:
    # Checked again at fetch time, by resolving the name: clean() can only judge literal addresses.
    if problem := jwks_url_problem(url, resolve=True):
        raise KeysUnavailable(f"{url}: {problem}")
    deadline = time.monotonic() + FETCH_DEADLINE_SECONDS
    try:
        with requests.get(url, timeout=FETCH_TIMEOUT_SECONDS, allow_redirects=False, stream=True) as response:
            if response.status_code != 200:
                raise KeysUnavailable(f"{url} answered {response.status_code}")
            body = b""
            for chunk in response.iter_content(READ_CHUNK):
                body += chunk
                if len(body) > MAX_JWKS_BYTES or time.monotonic() > deadline:
                    raise KeysUnavailable(f"{url} answered too much or too slowly")
    except requests.RequestException as error:
        raise KeysUnavailable(f"fetching {url}: {error.__class__.__name__}") from None
    try:
        document = json.loads(body)
        jwt.PyJWKSet.from_dict(document)
    except (ValueError, jwt.PyJWKError, jwt.InvalidKeyError) as error:
        raise KeysUnavailable(f"{url} is not a JWK Set: {error}") from None
    return document


def _published_keys(provider: TrustedIdentityProvider, kid: str | None) -> list[dict]:
    if provider.jwks:
        return provider.jwks["keys"]
    url = provider.jwks_url
    document = cache.get(_cache_key(url, "set"))
    if document is None:
        document = _fetch(url)
    elif kid and kid not in {key.get("kid") for key in document.get("keys", [])}:
        if cache.add(_cache_key(url, "refetched"), True, REFETCH_SECONDS):
            try:
                document = _fetch(url)
            except KeysUnavailable:
                pass  # the keys we have still serve; the unknown kid finds none among them
    return document.get("keys", [])


def signing_key(provider: TrustedIdentityProvider, header: dict) -> jwt.PyJWK | None:
    """The IdP's key that ``header`` (a JWS header) names, for its ``alg``; None if it has none.

    Without a ``kid`` the IdP must publish exactly one signing key usable with that ``alg``.
    """
    kid, alg = header.get("kid"), header.get("alg")
    candidates = [
        key
        for key in _published_keys(provider, kid)
        if (kid is None or key.get("kid") == kid)
        and key.get("use", "sig") == "sig"
        and key.get("alg", alg) == alg
    ]
    if len(candidates) != 1:
        return None
    try:
        return jwt.PyJWK(candidates[0], algorithm=alg)
    except (jwt.PyJWKError, jwt.InvalidKeyError):
        return None  # e.g. an RSA key named by an ES256 header
