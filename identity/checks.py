"""Start-up checks of the SSO settings: OIDC_GROUP_MAP must name console groups as they are spelt."""

from __future__ import annotations

import difflib

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from console.roles import Role


@register()
def group_map_names_roles_exactly(app_configs=None, **kwargs) -> list[CheckMessage]:
    """A name in OIDC_GROUP_MAP close to a role's but not it (``"Security admin"``) is a typo that
    would quietly grant nothing: refused at start-up. Other names are policy groups, which must
    exist (SSO never creates one; identity.sso.mapped_groups logs and skips a missing one)."""
    roles = [role.value for role in Role]
    errors: list[CheckMessage] = []
    for idp_group, names in settings.OIDC_GROUP_MAP.items():
        for name in names:
            if name in roles:
                continue
            close = difflib.get_close_matches(name, roles, n=1, cutoff=0.8) or [
                role for role in roles if role.lower() == name.lower()
            ]
            if close:
                errors.append(
                    Error(
                        f"OIDC_GROUP_MAP maps {idp_group!r} to {name!r}, which is not a console role.",
                        hint=f"Did you mean {close[0]!r}? Role names are exact.",
                        id="identity.E001",
                    )
                )
    return errors
