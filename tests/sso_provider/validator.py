"""DOT's stock validator, plus the human's groups at this provider as a ``groups`` claim (in the ID
token and at userinfo), as enterprise IdPs send them."""

from oauth2_provider.oauth2_validators import OAuth2Validator


class GroupsClaimValidator(OAuth2Validator):
    # DOT releases a claim only with the scope it belongs to: groups come with "profile".
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "groups": "profile"}

    def get_additional_claims(self, request):
        user = request.user
        return {
            "groups": sorted(user.groups.values_list("name", flat=True)),
            "preferred_username": user.get_username(),
            "email": user.email,
            # The console takes an address only when the provider vouches for it.
            "email_verified": True,
        }
