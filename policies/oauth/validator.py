"""
DOT's request validator, bound to delegations.

DOT does the OAuth work (PKCE, code and refresh handling, hashed storage, RFC 8707 narrowing);
this subclass only ties every grant and token to the delegation behind it and asks the policy
decision before a token is minted.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from oauth2_provider.cimd import is_cimd_client_id
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.oauth2.rfc6749 import errors

from audit.events import record
from policies.decisions import decide
from policies.models import AccessToken, Agent, Delegation, Grant, RefreshToken
from policies.oauth.registration import agent_changed
from policies.oauth.resources import requested_resources, server_for_resource, target_error_description
from policies.revocation import revoke_derived_tokens
from policies.tokens import token_actors

# Tokens a revocation can still change: access tokens exist until revoked, refresh tokens are kept.
REVOCABLE = {AccessToken: {}, RefreshToken: {"revoked__isnull": True}}


class PolicyValidator(OAuth2Validator):
    def _load_application(self, client_id, request):
        """DOT's lookup, which re-fetches a stale CIMD document and updates the agent from it: a
        changed name or redirect URIs is treated as an RFC 7592 change (recorded; re-approved where
        approval is required, so this request already finds the agent unusable)."""
        if not is_cimd_client_id(client_id) or request.client:
            return super()._load_application(client_id, request)
        before = Agent.objects.filter(client_id=client_id, registration_source=Agent.RegistrationSource.CIMD)
        before = before.values("name", "redirect_uris").first()
        client = super()._load_application(client_id, request)
        if client is None or before is None:
            return client
        changed = sorted(key for key, value in before.items() if getattr(client, key) != value)
        if changed and agent_changed(None, client, before, changed) != Agent.Status.ACTIVE:
            request.client = None
            return None
        return client

    def validate_code(self, client_id, code, client, request, *args, **kwargs) -> bool:
        grant = (
            Grant.objects.select_related("delegation__server", "delegation__human")
            .filter(code=code, application=client)
            .first()
        )
        if grant is None:
            return False
        if grant.consumed is not None:
            self._revoke_what_a_replayed_code_minted(grant, request)
            return False
        if not super().validate_code(client_id, code, client, request, *args, **kwargs):
            return False
        self._bind_to_delegation(request, grant.delegation)
        # Claimed here, in one conditional UPDATE, so that of two concurrent exchanges of the
        # same code only one mints tokens (DOT deletes the code only after minting).
        return bool(Grant.objects.filter(pk=grant.pk, consumed__isnull=True).update(consumed=timezone.now()))

    def invalidate_authorization_code(self, client_id, code, request, *args, **kwargs) -> None:
        # Kept, not deleted (DOT's cleartokens removes it once expired), so that a replay can find
        # the token family the code started and revoke it (RFC 6749 §4.1.2, RFC 9700 §4.5).
        Grant.objects.filter(code=code, application=request.client).update(
            token_family=getattr(request, "token_family", None)
        )

    def _revoke_what_a_replayed_code_minted(self, grant: Grant, request) -> None:
        RefreshToken.revoke_family(grant.token_family)
        record(
            "authorization_code.replayed",
            outcome="deny",
            reason="code_reused",
            human=grant.user,
            agent=grant.application,
            delegation=grant.delegation,
            server=grant.delegation.server if grant.delegation else None,
        )

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs) -> bool:
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            self._record_refresh_reuse(refresh_token, client)
            return False
        instance = request.refresh_token_instance
        lifetime = client.refresh_token_lifetime
        # The agent's own refresh lifetime, counted as DOT counts the console default: from the
        # expiry of the access token it was paired with (DOT has checked the default already).
        if (
            lifetime is not None
            and instance.access_token.expires + timedelta(seconds=lifetime) <= timezone.now()
        ):
            return False
        # One query for what decide() reads (DOT's instance would fetch each relation in turn).
        delegation = (
            Delegation.objects.select_related("server", "human").filter(pk=instance.delegation_id).first()
        )
        self._bind_to_delegation(request, delegation)
        return True

    def _record_refresh_reuse(self, refresh_token: str, client) -> None:
        """A revoked refresh token presented again: DOT revoked its family; the audit trail says so."""
        checksum = hashlib.sha256(refresh_token.encode("utf-8")).hexdigest()
        reused = (
            RefreshToken.objects.select_related("delegation__server", "user")
            .filter(token_checksum=checksum, application=client, revoked__isnull=False)
            .first()
        )
        if reused is None:
            return
        delegation = reused.delegation
        record(
            "token.refresh_reused",
            outcome="deny",
            reason="refresh_token_reused",
            human=reused.user,
            agent=client,
            server=delegation.server if delegation else None,
            delegation=delegation,
            detail={"refresh_token_id": reused.pk, "token_family": str(reused.token_family or "")},
        )

    def revoke_token(self, token, token_type_hint, request, *args, **kwargs) -> None:
        """RFC 7009 revocation by the agent itself (DOT's /oauth/revoke/), recorded as token.revoked,
        with the tokens exchanged from it (``revoke_derived_tokens``)."""
        checksum = hashlib.sha256(token.encode("utf-8")).hexdigest()
        client_pk = getattr(request.client, "pk", None)
        instance = None
        with transaction.atomic():
            for model in (AccessToken, RefreshToken) if client_pk is not None else ():
                instance = (
                    model.objects.select_related("delegation__server", "user")
                    .filter(token_checksum=checksum, application_id=client_pk, **REVOCABLE[model])
                    .first()
                )
                if instance is not None:
                    break
            if instance is not None:
                is_access = isinstance(instance, AccessToken)
                # The refresh token locked before the access token, in the order DOT's rotation
                # locks them; then the tokens exchanged from the access token end with it.
                pair = {"access_token": instance} if is_access else {"pk": instance.pk}
                RefreshToken.objects.select_for_update().filter(**pair).exists()
                access_id = instance.pk if is_access else instance.access_token_id
                revoke_derived_tokens(AccessToken.objects.filter(pk=access_id), by=None, why="rfc7009")
            super().revoke_token(token, token_type_hint, request, *args, **kwargs)
        if instance is None:
            return  # unknown or another agent's token: RFC 7009 answers 200 all the same
        delegation = instance.delegation
        record(
            "token.revoked",
            outcome="allow",
            reason="rfc7009",
            human=instance.user,
            agent=request.client,
            server=delegation.server if delegation else None,
            delegation=delegation,
            token=instance if is_access else None,
            actors=token_actors(instance) if is_access else None,
            detail={"token_type": "access_token" if is_access else "refresh_token"},
        )

    def _save_bearer_token(self, token, request, *args, **kwargs):
        # The agent's own access token lifetime; DOT reads expires_in from this dict, and the
        # token response is this same dict, so the agent is told the real lifetime.
        lifetime = request.client.access_token_lifetime
        if lifetime is not None:
            token["expires_in"] = lifetime
        previous = getattr(request, "refresh_token_instance", None)
        rotated = isinstance(previous, RefreshToken) and self.rotate_refresh_token(request)
        if token.get("refresh_token") and rotated:
            # Rotation deletes the previous access token: the tokens exchanged from it end with it,
            # recorded. Locked refresh token first, in the order DOT locks them next (same transaction).
            locked = RefreshToken.objects.select_for_update().filter(pk=previous.pk)
            access_id = locked.values_list("access_token_id", flat=True).first()
            revoke_derived_tokens(AccessToken.objects.filter(pk=access_id), by=None, why="refresh")
        return super()._save_bearer_token(token, request, *args, **kwargs)

    def _bind_to_delegation(self, request, delegation) -> None:
        """The new token hangs off ``delegation``: it must name its server and still be allowed.

        Checked while oauthlib validates the token request, so refusals get the RFC 6749 error
        response. A token request may omit ``resource``: DOT then inherits it from the code or
        refresh token, bound to one server when the human consented.
        """
        if delegation is None:
            raise errors.InvalidGrantError(
                description="The grant is not bound to a delegation.", request=request
            )
        resources = requested_resources(request)
        if resources:
            server = server_for_resource(resources)
            if server is None or server.pk != delegation.server_id:
                raise errors.CustomOAuth2Error(
                    error="invalid_target",
                    description=target_error_description(resources)
                    if server is None
                    else "The resource differs from the MCP server the human delegated to.",
                    request=request,
                )
        decision = decide(agent=request.client, server=delegation.server, delegation=delegation)
        if not decision.allowed:
            raise errors.InvalidGrantError(
                description=f"The delegation does not allow new tokens ({decision.reason}).", request=request
            )
        request.delegation = delegation

    def _create_authorization_code(self, request, code, expires=None):
        grant = super()._create_authorization_code(request, code, expires)
        grant.delegation = request.delegation
        grant.save(update_fields=["delegation"])
        return grant

    def _create_access_token(self, expires, request, token, source_refresh_token=None):
        access_token = super()._create_access_token(expires, request, token, source_refresh_token)
        access_token.delegation = request.delegation
        access_token.save(update_fields=["delegation"])
        record(
            "token.refreshed" if request.grant_type == "refresh_token" else "token.issued",
            outcome="allow",
            human=request.user,
            agent=request.client,
            server=request.delegation.server,
            delegation=request.delegation,
            token=access_token,
            detail={"scope": access_token.scope},
        )
        return access_token

    def _create_refresh_token(self, request, refresh_token_code, access_token, previous_refresh_token):
        refresh_token = super()._create_refresh_token(
            request, refresh_token_code, access_token, previous_refresh_token
        )
        refresh_token.delegation = request.delegation
        refresh_token.save(update_fields=["delegation"])
        request.token_family = refresh_token.token_family
        return refresh_token
