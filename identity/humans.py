"""Humans as identity providers assert them: found by issuer + subject, created on first sight,
and their groups kept to what the IdP says, for the groups a mapping manages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import IntegrityError, transaction

from audit.events import record
from console.roles import is_role_group
from identity.models import ExternalIdentity, TrustedIdentityProvider

USERNAME_CHARACTERS = re.compile(r"[^\w.@+-]")
MAX_USERNAME = 150
MAX_EMAIL = 254


def _free_username(wanted: str) -> str:
    """``wanted`` as a valid username, suffixed when a local account already has it: an IdP never
    gets a local account by naming it."""
    user_model = get_user_model()
    base = USERNAME_CHARACTERS.sub("_", wanted)[: MAX_USERNAME - 8] or "user"
    candidate, n = base, 1
    while user_model._default_manager.filter(username=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


class SubjectLinkedElsewhere(Exception):
    """The issuer's subject is linked through another door (the console SSO or another trusted
    IdP): this one does not inherit it."""


def verified_email(claims: Mapping) -> str:
    """The e-mail address the IdP vouches for (``email_verified`` true), else "": approvers are
    notified at it, so an unverified claim never sets it."""
    email = claims.get("email")
    if claims.get("email_verified") is not True or not isinstance(email, str):
        return ""
    if "\x00" in email or len(email) > MAX_EMAIL:
        return ""
    return email


def human_for(
    issuer: str,
    subject: str,
    claims: Mapping,
    *,
    via: str,
    provider: TrustedIdentityProvider | None = None,
) -> AbstractBaseUser:
    """The human ``subject`` of ``issuer`` is here: linked before, or created now (no password).

    ``provider``: the trusted IdP asserting it, None for the console SSO. A link belongs to the door
    that made it, so that an IdP given the SSO's issuer string (or a later IdP reusing a removed
    one's issuer) cannot act as the humans it did not link.
    """
    for _attempt in range(3):
        link = ExternalIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
        if link is not None:
            if link.provider_id != (provider.pk if provider else None):
                raise SubjectLinkedElsewhere(f"{subject} at {issuer}")
            link.save(update_fields=["last_seen"])
            return link.user
        wanted = claims.get("preferred_username") or claims.get("email") or subject
        try:
            with transaction.atomic():
                user = get_user_model().objects.create_user(
                    _free_username(str(wanted)), email=verified_email(claims)
                )
                ExternalIdentity.objects.create(issuer=issuer, subject=subject, user=user, provider=provider)
        except IntegrityError:
            # Another request took the username, or provisioned the same subject, at the same
            # moment: look again (their link, or the next free username).
            continue
        record(
            "identity.provisioned",
            outcome="allow",
            human=user,
            detail={"issuer": issuer, "subject": subject, "via": via},
        )
        return user
    raise IntegrityError(f"Could not provision {subject} at {issuer}: usernames kept clashing.")


def claimed_groups(claims: Mapping, claim: str) -> set[str]:
    """The IdP groups a claim lists (a list of names, or one name); anything else is no group."""
    value = claims.get(claim)
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}
    return set()


def sync_groups(
    human: AbstractBaseUser, idp_groups: Iterable[str], mapping: Mapping[str, Iterable[Group]]
) -> dict[str, list[str]]:
    """Make ``human`` a member of exactly the mapped groups their IdP groups lead to.

    Only groups some mapping names are managed: the IdP adds them and, when a group leaves the
    claim, takes them away; groups an admin gave by hand and no mapping names stay. Returns what
    changed, by group name.
    """
    managed = {group for groups in mapping.values() for group in groups}
    wanted = {group for name in set(idp_groups) for group in mapping.get(name, ())}
    current = set(human.groups.filter(pk__in=[g.pk for g in managed]))
    added, removed = wanted - current, current - wanted
    if added:
        human.groups.add(*added)
    if removed:
        human.groups.remove(*removed)
    return {"added": sorted(g.name for g in added), "removed": sorted(g.name for g in removed)}


def staff_follows_roles(human: AbstractBaseUser) -> None:
    """Console roles need staff status, and a human left with no role loses it (superusers keep it)."""
    has_role = any(is_role_group(group) for group in human.groups.all())
    is_staff = human.is_superuser or has_role
    if human.is_staff != is_staff:
        human.is_staff = is_staff
        human.save(update_fields=["is_staff"])
