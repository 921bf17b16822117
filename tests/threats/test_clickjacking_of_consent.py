"""Clickjacking of consent (RFC 6749 §10.13, RFC 9700 §4.16): a hostile page cannot frame the
consent page (or the page where the human waits for an approver) and trick a click on "Allow".
Both forbid framing (X-Frame-Options DENY, from the view and from the middleware, and the CSP
``frame-ancestors 'none'``) and are never cached."""

from policies.models import Delegation


def test_the_consent_page_cannot_be_framed_or_cached(oauth, calendar):
    page = oauth.browser.get(
        "/oauth/authorize/", oauth.authorize_params(calendar.resource, "list_events:read")
    )

    assert page.status_code == 200
    assert page["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page["Content-Security-Policy"]
    assert "no-store" in page["Cache-Control"] or "no-cache" in page["Cache-Control"]


def test_the_consent_error_page_cannot_be_framed(oauth, calendar):
    params = oauth.authorize_params(calendar.resource, redirect_uri="https://attacker.example.net/cb")
    page = oauth.browser.get("/oauth/authorize/", params)
    assert page.status_code == 400
    assert page["X-Frame-Options"] == "DENY"


def test_the_approval_waiting_page_cannot_be_framed(oauth, calendar, alice):
    policy = alice.groups.get(name="staff").delegation_policies.get()
    policy.approval_risk = "high"
    policy.save()
    response = oauth.consent(oauth.authorize_params(calendar.resource, "create_event:write"))
    assert response.status_code == 302 and "/oauth/authorize/pending/" in response["Location"]
    assert Delegation.objects.get().status == Delegation.Status.PENDING

    page = oauth.browser.get(response["Location"])

    assert page.status_code == 200
    assert page["X-Frame-Options"] == "DENY"
    assert "no-store" in page["Cache-Control"] or "no-cache" in page["Cache-Control"]
