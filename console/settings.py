"""
Settings, read from the environment (12-factor).

Production is the default: DEBUG off, secure cookies, HSTS, and SECRET_KEY, CONSOLE_ISSUER and
the OIDC signing key must be given. ``DJANGO_DEBUG=1`` (what ``make run`` sets) switches to a
self-contained development setup: SQLite file, local-memory cache, Celery tasks run inline and
a signing key generated into ``var/``.
"""

import ipaddress
import json
import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.conf import global_settings
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.retry import Retry

from console.keys import load_or_create_rsa_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CONSOLE_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set (or DJANGO_DEBUG=1 for development).")
    SECRET_KEY = "dev-only-insecure-key-" + "x" * 40

# The one issuer string of this authorization server: metadata `issuer`, the RFC 9207 `iss`
# authorization response parameter and introspection `iss`. MCP clients compare it as a plain
# string, so it never carries a trailing slash.
ISSUER = os.environ.get("CONSOLE_ISSUER", "http://127.0.0.1:8000" if DEBUG else "").rstrip("/")
if not ISSUER:
    raise ImproperlyConfigured("CONSOLE_ISSUER must be set, e.g. https://console.example.com")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
if not ALLOWED_HOSTS:
    from urllib.parse import urlsplit

    ALLOWED_HOSTS = [urlsplit(ISSUER).hostname]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", ISSUER)

INSTALLED_APPS = [
    # The admin theme; must come before django.contrib.admin.
    "unfold",
    "unfold.contrib.filters",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "oauth2_provider",
    "auditlog",
    # Login lockout, the CSP header, and TOTP devices for console staff (console.security).
    "axes",
    "csp",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "console",
    "policies",
    "audit",
    "identity",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy and Permissions-Policy on every response.
    "console.security.ConsoleCSPMiddleware",
    "console.middleware.RejectUnstorableTextMiddleware",
    # Client address, user agent and correlation id for every audit event of the request.
    "audit.middleware.RequestMetadataMiddleware",
    # PostgreSQL down or restarting: a 503 with Retry-After (OAuth error JSON at protocol doors), not
    # a 500; inside RequestMetadataMiddleware so the 503 still carries X-Request-ID.
    "console.outages.DatabaseOutageMiddleware",
    # Request size limits, and per-caller rate limits on token, registration, login, introspection.
    "console.limits.LimitsMiddleware",
    # Serves the admin's static files under gunicorn, with no proxy configuration.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # SSO sessions are re-checked at the provider every OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS, so that
    # roles removed there end in open sessions; before the 2FA gate, which the session keeps.
    "identity.sso.SsoSessionRefresh",
    # Console staff verify a TOTP device (or a recovery code) before any console page or API call.
    "console.security.StaffTwoFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    # Last, as django-axes requires: refuses logins of a locked-out username.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
    # Health checks: a connection a PostgreSQL restart closed is replaced at the next request, so web
    # nodes recover by themselves. connect_timeout (libpq's, so PostgreSQL only): an unreachable
    # database is a prompt 503 (console.outages), not a request hanging until gunicorn kills its worker.
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
            "connect_timeout", int(os.environ.get("DATABASE_CONNECT_TIMEOUT", 5))
        )
elif DEBUG:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "console.sqlite3"}}
else:
    raise ImproperlyConfigured("DATABASE_URL must be set (or DJANGO_DEBUG=1 for development).")

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Introspection answers, shared by every worker (policies.introspection); 0 turns the cache off.
# Short timeouts and no retries (redis-py retries for seconds by default): with Redis unreachable
# a call costs little more, and PostgreSQL answers. Without Redis there is no cache: one
# process's memory would miss another's revocations.
INTROSPECTION_CACHE_SECONDS = int(os.environ.get("INTROSPECTION_CACHE_SECONDS", 300))
INTROSPECTION_CACHE_OPTIONS = {
    "SOCKET_CONNECT_TIMEOUT": 0.25,
    "SOCKET_TIMEOUT": 0.25,
    "CONNECTION_POOL_KWARGS": {"retry": Retry(NoBackoff(), 0)},
    # Its own pool, and each new connection renews the console generation (a Redis restarted from
    # an older snapshot, or a promoted replica, serves no answer from before a revocation).
    "CONNECTION_FACTORY": "policies.introspection.ConnectionFactory",
}
CACHES["introspection"] = (
    {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": INTROSPECTION_CACHE_OPTIONS,
    }
    if REDIS_URL and INTROSPECTION_CACHE_SECONDS > 0
    else {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}
)

CELERY_BROKER_URL = REDIS_URL or "memory://"
# Tasks run inline without Redis (make run) and in the tests, unless a test starts a real worker.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BEAT_SCHEDULE = {
    # Delegations past their policy's longest lifetime end, with their tokens; pending ones no
    # approver decided within DELEGATION_APPROVAL_TIMEOUT_HOURS expire.
    "expire-delegations": {"task": "policies.tasks.expire_delegations_task", "schedule": 300.0},
}

# Who is emailed about delegations waiting for approval (comma-separated); empty: the emails of
# the users in the Approvers role.
APPROVER_EMAILS = env_list("APPROVER_EMAILS")
# Hours a delegation waits for an approver; then expire_delegations ends it as expired.
DELEGATION_APPROVAL_TIMEOUT_HOURS = float(os.environ.get("DELEGATION_APPROVAL_TIMEOUT_HOURS", 72))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", 25))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "mcp-console@localhost")
if DEBUG and "EMAIL_HOST" not in os.environ:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"  # make run: print emails

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Human passwords: Django's default (PBKDF2). Agents' generated secrets: a fast salted HMAC,
# as strong for random secrets (console.hashers); listed last, so it is never the default.
PASSWORD_HASHERS = [*global_settings.PASSWORD_HASHERS, "console.hashers.ClientSecretHasher"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/admin/"
LOGOUT_REDIRECT_URL = "login"

# Bodies larger than this are refused before any view runs (protocol endpoints take small forms).
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DATA_UPLOAD_MAX_MEMORY_SIZE", 256 * 1024))
# Django's default, kept on purpose: a policy form may tick hundreds of tool actions.
DATA_UPLOAD_MAX_NUMBER_FIELDS = int(os.environ.get("DATA_UPLOAD_MAX_NUMBER_FIELDS", 1000))

# --- Security posture -------------------------------------------------------------------------
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000))
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# __Host- cookies (secure ones only, as browsers require): Secure, Path=/ and no Domain, so no
# sibling subdomain can set or overwrite the console's session or CSRF cookie.
SESSION_COOKIE_NAME = "__Host-sessionid" if SESSION_COOKIE_SECURE else "sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken" if CSRF_COOKIE_SECURE else "csrftoken"

# Content-Security-Policy (django-csp; console.security adds what the admin's Alpine.js needs).
# No form-action: the consent form's answer redirects to the agent's own redirect URI.
from csp.constants import NONCE, NONE, SELF  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        # The console's pages and the admin theme carry style attributes and <style> blocks.
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
    }
}
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()"

# Per-caller rate limits (console.limits), "COUNT/SECONDS", each overridable by RATE_LIMIT_<NAME>.
RATE_LIMITS = {
    name: os.environ.get(f"RATE_LIMIT_{name.upper()}", default)
    for name, default in {
        "token_per_agent": "60/60",
        "token_per_address": "300/60",
        "registration_per_address": "20/3600",
        "login_per_address": "30/60",
        # Second-factor codes: a six-digit code must not be guessable at page speed.
        "two_factor_per_user": "10/300",
        "two_factor_per_address": "30/300",
        "introspection_per_server": "6000/60",
        "introspection_per_address": "12000/60",
    }.items()
}
for _name, _rate in RATE_LIMITS.items():
    if not re.fullmatch(r"[1-9]\d*/[1-9]\d*", _rate):
        raise ImproperlyConfigured(f"RATE_LIMIT_{_name.upper()} must be COUNT/SECONDS, e.g. 60/60: {_rate!r}")
# Their counters: Redis, shared by every worker, on a connection with short timeouts so that a
# Redis that hangs costs little before the limits fail open. Without Redis (make run, one
# process) local memory does.
CACHES["ratelimit"] = (
    {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
    }
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ratelimit"}
)

# Login lockout (django-axes, attempts kept in PostgreSQL): AXES_FAILURE_LIMIT failures of one
# username from one address lock that pair out for AXES_COOLOFF_MINUTES. Locking the pair, not
# the account, keeps a stranger from locking a real user out (so there is no per-username rate
# limit either; SECURITY.md states the accepted risk).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = int(os.environ.get("AXES_FAILURE_LIMIT", 5))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("AXES_COOLOFF_MINUTES", 15)))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "console.security.login_client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "limits/locked_out.html"
AXES_DISABLE_ACCESS_LOG = True  # successful logins are in the audit trail already
AXES_VERBOSE = False  # so are failures and lockouts; axes's own log lines would only repeat them
AXES_ENABLE_ADMIN = False  # unlock with `manage.py axes_reset_username <name>`, or wait the cool-off

# Two-factor authentication: console staff verify a TOTP device (or a one-time recovery code)
# after their password, before any console page or management API call (console.security).
# Off by default only in the DJANGO_DEBUG development mode, where the demo's staff have no phones.
CONSOLE_REQUIRE_2FA = env_bool("CONSOLE_REQUIRE_2FA", not DEBUG)
OTP_TOTP_ISSUER = "MCP Policy Console"
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# --- OAuth 2.1 (django-oauth-toolkit) ---------------------------------------------------------
OAUTH2_PROVIDER_APPLICATION_MODEL = "policies.Agent"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "policies.AccessToken"
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "policies.RefreshToken"
OAUTH2_PROVIDER_GRANT_MODEL = "policies.Grant"
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "policies.IDToken"

OIDC_RSA_PRIVATE_KEY = os.environ.get("OIDC_RSA_PRIVATE_KEY", "")
if not OIDC_RSA_PRIVATE_KEY:
    key_file = os.environ.get("OIDC_RSA_PRIVATE_KEY_FILE")
    if key_file:
        OIDC_RSA_PRIVATE_KEY = Path(key_file).read_text()
    elif DEBUG:
        OIDC_RSA_PRIVATE_KEY = load_or_create_rsa_key(VAR_DIR / "oidc_rsa.pem")
    else:
        raise ImproperlyConfigured("OIDC_RSA_PRIVATE_KEY or OIDC_RSA_PRIVATE_KEY_FILE must be set.")

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

OAUTH2_PROVIDER = {
    "OAUTH2_VALIDATOR_CLASS": "policies.oauth.validator.PolicyValidator",
    "SCOPES_BACKEND_CLASS": "policies.oauth.scopes.ToolScopes",
    "OIDC_ENABLED": True,
    "OIDC_ISS_ENDPOINT": ISSUER,
    "OIDC_RSA_PRIVATE_KEY": OIDC_RSA_PRIVATE_KEY,
    "OIDC_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": AUTH_METHODS,
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": AUTH_METHODS,
    "OAUTH2_GRANT_TYPES_SUPPORTED": [
        "authorization_code",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:token-exchange",  # RFC 8693: policies.oauth.token_exchange
        "urn:ietf:params:oauth:grant-type:jwt-bearer",  # RFC 7523 carrying an ID-JAG: identity.grant
    ],
    # Every RFC 9700 gate on: S256 only, no implicit, no password grant, no token in query
    # strings, `iss` in authorization responses, tokens hashed at rest, and deploy checks fail on
    # insecure refresh, redirect and PKCE settings.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    # http stays in ALLOWED_REDIRECT_URI_SCHEMES for native apps' loopback callbacks (RFC 8252),
    # which MCP clients use; Agent.clean() refuses http for any other host.
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": False,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "PKCE_REQUIRED": True,
    "ROTATE_REFRESH_TOKEN": True,
    # Checked on every confidential agent's token request: see PASSWORD_HASHERS.
    "CLIENT_SECRET_HASHER": "client_secret_sha256",
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("ACCESS_TOKEN_EXPIRE_SECONDS", 900)),
    "REFRESH_TOKEN_EXPIRE_SECONDS": int(os.environ.get("REFRESH_TOKEN_EXPIRE_SECONDS", 30 * 86400)),
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    # Native MCP clients listen on a loopback port chosen at run time (RFC 8252 §7.3).
    "ALLOW_LOCALHOST_LOOPBACK": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https", "http"],
    "DCR_ENABLED": True,
    "DCR_REGISTRATION_PERMISSION_CLASSES": ("oauth2_provider.dcr.AllowAllDCRPermission",),
    "CIMD_ENABLED": True,
    "CIMD_METADATA_FETCHER": "policies.oauth.cimd.PolicyMetadataFetcher",
}

# Token exchange (RFC 8693): how many hops a chain may have (agent -> server A -> server B is 1).
TOKEN_EXCHANGE_MAX_DEPTH = int(os.environ.get("TOKEN_EXCHANGE_MAX_DEPTH", 3))

# Agent registration: "auto_approve" makes agents registered by DCR or CIMD active at once,
# "require_approval" leaves them pending until an admin approves. Policy files can change it.
AGENT_REGISTRATION_DEFAULT = os.environ.get("AGENT_REGISTRATION", "auto_approve")
# Client ID Metadata Documents are fetched from public addresses only, unless this is on
# (for a lab or a test setup whose clients publish documents on loopback or a private network).
CIMD_ALLOW_PRIVATE_ADDRESSES = env_bool("CIMD_ALLOW_PRIVATE_ADDRESSES", False)

# W008 is the warning for the loopback http redirects explained above.
SILENCED_SYSTEM_CHECKS = ["oauth2_provider.W008"]

# The API takes the console session only: DRF's authtoken stores tokens in clear text, and with the
# session django-auditlog's middleware knows the acting user of every API change.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAdminUser",
        "console.permissions.RolePermissions",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "MCP Policy Console API",
    "DESCRIPTION": (
        "Manage MCP servers, tools, agents, policies, delegations and the audit log. Sign in to the "
        "console first: the API takes the console session (and its CSRF token for writes), and "
        "each role sees and does through it exactly what it may in the console."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs are for console users, like the API they describe.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    # Swagger UI's files come from this console (drf-spectacular-sidecar), never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Read-only fields (ids, client_id, status) stay out of request bodies.
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/",
    # The OAuth endpoints (plain Django views) and DRF's error answers, described by hand.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "policies.oauth.openapi.add_oauth_endpoints",
        "console.openapi.document_api_errors",
    ],
    # Several models have a "status" or a risk; each choice set gets one name of its own.
    "ENUM_NAME_OVERRIDES": {
        "AgentStatusEnum": "policies.models.Agent.Status",
        "DelegationStatusEnum": "policies.models.Delegation.Status",
        "ExportStatusEnum": "audit.models.AuditExport.Status",
        "RiskEnum": "policies.models.Tool.Risk",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# --- The console's look (django-unfold) ----------------------------------------------------------
from django.urls import reverse_lazy  # noqa: E402  (lazy: safe while settings load)


def _may(permission: str):
    """A sidebar entry shows only to those holding the permission its page requires."""
    return lambda request: request.user.has_perm(permission)


def _entry(title: str, icon: str, app_model: str) -> dict:
    app_label, model = app_model.split(".")
    return {
        "title": title,
        "icon": icon,
        "link": reverse_lazy(f"admin:{app_label}_{model}_changelist"),
        "permission": _may(f"{app_label}.view_{model}"),
    }


UNFOLD = {
    "SITE_TITLE": "MCP Policy Console",
    "SITE_HEADER": "MCP Policy Console",
    "SITE_SYMBOL": "policy",
    "SITE_URL": "/my-agents/",
    "SHOW_VIEW_ON_SITE": False,
    "DASHBOARD_CALLBACK": "console.dashboard.dashboard_callback",
    "SIDEBAR": {
        "show_search": True,
        "show_all_applications": False,
        "navigation": [
            {
                "title": "Overview",
                "items": [{"title": "Dashboard", "icon": "dashboard", "link": reverse_lazy("admin:index")}],
            },
            {
                "title": "MCP servers & tools",
                "items": [
                    _entry("MCP servers", "dns", "policies.mcpserver"),
                    _entry("Tools", "build", "policies.tool"),
                ],
            },
            {"title": "Agents", "items": [_entry("Agents", "smart_toy", "policies.agent")]},
            {
                "title": "Delegations & approvals",
                "items": [_entry("Delegations", "handshake", "policies.delegation")],
            },
            {
                "title": "Policies",
                "items": [
                    _entry("Delegation policies", "policy", "policies.delegationpolicy"),
                    _entry("Exchange policies", "swap_horiz", "policies.exchangepolicy"),
                    _entry("Policy settings", "tune", "policies.policysetting"),
                ],
            },
            {
                "title": "Tokens",
                "items": [
                    _entry("Access tokens", "key", "policies.accesstoken"),
                    _entry("Refresh tokens", "autorenew", "policies.refreshtoken"),
                ],
            },
            {
                "title": "Audit",
                "items": [
                    _entry("Audit events", "history", "audit.auditevent"),
                    _entry("Exports", "download", "audit.auditexport"),
                    _entry("Legal holds", "gavel", "audit.legalhold"),
                    _entry("Chain checkpoints", "verified", "audit.auditcheckpoint"),
                ],
            },
            {
                "title": "People",
                "items": [
                    _entry("People", "person", "auth.user"),
                    _entry("Groups", "group", "auth.group"),
                ],
            },
            {
                "title": "Enterprise identity",
                "items": [
                    _entry("Identity providers", "badge", "identity.trustedidentityprovider"),
                    _entry("External identities", "link", "identity.externalidentity"),
                ],
            },
        ],
    },
}

# Audit exports (audit.export): rows per database round trip, and where job files go in
# default_storage (MEDIA_ROOT, which nothing else uses, defaults to var/media).
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
AUDIT_EXPORT = {"CHUNK_SIZE": int(os.environ.get("AUDIT_EXPORT_CHUNK_SIZE", 2000)), "PREFIX": "exports/"}
# Export files are copies of the trail: deleted this many hours after the job finished (the job
# and its manifest stay); the hourly beat task does it, so a file lives up to an hour longer.
AUDIT_EXPORT_KEEP_HOURS = float(os.environ.get("AUDIT_EXPORT_KEEP_HOURS", 24))
if AUDIT_EXPORT_KEEP_HOURS < 0:
    raise ImproperlyConfigured("AUDIT_EXPORT_KEEP_HOURS must not be negative.")
CELERY_BEAT_SCHEDULE["expire-audit-export-files"] = {
    "task": "audit.tasks.expire_audit_export_files",
    "schedule": 3600.0,
}

# --- Audit trail integrity (audit.chain, audit.retention, audit.partitions; docs/AUDIT.md) -------
# Reverse proxies (CIDRs) whose X-Forwarded-For is believed when they are the peer.
AUDIT_TRUSTED_PROXIES = env_list("TRUSTED_PROXIES")
try:
    for _cidr in AUDIT_TRUSTED_PROXIES:
        ipaddress.ip_network(_cidr, strict=False)
except ValueError as error:
    raise ImproperlyConfigured(f"TRUSTED_PROXIES: {error}") from error
# django-auditlog would believe the left-most X-Forwarded-For of anyone (and fail on a malformed
# one); the audit events' client_ip already follows TRUSTED_PROXIES.
AUDITLOG_DISABLE_REMOTE_ADDR = True
AUDIT_RETENTION_DAYS = int(os.environ.get("AUDIT_RETENTION_DAYS", 365))
# Introspection's audit event (introspection, tool_call.decision) commits without waiting for the
# WAL flush when False: a worker or Redis dying, or a clean PostgreSQL restart, still loses none;
# a PostgreSQL or OS crash can lose up to ~3 x wal_writer_delay of them (docs/AUDIT.md).
AUDIT_HOT_PATH_SYNCHRONOUS_COMMIT = env_bool("AUDIT_HOT_PATH_SYNCHRONOUS_COMMIT", True)
# Events deleted per transaction: short transactions keep locks short; a run killed half-way is
# finished by its retry (audit.retention).
AUDIT_RETENTION_BATCH_SIZE = int(os.environ.get("AUDIT_RETENTION_BATCH_SIZE", 5000))
CELERY_BEAT_SCHEDULE.update(
    {
        # Chain committed events and sign a checkpoint; writers never wait for it.
        "seal-audit-events": {
            "task": "audit.tasks.seal_audit_events",
            "schedule": float(os.environ.get("AUDIT_SEAL_INTERVAL_SECONDS", 5)),
        },
        "apply-audit-retention": {"task": "audit.tasks.apply_audit_retention", "schedule": 3600.0},
        "ensure-audit-partitions": {"task": "audit.tasks.ensure_audit_partitions", "schedule": 86400.0},
    }
)

# --- Console SSO through an OIDC identity provider (identity.sso, mozilla-django-oidc) ---------
# Off unless OIDC_RP_CLIENT_ID is set; the local sign-in form always stays (break-glass admins).
# OIDC_GROUP_MAP is JSON: {"<IdP group>": ["<console group>", ...]}; a console role is the group
# of its name (console.roles.Role, e.g. "Security admins"), a policy group any other group.
# Trusted IdPs' JWKS URLs may point at loopback only in development and tests (identity.models).
IDENTITY_ALLOW_LOOPBACK_JWKS = env_bool("IDENTITY_ALLOW_LOOPBACK_JWKS", DEBUG)
OIDC_RP_CLIENT_ID = os.environ.get("OIDC_RP_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = os.environ.get("OIDC_RP_CLIENT_SECRET", "")
OIDC_OP_ISSUER = os.environ.get("OIDC_OP_ISSUER", "")
OIDC_OP_AUTHORIZATION_ENDPOINT = os.environ.get("OIDC_OP_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = os.environ.get("OIDC_OP_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = os.environ.get("OIDC_OP_USER_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = os.environ.get("OIDC_OP_JWKS_ENDPOINT", "")
OIDC_RP_SIGN_ALGO = os.environ.get("OIDC_RP_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = os.environ.get("OIDC_RP_SCOPES", "openid email profile")
OIDC_GROUPS_CLAIM = os.environ.get("OIDC_GROUPS_CLAIM", "groups")
OIDC_USE_PKCE = True
OIDC_TIMEOUT = 10
OIDC_AUTHENTICATION_CALLBACK_URL = "sso-callback"
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"
# SSO sessions are re-checked at the provider (prompt=none) this often, so that a role removed
# there leaves open console sessions within minutes (identity.sso.SsoSessionRefresh).
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = int(os.environ.get("OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS", 15 * 60))
SSO_REQUIRED_SETTINGS = [
    "OIDC_OP_ISSUER",
    "OIDC_OP_AUTHORIZATION_ENDPOINT",
    "OIDC_OP_TOKEN_ENDPOINT",
    "OIDC_OP_USER_ENDPOINT",
    "OIDC_OP_JWKS_ENDPOINT",
]
try:
    OIDC_GROUP_MAP = {
        idp_group: [groups] if isinstance(groups, str) else list(groups)
        for idp_group, groups in json.loads(os.environ.get("OIDC_GROUP_MAP", "{}")).items()
    }
except (ValueError, AttributeError, TypeError) as error:
    raise ImproperlyConfigured(f'OIDC_GROUP_MAP: {{"idp group": ["console group"]}} ({error})') from error
if OIDC_RP_CLIENT_ID:
    if missing := [name for name in SSO_REQUIRED_SETTINGS if not globals()[name]]:
        raise ImproperlyConfigured(f"Console SSO (OIDC_RP_CLIENT_ID) also needs {', '.join(missing)}.")
    AUTHENTICATION_BACKENDS = [*AUTHENTICATION_BACKENDS, "identity.sso.ConsoleOIDCBackend"]
