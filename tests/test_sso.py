"""Console SSO in a real browser (Playwright driving Debian's Chromium) against a real OpenID
provider: a second instance of this console's own OIDC provider (DOT), with its own SQLite database
and signing key, served by gunicorn on another loopback port (tests/sso_provider)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from django.contrib.auth.models import Group, User
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from jwcrypto import jwk, jwt

from audit.models import AuditEvent
from console.roles import Role
from identity.models import ExternalIdentity
from identity.sso import BACKEND
from tests.support import free_loopback_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)
try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:
    pytest.skip("the playwright package is not installed (pip install playwright)", allow_module_level=True)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
CLIENT_ID, CLIENT_SECRET = "console-under-test", "rp-secret-for-the-sso-tests"
PASSWORD = "provider-password-123"
# The people at the provider, with their groups there (created once, for the whole module).
PEOPLE = {
    "erin": ["console-admins", "engineering", "unmapped"],
    "frank": ["engineering"],
    "gina": ["approvers", "engineering"],
    "hank": ["engineering"],
    "ivan": ["console-admins"],
    "jane": ["engineering"],
}
GROUP_MAP = {"console-admins": ["Security admins"], "approvers": ["Approvers"], "engineering": ["staff"]}

pytestmark = pytest.mark.timeout(180)


# --- The OpenID provider: another instance of this console, really running ----------------------


@dataclass
class Provider:
    url: str
    env: dict[str, str]
    subjects: dict[str, str]  # username at the provider -> its sub

    def set_people(self, people: list[dict]) -> None:
        """Create or change people at the provider (its own process and database)."""
        self.subjects.update(_setup(self.env, {"people": people}))


def _setup(env: dict[str, str], spec: dict) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "sso_provider" / "setup.py")],
        input=json.dumps(spec),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    subjects: dict[str, str] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            subjects.update(json.loads(line))
    return subjects


def _migrated_template(env: dict[str, str]) -> Path:
    """A migrated provider database, kept in var/ per state of the migrations (migrating takes long)."""
    digest = hashlib.sha256()
    for path in sorted(ROOT.glob("*/migrations/0*.py")):
        digest.update(path.read_bytes())
    template = ROOT / "var" / f"test-sso-provider-{digest.hexdigest()[:16]}.sqlite3"
    if not template.exists():
        template.parent.mkdir(exist_ok=True)
        building = template.with_suffix(f".{os.getpid()}.tmp")
        _setup({**env, "SSO_PROVIDER_DB": str(building)}, {"migrate": True})
        building.replace(template)
    return template


@pytest.fixture(scope="module")
def provider(live_server, tmp_path_factory) -> Iterator[Provider]:
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    database = tmp_path_factory.mktemp("sso-provider") / "provider.sqlite3"
    key = jwk.JWK.generate(kty="RSA", size=2048)
    env = {name: value for name, value in os.environ.items() if name != "REDIS_URL"}
    env.update(
        PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE="tests.sso_provider.settings",
        DATABASE_URL=f"sqlite:///{database}",  # required by the settings; SSO_PROVIDER_DB is used
        SSO_PROVIDER_DB=str(database),
        CONSOLE_ISSUER=url,
        OIDC_RSA_PRIVATE_KEY=key.export_to_pem(private_key=True, password=None).decode(),
        CELERY_TASK_ALWAYS_EAGER="1",
    )
    shutil.copyfile(_migrated_template(env), database)
    redirect_uri = f"{live_server.url}/accounts/sso/callback/"
    subjects = _setup(
        env,
        {
            "clients": [
                {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": redirect_uri}
            ],
            "people": [person(username, groups) for username, groups in PEOPLE.items()],
        },
    )
    log = database.with_suffix(".log")
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "console.wsgi"],
            env=env,
            stdout=out,
            stderr=out,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                if httpx2.get(f"{url}/.well-known/jwks.json", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield Provider(url, env, subjects)
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def sso(provider, live_console, settings) -> Provider:
    """The console under test, configured for SSO with the provider."""
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_OP_ISSUER = provider.url
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{provider.url}/o/authorize/"
    settings.OIDC_OP_TOKEN_ENDPOINT = f"{provider.url}/o/token/"
    settings.OIDC_OP_USER_ENDPOINT = f"{provider.url}/o/userinfo/"
    settings.OIDC_OP_JWKS_ENDPOINT = f"{provider.url}/.well-known/jwks.json"
    settings.OIDC_GROUP_MAP = GROUP_MAP
    settings.AUTHENTICATION_BACKENDS = [*settings.AUTHENTICATION_BACKENDS, BACKEND]
    Group.objects.get_or_create(name="staff")  # the policy group the map names (never created by SSO)
    return provider


# --- The browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    # As in test_pages_in_browser: Playwright's sync API leaves its loop marked running.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium) -> Iterator[Page]:
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def sign_in_with_sso(page: Page, console_url: str, provider: Provider, username: str, next_path: str) -> None:
    """From the console's sign-in page, through the provider's sign-in page, back to the console."""
    page.goto(f"{console_url}/accounts/login/?next={next_path}")
    page.click("#sso-login")
    page.wait_for_url(f"{provider.url}/accounts/login/**")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(lambda url: url.startswith(console_url) and "/accounts/sso/callback/" not in url)


def person(username: str, groups: list[str]) -> dict:
    return {"username": username, "email": f"{username}@acme.example", "password": PASSWORD, "groups": groups}


def human(provider: Provider, username: str) -> User:
    return ExternalIdentity.objects.get(issuer=provider.url, subject=provider.subjects[username]).user


# --- The tests --------------------------------------------------------------------------------------


def test_sso_login_creates_the_human_with_roles_and_policy_groups_and_still_asks_staff_for_totp(
    sso, live_console, page, settings
):
    settings.CONSOLE_REQUIRE_2FA = True

    sign_in_with_sso(page, live_console, sso, "erin", "/admin/")

    # Staff: the console's own second factor is still asked after SSO (the IdP's amr is not trusted).
    assert urlsplit(page.url).path == "/accounts/two-factor/setup/"
    erin = human(sso, "erin")
    assert erin.username == "erin" and erin.email == "erin@acme.example"
    assert not erin.has_usable_password()
    assert set(erin.groups.values_list("name", flat=True)) == {Role.SECURITY_ADMIN.value, "staff"}
    assert erin.is_staff and not erin.is_superuser
    login = AuditEvent.objects.get(event_type="auth.login", human_id=erin.pk)
    assert login.detail.get("method") == "sso"


def test_an_end_user_signs_in_with_sso_and_reaches_my_agents(sso, live_console, page):

    sign_in_with_sso(page, live_console, sso, "frank", "/my-agents/")

    assert urlsplit(page.url).path == "/my-agents/"
    frank = human(sso, "frank")
    assert list(frank.groups.values_list("name", flat=True)) == ["staff"] and not frank.is_staff


def test_a_group_removed_at_the_provider_removes_the_role_at_the_next_login(sso, live_console, chromium):
    first = chromium.new_context().new_page()
    sign_in_with_sso(first, live_console, sso, "gina", "/my-agents/")
    gina = human(sso, "gina")
    assert set(gina.groups.values_list("name", flat=True)) == {Role.APPROVER.value, "staff"} and gina.is_staff

    sso.set_people([person("gina", ["engineering"])])
    second = chromium.new_context().new_page()
    sign_in_with_sso(second, live_console, sso, "gina", "/my-agents/")

    gina.refresh_from_db()
    assert list(gina.groups.values_list("name", flat=True)) == ["staff"]
    assert not gina.is_staff
    assert ExternalIdentity.objects.filter(user=gina).count() == 1


def test_a_local_account_of_the_same_name_is_not_taken_over(sso, live_console, page):
    admin = User.objects.create_superuser("hank", password="break-glass-password-1")

    sign_in_with_sso(page, live_console, sso, "hank", "/my-agents/")

    hank = human(sso, "hank")
    assert hank != admin and hank.username == "hank-2" and not hank.is_superuser


def test_an_id_token_from_another_issuer_is_refused(sso, live_console, page, settings):
    settings.OIDC_OP_ISSUER = "https://another-idp.example"

    sign_in_with_sso(page, live_console, sso, "ivan", "/admin/")

    assert_refused(page)


def test_a_nonce_that_does_not_match_the_id_token_is_refused(sso, live_console, page):
    page.goto(f"{live_console}/accounts/login/?next=/my-agents/")
    page.click("#sso-login")
    page.wait_for_url(f"{sso.url}/accounts/login/**")
    # While the human is at the provider, the nonce the console remembered for this login changes.
    session = SessionStore(next(c["value"] for c in page.context.cookies() if c["name"] == "sessionid"))
    states = session["oidc_states"]
    for state in states.values():
        state["nonce"] = "not-the-nonce-the-provider-signed"
    session["oidc_states"] = states
    session.save()

    page.fill("#id_username", "jane")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_console}/accounts/login/**")

    assert_refused(page)


def assert_refused(page: Page) -> None:
    """Back on the sign-in page with the SSO error, nobody signed in, the failure audited."""
    assert urlsplit(page.url).path == "/accounts/login/" and parse_qs(urlsplit(page.url).query) == {
        "sso": ["failed"]
    }
    assert page.locator("p.error").inner_text() == "Single sign-on did not complete. Please try again."
    assert not ExternalIdentity.objects.exists()
    assert not AuditEvent.objects.filter(event_type="auth.login").exists()
    assert AuditEvent.objects.filter(event_type="auth.login_failed").exists()


def test_a_callback_with_a_forged_state_is_refused(sso, live_console):
    browser = Client()
    started = browser.get("/accounts/sso/start/")
    assert started.status_code == 302 and started["Location"].startswith(f"{sso.url}/o/authorize/")
    assert parse_qs(urlsplit(started["Location"]).query)["nonce"]

    response = browser.get("/accounts/sso/callback/", {"code": "stolen-code", "state": "forged-state"})

    assert response.status_code == 400
    assert "_auth_user_id" not in browser.session


def test_without_sso_settings_the_button_is_absent_and_the_doors_are_404(db, client):
    page = client.get("/accounts/login/")

    assert page.status_code == 200 and b"sso-login" not in page.content
    assert b'name="password"' in page.content  # the local form stays, for break-glass admins
    assert client.get("/accounts/sso/start/").status_code == 404
    assert client.get("/accounts/sso/callback/").status_code == 404


# --- The callback's refusals, against a local provider stand-in (no browser) -----------------------
# A real HTTP token and userinfo endpoint on loopback, answering what each test sets; the ID token
# is signed with the stand-in's own key, which the console is configured with.

STANDIN_KEY = jwk.JWK.generate(kty="RSA", size=2048, kid="standin")
STANDIN_CLIENT = "console-rp"


@dataclass
class ProviderStandIn:
    url: str
    token_status: int = 200
    id_token_claims: dict | None = None
    userinfo: dict | None = None

    @property
    def issuer(self) -> str:
        return self.url


@pytest.fixture
def standin(db, settings) -> Iterator[ProviderStandIn]:
    holder: dict[str, ProviderStandIn] = {}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # the token endpoint
            op = holder["op"]
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if op.token_status != 200:
                self._answer(op.token_status, {"error": "server_error"})
                return
            token = jwt.JWT(header={"alg": "RS256", "kid": "standin"}, claims=op.id_token_claims)
            token.make_signed_token(STANDIN_KEY)
            self._answer(200, {"id_token": token.serialize(), "access_token": "at", "token_type": "Bearer"})

        def do_GET(self) -> None:  # the userinfo endpoint
            self._answer(200, holder["op"].userinfo)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    op = holder["op"] = ProviderStandIn(f"http://127.0.0.1:{server.server_address[1]}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.OIDC_RP_CLIENT_ID = STANDIN_CLIENT
    settings.OIDC_RP_CLIENT_SECRET = "s"
    settings.OIDC_OP_ISSUER = op.issuer
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{op.url}/authorize"
    settings.OIDC_OP_TOKEN_ENDPOINT = f"{op.url}/token"
    settings.OIDC_OP_USER_ENDPOINT = f"{op.url}/userinfo"
    settings.OIDC_OP_JWKS_ENDPOINT = f"{op.url}/jwks"
    settings.OIDC_RP_IDP_SIGN_KEY = STANDIN_KEY.export_to_pem(private_key=False)
    settings.OIDC_GROUP_MAP = GROUP_MAP
    settings.AUTHENTICATION_BACKENDS = [*settings.AUTHENTICATION_BACKENDS, BACKEND]
    try:
        yield op
    finally:
        server.shutdown()
        server.server_close()


def sso_callback(op: ProviderStandIn, browser: Client, **claims):
    """Start an SSO login, let the provider answer with an ID token of ``claims``, come back."""
    started = browser.get("/accounts/sso/start/")
    query = parse_qs(urlsplit(started["Location"]).query)
    now = int(time.time())
    op.id_token_claims = {
        "iss": op.issuer,
        "aud": STANDIN_CLIENT,
        "sub": "00uKIM",
        "nonce": query["nonce"][0],
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    op.userinfo = op.userinfo or {"sub": "00uKIM", "preferred_username": "kim", "groups": ["engineering"]}
    return browser.get("/accounts/sso/callback/", {"code": "c", "state": query["state"][0]})


def failed_login(response) -> AuditEvent:
    """Back on the sign-in page, nobody signed in, the failure audited: its event."""
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?sso=failed"
    assert not ExternalIdentity.objects.exists()
    return AuditEvent.objects.get(event_type="auth.login_failed")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iat": int(time.time()) + 600}, "sso_id_token_not_yet_valid"),
        ({"exp": int(time.time()) - 600}, "sso_id_token_expired"),
        ({"aud": [STANDIN_CLIENT, "another-rp"]}, "sso_wrong_audience"),  # several audiences, no azp
        ({"aud": [STANDIN_CLIENT, "another-rp"], "azp": "another-rp"}, "sso_wrong_audience"),
    ],
    ids=["iat-ahead", "expired", "audiences-without-azp", "azp-another-rp"],
)
def test_a_refused_id_token_is_a_failed_login_audited_with_its_cause(standin, client, claims, reason):
    failed = failed_login(sso_callback(standin, client, **claims))

    assert failed.reason == reason and failed.detail["issuer"] == standin.issuer


def test_a_subject_with_a_nul_character_is_a_failed_login_not_a_500(standin, client):
    standin.userinfo = {"sub": "00u\x00KIM"}

    assert failed_login(sso_callback(standin, client, sub="00u\x00KIM")).reason == "sso_malformed_subject"


def test_an_id_token_a_few_seconds_ahead_of_our_clock_is_accepted(standin, client):
    response = sso_callback(standin, client, iat=int(time.time()) + 20)

    assert response.status_code == 302 and response["Location"] != "/accounts/login/?sso=failed"
    assert ExternalIdentity.objects.get().user.username == "kim"


def test_a_failing_provider_token_endpoint_is_a_failed_login(standin, client):
    standin.token_status = 503

    assert failed_login(sso_callback(standin, client)).reason == "sso_provider_error"


def test_an_unreachable_provider_is_a_failed_login(standin, client, settings):
    settings.OIDC_OP_TOKEN_ENDPOINT = f"http://127.0.0.1:{free_loopback_port()}/token"

    assert failed_login(sso_callback(standin, client)).reason == "sso_provider_error"


def test_a_forged_state_and_a_provider_error_are_audited(standin, client):
    client.get("/accounts/sso/start/")

    forged = client.get("/accounts/sso/callback/", {"code": "stolen", "state": "forged"})
    denied = client.get("/accounts/sso/callback/", {"error": "access_denied", "state": "x"})

    assert forged.status_code == 400 and denied.status_code == 302
    events = AuditEvent.objects.filter(event_type="auth.login_failed").order_by("pk")
    assert [(e.reason, e.detail.get("error")) for e in events] == [
        ("sso_state_mismatch", None),
        ("sso_provider_refused", "access_denied"),
    ]


def test_the_email_is_taken_only_when_the_provider_says_it_is_verified(standin, client):
    standin.userinfo = {"sub": "00uKIM", "preferred_username": "kim", "email": "boss@acme.example"}
    sso_callback(standin, client)
    kim = ExternalIdentity.objects.get().user
    assert kim.email == ""

    standin.userinfo = {**standin.userinfo, "email": "kim@acme.example", "email_verified": True}
    sso_callback(standin, Client())
    kim.refresh_from_db()
    assert kim.email == "kim@acme.example"


def test_a_subject_a_trusted_idp_linked_cannot_sign_in_through_sso(standin, client):
    from identity.models import TrustedIdentityProvider

    # Linked by an ID-JAG IdP whose issuer string is also the SSO's (trusted before SSO was set up).
    idp = TrustedIdentityProvider.objects.create(name="acme", issuer=standin.issuer, jwks_url="https://x/j")
    linked = User.objects.create_user("kim")
    ExternalIdentity.objects.create(issuer=standin.issuer, subject="00uKIM", user=linked, provider=idp)

    response = sso_callback(standin, client)

    assert response["Location"] == "/accounts/login/?sso=failed" and "_auth_user_id" not in client.session
    failed = AuditEvent.objects.get(event_type="auth.login_failed")
    assert failed.reason == "sso_subject_linked_elsewhere"


def test_a_group_map_naming_a_misspelt_role_is_a_startup_error_and_no_group_is_created(standin, settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    from identity.sso import mapped_groups

    settings.OIDC_GROUP_MAP = {"it-admins": ["Security admin"], "eng": ["no-such-policy-group"]}

    with pytest.raises(SystemCheckError, match=r"(?s)identity.E001.*Did you mean .Security admins."):
        call_command("check")
    assert mapped_groups() == {"it-admins": [], "eng": []}
    assert not Group.objects.filter(name__in=["Security admin", "no-such-policy-group"]).exists()


# --- Sessions follow the provider (review-identity D7) ---------------------------------------------


def test_an_sso_session_is_checked_again_at_the_provider_once_its_window_is_over(standin, client):
    assert sso_callback(standin, client).status_code == 302
    assert client.get("/my-agents/").status_code == 200  # within the window: served

    session = client.session
    session["oidc_id_token_expiration"] = time.time() - 1
    session.save()
    response = client.get("/my-agents/")

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{standin.url}/authorize"
    assert parse_qs(location.query)["prompt"] == ["none"]


def test_the_provider_refusing_the_silent_check_ends_the_session(standin, client):
    sso_callback(standin, client)
    session = client.session
    session["oidc_id_token_expiration"] = time.time() - 1
    session.save()
    state = parse_qs(urlsplit(client.get("/my-agents/")["Location"]).query)["state"][0]

    # The provider answers prompt=none with login_required: the human left, or was deprovisioned.
    client.get("/accounts/sso/callback/", {"error": "login_required", "state": state})

    assert "_auth_user_id" not in client.session
    assert client.get("/my-agents/").status_code == 302


def test_the_session_check_with_a_role_removed_at_the_provider_removes_it(standin, client):
    standin.userinfo = {"sub": "00uKIM", "preferred_username": "kim", "groups": ["approvers"]}
    sso_callback(standin, client)
    kim = ExternalIdentity.objects.get().user
    assert kim.groups.filter(name=Role.APPROVER.value).exists() and kim.is_staff

    standin.userinfo = {**standin.userinfo, "groups": []}
    session = client.session
    session["oidc_id_token_expiration"] = time.time() - 1
    session.save()
    state = parse_qs(urlsplit(client.get("/my-agents/")["Location"]).query)["state"][0]
    nonce = client.session["oidc_states"][state]["nonce"]
    standin.id_token_claims = {**standin.id_token_claims, "nonce": nonce}
    back = client.get("/accounts/sso/callback/", {"code": "c2", "state": state})

    assert back.status_code == 302 and back["Location"] == "/my-agents/"
    kim.refresh_from_db()
    assert not kim.groups.exists() and not kim.is_staff
    assert client.session["_auth_user_id"] == str(kim.pk)  # the same session, the 2FA state kept


def test_a_password_session_is_not_sent_to_the_provider(standin, client):
    client.force_login(User.objects.create_user("local"))

    assert client.get("/my-agents/").status_code == 200
