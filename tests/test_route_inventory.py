"""Every route the app serves, and who may reach it.

A new route fails `test_every_route_is_classified` until it is added to the
table below; every staff route is then requested anonymously and with each
role, and must answer exactly as its class says.
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
    "staff.login_code": "signed-in (password only)",
    "staff.logout": "signed-in (password only)",
    "staff.dashboard": "viewer",
    "staff.events": "viewer",
    "staff.timeline": "viewer",
    "staff.export_events": "compliance",
    "staff.evidence": "compliance",
    "staff.review_queue": "compliance",
    "staff.review_decide": "compliance",
    "staff.staff_accounts": "admin",
    "staff.staff_update": "admin",
    "staff.api_tokens": "admin",
    "staff.api_token_revoke": "admin",
    "staff.audit_log": "admin",
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
