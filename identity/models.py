"""
Enterprise identity: the identity providers this console trusts, and who they say people are.

- A trusted IdP signs Identity Assertion JWT Authorization Grants (ID-JAG) that agents present at
  the token endpoint (``identity.grant``); its groups map to policy groups (Django groups that
  delegation policies name).
- An external identity links an issuer's subject (``iss`` + ``sub``) to one human, whichever door
  (ID-JAG or console SSO) saw it first. People are never matched by e-mail or username, so an IdP
  cannot take over a local (break-glass) account by claiming its name.
- A used assertion is remembered until it expires, so that an ID-JAG serves once (``jti``); the
  unique constraint holds across workers.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from urllib.parse import urlsplit

import jwt
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from console.roles import is_role_group
from policies.models import LOOPBACK_HOSTS

# Asymmetric algorithms only: a shared secret would let anyone holding it forge assertions.
SIGNING_ALGORITHMS = [
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
]
PRIVATE_KEY_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


def fetchable_address(address: str) -> bool:
    """Whether the console may fetch keys from ``address`` (an IP): a public one, or loopback where
    ``IDENTITY_ALLOW_LOOPBACK_JWKS`` (development and tests) allows it. Private, link-local (cloud
    metadata), reserved and multicast addresses are refused: an admin's JWKS URL must not make the
    console probe its own network."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return settings.IDENTITY_ALLOW_LOOPBACK_JWKS
    return ip.is_global and not ip.is_multicast


def jwks_url_problem(url: str, *, resolve: bool) -> str | None:
    """Why the console must not fetch keys from ``url``, or None. ``resolve``: also look the host
    name up (at fetch time); otherwise only a literal address or a loopback name is judged."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    loopback_name = host in LOOPBACK_HOSTS
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback_name):
        return "Keys are fetched over https (http on loopback only, in development and tests)."
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        if loopback_name:
            addresses = ["127.0.0.1"]
        elif resolve:
            try:
                addresses = [info[4][0] for info in socket.getaddrinfo(host, parts.port or 443)]
            except (OSError, UnicodeError):
                return f"{host} does not resolve."
        else:
            return None
    if not all(fetchable_address(address) for address in addresses):
        return "Keys are not fetched from private, link-local, loopback or reserved addresses."
    return None


def validate_public_jwks(value: object) -> None:
    """An inline JWK Set of public keys only (a pasted private key is refused, not stored)."""
    if value in (None, "", {}):
        return
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise ValidationError('A JWK Set: {"keys": [...]} with at least one key.')
    for key in value["keys"]:
        if not isinstance(key, dict):
            raise ValidationError("Each key is a JSON object.")
        if PRIVATE_KEY_MEMBERS & set(key):
            raise ValidationError("Paste the IdP's public keys only: this set holds a private key.")
    try:
        jwt.PyJWKSet.from_json(json.dumps(value))
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError) as error:
        raise ValidationError(f"Not a usable JWK Set: {error}") from None


class TrustedIdentityProvider(models.Model):
    """An enterprise IdP whose ID-JAGs this console honours."""

    name = models.CharField(max_length=100, unique=True)
    issuer = models.CharField(
        max_length=255,
        unique=True,
        help_text="The IdP's issuer identifier, exactly as its assertions' iss claim carries it.",
    )
    jwks_url = models.URLField(
        blank=True, help_text="Where the IdP publishes its signing keys (https, or http on loopback)."
    )
    jwks = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_public_jwks],
        help_text='Or its public keys inline, as a JWK Set: {"keys": [...]}.',
    )
    algorithms = models.CharField(
        max_length=100,
        default="RS256 ES256",
        help_text=f"Accepted signing algorithms, space-separated: {' '.join(SIGNING_ALGORITHMS)}.",
    )
    groups_claim = models.CharField(
        max_length=100, default="groups", help_text="The claim that lists the human's groups at the IdP."
    )
    active = models.BooleanField(default=True, help_text="Off: its assertions are refused.")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "trusted identity provider"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def algorithm_list(self) -> list[str]:
        return self.algorithms.split()

    def clean(self) -> None:
        super().clean()
        unknown = set(self.algorithm_list) - set(SIGNING_ALGORITHMS)
        if unknown or not self.algorithm_list:
            raise ValidationError({"algorithms": f"Choose among {' '.join(SIGNING_ALGORITHMS)}."})
        if bool(self.jwks_url) == bool(self.jwks):
            raise ValidationError("Give either a JWKS URL or inline keys, not both nor neither.")
        if self.jwks_url and (problem := jwks_url_problem(self.jwks_url, resolve=False)):
            raise ValidationError({"jwks_url": problem})
        if self.issuer != self.issuer.strip() or not self.issuer:
            raise ValidationError({"issuer": "The issuer is compared as an exact string: no spaces."})
        if settings.OIDC_OP_ISSUER and self.issuer == settings.OIDC_OP_ISSUER:
            # Its subjects are the console's SSO humans (staff among them): keys an admin pastes
            # here must not let anyone sign assertions in their names.
            raise ValidationError(
                {"issuer": "This is the console's SSO issuer; it cannot also be trusted for ID-JAGs."}
            )


class GroupMapping(models.Model):
    """Humans in ``idp_group`` at the IdP are members of the policy group ``group`` here."""

    provider = models.ForeignKey(
        TrustedIdentityProvider, on_delete=models.CASCADE, related_name="group_mappings"
    )
    idp_group = models.CharField(max_length=255, help_text="The group's name as the groups claim lists it.")
    group = models.ForeignKey(
        "auth.Group",
        on_delete=models.CASCADE,
        related_name="+",
        help_text="A policy group (the group delegation policies name).",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "idp_group", "group"], name="unique_group_mapping")
        ]

    def __str__(self) -> str:
        return f"{self.idp_group} → {self.group}"

    def clean(self) -> None:
        super().clean()
        # An agent presents the assertion: it must not be able to make anyone a console admin.
        if self.group_id and is_role_group(self.group):
            raise ValidationError(
                {"group": "Console roles are not granted by assertions; map a policy group."}
            )


class ExternalIdentity(models.Model):
    """The human an issuer's subject is, here."""

    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="external_identities"
    )
    # The door that linked it: a trusted IdP, or none for the console SSO. Only that door finds the
    # human through it; removing the IdP removes its links (a new IdP with the same issuer starts
    # afresh rather than inheriting them).
    provider = models.ForeignKey(
        TrustedIdentityProvider,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="external_identities",
        help_text="The trusted IdP that linked this subject; empty: the console's SSO.",
    )
    created = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "external identities"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="unique_external_identity")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class UsedAssertion(models.Model):
    """An ID-JAG already presented: kept until it expires, so it never serves twice."""

    issuer = models.CharField(max_length=255)
    jti = models.CharField(max_length=255)
    expires = models.DateTimeField(db_index=True)
    used = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "jti"], name="unique_used_assertion")]

    def __str__(self) -> str:
        return f"{self.jti} from {self.issuer}"
