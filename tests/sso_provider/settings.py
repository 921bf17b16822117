"""A second instance of this console's own OpenID provider (DOT with OIDC), for the SSO tests:
its own SQLite database and signing key, served by gunicorn on another port. Test-only: plain
OIDC clients use DOT's stock authorization view (the console's consent page is for MCP agents and
requires a ``resource``) and a validator that adds a ``groups`` claim."""

import os

from console.test_settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["SSO_PROVIDER_DB"],
        # A throwaway database: no fsync (migrating it takes seconds, not half a minute).
        "OPTIONS": {"init_command": "PRAGMA synchronous=OFF; PRAGMA journal_mode=MEMORY;"},
    }
}
ROOT_URLCONF = "tests.sso_provider.urls"
OAUTH2_PROVIDER = {
    **OAUTH2_PROVIDER,  # noqa: F405
    "OAUTH2_VALIDATOR_CLASS": "tests.sso_provider.validator.GroupsClaimValidator",
    "SCOPES_BACKEND_CLASS": "oauth2_provider.scopes.SettingsScopes",
    "SCOPES": {"openid": "OpenID", "email": "E-mail", "profile": "Profile"},
    "DEFAULT_SCOPES": ["openid"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code"],
}
