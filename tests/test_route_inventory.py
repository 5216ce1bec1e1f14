"""Every route the app serves, and who may reach it.

A new route fails `test_every_route_is_classified` until it is added to the
table below; every staff route is then requested anonymously and with each
role, and must answer exactly as its class says. Every API route names the
token scope it needs (`API_SCOPES`), and is requested with a token holding
every other scope but that one (403) and with one holding only it.
"""

from __future__ import annotations

import pytest

from tests.staff_helpers import https_client, signed_in_client

PUBLIC = "public"  # anyone
TWILIO = "twilio"  # signed by Twilio, else 403
API = "api"  # bearer token, else 401
READINESS = "readiness"  # anyone; 503 until migrations are current and a sender beats
METRICS = "metrics"  # loopback unless METRICS_TOKEN / METRICS_ALLOWED_NETWORKS say otherwise

# endpoint -> who may call it
ROUTES = {
    "static": PUBLIC,
    "health.healthz": PUBLIC,
    "health.readyz": READINESS,
    "metrics.metrics": METRICS,
    "webhooks.inbound_sms": TWILIO,
    "webhooks.status_callback": TWILIO,
    "api.subscriber_status": API,
    "api.list_events": API,
    "api.list_messages": API,
    "api.consent_checks": API,
    "api.send_messages": API,
    "api.set_recipient_profile": API,
    "staff.sending_rules": "viewer",
    "staff.static": PUBLIC,
    "staff.login": PUBLIC,
    "staff.enrol": PUBLIC,  # the single-use link's token is the credential
    "staff.login_code": "signed-in (password only)",
    "staff.logout": "signed-in (password only)",
    "staff.dashboard": "viewer",
    "staff.account": "viewer",
    "staff.change_password": "viewer",
    "staff.start_totp_enrolment": "viewer",
    "staff.confirm_totp_enrolment": "viewer",
    "staff.events": "viewer",
    "staff.timeline": "viewer",
    "staff.export_events": "compliance",
    "staff.evidence": "compliance",
    "staff.review_queue": "compliance",
    "staff.review_decide": "compliance",
    "staff.review_decided": "compliance",
    "staff.lookup": "viewer",
    "staff.verify_now": "compliance",
    "staff.change_time_zone": "viewer",
    "staff.staff_accounts": "admin",
    "staff.staff_update": "admin",
    "staff.api_tokens": "admin",
    "staff.api_token_revoke": "admin",
    "staff.audit_log": "admin",
}
# API endpoint -> the token scope it needs
API_SCOPES = {
    "api.subscriber_status": "consent:read",
    "api.consent_checks": "consent:read",
    "api.list_events": "events:read",
    "api.list_messages": "events:read",
    "api.send_messages": "messages:send",
    "api.set_recipient_profile": "messages:send",
}
ROLE_ORDER = ["viewer", "compliance", "admin"]
SAMPLE_VALUES = {"subscriber_id": 1, "event_id": 1, "staff_id": 1, "token_id": 1, "fmt": "json"}


def concrete_paths(app):
    """(endpoint, method, path) for every rule, with sample values for its arguments."""
    for rule in app.url_map.iter_rules():
        values = {arg: SAMPLE_VALUES.get(arg, "x") for arg in rule.arguments}
        if rule.endpoint.endswith("static"):
            values["filename"] = "staff.css"
        path = rule.build(values, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, path


def test_every_route_is_classified(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - set(ROUTES) == set(), "classify the new route(s) in ROUTES"
    assert set(ROUTES) - endpoints == set(), "remove routes that no longer exist"


def test_staff_views_declare_the_role_they_check(app):
    for endpoint, required in ROUTES.items():
        if required in ROLE_ORDER:
            view = app.view_functions[endpoint]
            while hasattr(view, "__wrapped__") and not hasattr(view, "required_role"):
                view = view.__wrapped__
            assert getattr(view, "required_role", None) == required, endpoint


def test_nothing_but_public_routes_answers_an_anonymous_request(app):
    client = https_client(app)
    for endpoint, method, path in concrete_paths(app):
        response = client.open(path, method=method)
        kind = ROUTES[endpoint]
        if kind == PUBLIC:
            assert response.status_code in (200, 400, 404), (endpoint, response.status_code)
        elif kind == TWILIO:
            assert response.status_code in (403, 405), (endpoint, response.status_code)
        elif kind == API:
            assert response.status_code == 401, endpoint
        elif kind == READINESS:
            assert response.status_code == 503, endpoint  # no sender worker in this test
        elif kind == METRICS:
            assert response.status_code == 200, endpoint  # the test client is loopback
        elif method == "GET":
            assert response.status_code == 302, endpoint
            assert response.location.startswith("/staff/login"), endpoint
        else:  # a POST without a session or CSRF token is refused before the view runs
            assert response.status_code in (302, 400), (endpoint, response.status_code)


@pytest.mark.parametrize("role", ROLE_ORDER)
def test_each_role_reaches_exactly_its_routes(app, db, role):
    client, _ = signed_in_client(app, db, role)
    rank = ROLE_ORDER.index(role)
    for endpoint, method, path in concrete_paths(app):
        required = ROUTES[endpoint]
        if required not in ROLE_ORDER or method != "GET":
            continue
        status = client.open(path, method=method).status_code
        if ROLE_ORDER.index(required) > rank:
            assert status == 403, (role, endpoint, status)
        else:
            assert status in (200, 404), (role, endpoint, status)  # 404: sample id not there


@pytest.mark.parametrize("role", ["viewer", "compliance"])
def test_posts_above_a_role_are_forbidden_even_with_a_csrf_token(app, db, role):
    from tests.staff_helpers import page_csrf

    client, _ = signed_in_client(app, db, role)
    token = page_csrf(client, "/staff/")
    rank = ROLE_ORDER.index(role)
    for endpoint, method, path in concrete_paths(app):
        required = ROUTES[endpoint]
        if method == "POST" and required in ROLE_ORDER and ROLE_ORDER.index(required) > rank:
            status = client.post(path, data={"csrf_token": token}).status_code
            assert status == 403, (role, endpoint, status)


def test_every_api_route_declares_its_scope(app):
    api_routes = {endpoint for endpoint, kind in ROUTES.items() if kind == API}
    assert api_routes == set(API_SCOPES), "give each API route its scope in API_SCOPES"
    for endpoint, scope in API_SCOPES.items():
        view = app.view_functions[endpoint]
        while hasattr(view, "__wrapped__") and not hasattr(view, "required_scope"):
            view = view.__wrapped__
        assert getattr(view, "required_scope", None) == scope, endpoint


def test_each_api_route_answers_only_a_token_with_its_scope(app, db):
    from app.access.tokens import SCOPES, create_api_token

    with db.transaction() as session:
        tokens = {
            scope: (
                create_api_token(session, f"only {scope}", [scope])[1],
                create_api_token(session, f"all but {scope}", [s for s in SCOPES if s != scope])[1],
            )
            for scope in SCOPES
        }
    client = app.test_client()
    for endpoint, method, path in concrete_paths(app):
        if ROUTES[endpoint] != API:
            continue
        holding, lacking = tokens[API_SCOPES[endpoint]]
        body = {"json": {"program": "demo", "phones": ["+14155550100"]}} if method == "POST" else {}
        refused = client.open(path, method=method, headers=bearer(lacking), **body)
        assert refused.status_code == 403, endpoint
        assert API_SCOPES[endpoint] in refused.get_json()["error"]
        allowed = client.open(path, method=method, headers=bearer(holding), **body)
        assert allowed.status_code in (200, 400, 404), (endpoint, allowed.status_code)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
