"""A local enterprise identity provider for the ID-JAG tests: its own RSA key, its JWKS served by a
real HTTP server on a loopback port, and the ID-JAGs it signs (as an IdP signs them after its leg-1
token exchange, which is the IdP's business and not the console's)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jwcrypto import jwk, jwt

from identity.models import GroupMapping, TrustedIdentityProvider

ID_JAG_TYPE = "oauth-id-jag+jwt"


class IdpStandIn:
    """Signs ID-JAGs with its own key; ``issuer`` is its loopback URL, where ``/jwks.json`` lives."""

    def __init__(self, issuer: str, key: jwk.JWK | None = None) -> None:
        self.issuer = issuer
        self.key = key or jwk.JWK.generate(kty="RSA", size=2048, kid=uuid.uuid4().hex[:8], use="sig")
        self.jwks_fetches = 0

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks.json"

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [json.loads(self.key.export_public())]}

    def id_jag(
        self,
        *,
        sub: str,
        client_id: str,
        audience: str,
        resource: str | list[str] | None,
        scope: str | None = None,
        lifetime: int = 300,
        typ: str = ID_JAG_TYPE,
        key: jwk.JWK | None = None,
        **claims: Any,
    ) -> str:
        """A signed ID-JAG; ``claims`` adds or overrides claims (None removes one)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": audience,
            "client_id": client_id,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + lifetime,
            "resource": resource,
            "scope": scope,
            **claims,
        }
        payload = {name: value for name, value in payload.items() if value is not None}
        signer = key or self.key
        token = jwt.JWT(header={"alg": "RS256", "typ": typ, "kid": signer.key_id}, claims=payload)
        token.make_signed_token(signer)
        return token.serialize()

    def trust(
        self, name: str = "acme-idp", mappings: dict[str, str] | None = None
    ) -> TrustedIdentityProvider:
        """Register this IdP in the console, by its JWKS URL, with ``{idp group: policy group}``."""
        from django.contrib.auth.models import Group

        provider = TrustedIdentityProvider(name=name, issuer=self.issuer, jwks_url=self.jwks_url)
        provider.full_clean()
        provider.save()
        for idp_group, group_name in (mappings or {}).items():
            group, _ = Group.objects.get_or_create(name=group_name)
            GroupMapping.objects.create(provider=provider, idp_group=idp_group, group=group)
        return provider


@contextmanager
def running_idp() -> Iterator[IdpStandIn]:
    """An IdP stand-in serving its JWKS on a free loopback port while the block runs."""
    holder: dict[str, IdpStandIn] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            idp = holder["idp"]
            if self.path != "/jwks.json":
                self.send_error(404)
                return
            idp.jwks_fetches += 1
            body = json.dumps(idp.public_jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["idp"] = IdpStandIn(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["idp"]
    finally:
        server.shutdown()
        server.server_close()
