"""
DOT's request validator, bound to delegations.

DOT does the OAuth work (PKCE, code and refresh handling, hashed storage, RFC 8707 narrowing);
this subclass only ties every grant and token to the delegation behind it and asks the policy
decision before a token is minted.
"""

from __future__ import annotations

from django.utils import timezone
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.oauth2.rfc6749 import errors

from audit.events import record
from policies.decisions import decide
from policies.models import Grant, RefreshToken
from policies.oauth.resources import requested_resources, server_for_resource, target_error_description


class PolicyValidator(OAuth2Validator):
    def validate_code(self, client_id, code, client, request, *args, **kwargs) -> bool:
        grant = (
            Grant.objects.select_related("delegation__server").filter(code=code, application=client).first()
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
            return False
        self._bind_to_delegation(request, request.refresh_token_instance.delegation)
        return True

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
