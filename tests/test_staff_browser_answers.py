# ruff: noqa: F811  (the browser fixtures are imported from test_staff_browser, then requested)
"""Issue 15 in a real browser (headless Chromium, Playwright; gunicorn serving the app):
the lookup box in five formats, the verdict naming its events, a review decision in the
Decided tab and on the timeline, a bad filter answered in place, "Verify now" finishing on
the dashboard, the event log at phone width, and an axe-core check of every console page
for every role.

axe-core's script comes from the `axe-playwright-python` package (it ships axe.min.js)
and is evaluated in the page by Playwright, so the check runs offline and under the
console's strict Content-Security-Policy.
"""

from __future__ import annotations

import re

import pytest
from axe_playwright_python.sync_playwright import Axe

from tests.test_staff_browser import (  # noqa: F401  (fixtures)
    PHONE,
    SCREENSHOTS,
    UPDATE_SCREENSHOTS,
    browser,
    code_at,
    console,
    create_staff,
    enrolment_link,
    new_page,
    sign_in,
    text,
)

pytestmark = pytest.mark.e2e

from playwright.sync_api import expect  # noqa: E402

AXE = Axe()
SERIOUS = ("serious", "critical")
NEVER_SEEN = "+1 415 555 0199"


def assert_accessible(page, where: str) -> None:
    """axe-core finds no serious or critical violation on the page."""
    results = AXE.run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in SERIOUS]
    assert not bad, f"{where}: " + "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes'][0]['target']}" for v in bad
    )


def look_up(page, typed: str) -> None:
    page.fill("#lookup-q", typed)
    page.click("form.lookup button[type=submit]")


def shots_dir(tmp_path):
    folder = SCREENSHOTS if UPDATE_SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_a_lookup_in_five_formats_and_a_verdict_that_names_its_events(console, browser, tmp_path):
    base = console["base"]
    for body in ["JOIN", "YES", "STOP", "START"]:
        text(base, body)
    password, secret = create_staff(console, browser, "officer@example.com", "compliance")
    dialogs: list[str] = []
    page = new_page(browser, dialogs)
    sign_in(page, base, "officer@example.com", password, secret)

    for typed in ("+1 415 555 0123", "14155550123", "415.555.0123"):
        look_up(page, typed)
        expect(page).to_have_url(re.compile(r"/staff/subscribers/\d+\?q="))
        expect(page.locator("#lookup-reading")).to_contain_text("read as +1 415 555 0123")

    look_up(page, "(415) 555-0123")  # national: the reading says how it was read
    reading = page.locator("#lookup-reading")
    expect(reading).to_contain_text("a national number in US (PHONE_DEFAULT_REGION)")
    verdict = page.locator("#verdict")
    expect(verdict.locator(".big")).to_have_text("Yes")
    expect(verdict).to_contain_text(re.compile(r"confirmed \(double opt-in\) on \d{4}-\d\d-\d\d"))
    expect(verdict).to_contain_text(
        re.compile(
            r"confirmed by YES at [\d\- :]+UTC \(#2\); resumed by START at [\d\- :]+UTC \(#4\)"
        )
    )
    page.screenshot(path=str(shots_dir(tmp_path) / "timeline.png"), full_page=False)
    verdict.locator("a", has_text="#2").click()
    expect(page).to_have_url(re.compile(r"#event-\d+$"))
    anchor = page.url.rsplit("#", 1)[1]
    expect(page.locator(f"#{anchor} h3")).to_contain_text("#2")

    look_up(page, NEVER_SEEN)  # never texted us
    expect(page.locator("#lookup-answer")).to_contain_text(
        "No record of +1 415 555 0199: no consent held, do not text"
    )
    page.screenshot(path=str(shots_dir(tmp_path) / "lookup.png"), full_page=False)
    look_up(page, "hello")  # not a number
    expect(page.locator("#lookup-answer")).to_contain_text("hello is not a phone number")
    assert dialogs == []


def test_a_decision_shows_in_decided_and_on_the_timeline(console, browser):
    base = console["base"]
    for body in ["JOIN", "YES", "We have got to stop this bill"]:
        text(base, body)
    password, secret = create_staff(console, browser, "officer@example.com", "compliance")
    dialogs: list[str] = []
    page = new_page(browser, dialogs)
    sign_in(page, base, "officer@example.com", password, secret)
    look_up(page, "+1 415 555 0123")  # held while the possible opt-out awaits review
    verdict = page.locator("#verdict")
    expect(verdict.locator(".big")).to_have_text("Hold")
    expect(verdict).to_contain_text(
        re.compile(r"Hold: a possible opt-out from [\d\- :]+UTC awaits review \(due [\d\- :]+UTC\)")
    )
    expect(page.locator("#decide-heading")).to_be_visible()  # the decision form, on this page
    page.click("nav >> text=Review queue")
    item = page.locator("article.review-item")
    expect(item).to_contain_text("status when it texted: subscribed")
    expect(item).to_contain_text("sends it the one opt-out confirmation")
    item.locator("input[value=opt_out]").check()
    item.locator("textarea").fill("x")  # too short: refused in place, kept as typed
    item.locator("button[type=submit]").click()
    item = page.locator("article.review-item")
    expect(item.locator(".field-error")).to_be_visible()
    expect(item.locator("textarea")).to_have_value("x")
    item.locator("input[value=opt_out]").check()
    item.locator("textarea").fill("A reasonable person would read this as stop")
    item.locator("button[type=submit]").click()
    expect(page.locator(".flash")).to_contain_text("Recorded as an opt-out")

    page.get_by_role("link", name="Decided", exact=True).click()
    row = page.locator("table.decided-items tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Treated as opt-out")
    expect(row).to_contain_text("officer@example.com")
    expect(row).to_contain_text("A reasonable person would read this as stop")
    row.locator("a", has_text="ledger event").click()
    decision = page.locator(f"#{page.url.rsplit('#', 1)[1]}")
    expect(decision).to_contain_text("Staff review decision")
    expect(decision).to_contain_text("Decides")
    decision.locator("a", has_text="the text #3").click()
    flagged = page.locator(f"#{page.url.rsplit('#', 1)[1]}")
    expect(flagged).to_contain_text("possible opt-out, decided")
    expect(flagged).to_contain_text("Treated as an opt-out by officer@example.com")
    expect(page.locator("#verdict")).to_contain_text("opted out by a staff decision")


def test_a_bad_filter_is_answered_in_place(console, browser):
    base = console["base"]
    for body in ["JOIN", "YES", "HELP"]:
        text(base, body)
    password, _ = create_staff(console, browser, "viewer@example.com", "viewer")
    page = new_page(browser, [])
    sign_in(page, base, "viewer@example.com", password)
    page.click("nav >> text=Event log")
    expect(page.locator("#result-count")).to_have_text("3 events match, from 1 number.")
    page.fill("#f-since", "2026-11-02")
    page.fill("#f-until", "2026-11-01")
    page.click("form.search button[type=submit]")
    expect(page.locator("#until-error")).to_contain_text("start date is after the end date")
    expect(page.locator("#f-until")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-since")).to_have_value("2026-11-02")
    expect(page.locator("#f-until")).to_have_value("2026-11-01")
    expect(page.locator("table.events")).to_have_count(0)
    page.goto(base + "/staff/events?since=not-a-date")
    expect(page.locator("#since-error")).to_contain_text("From must be a date")
    expect(page.locator("table.events")).to_have_count(0)


def test_verify_now_finishes_with_its_result_on_the_dashboard(console, browser):
    base = console["base"]
    for body in ["JOIN", "YES"]:
        text(base, body)
    password, secret = create_staff(console, browser, "officer@example.com", "compliance")
    page = new_page(browser, [])
    sign_in(page, base, "officer@example.com", password, secret)
    expect(page.locator("#ledger-state")).to_have_text("Not checked yet")
    page.click("text=Verify now")
    expect(page.locator(".flash")).to_contain_text("Ledger verification started")
    for _ in range(100):
        if "intact, 2 events checked" in page.inner_text("#ledger"):
            break
        page.wait_for_timeout(100)
        page.reload()
    expect(page.locator("#verify-job")).to_contain_text("intact, 2 events checked")
    expect(page.locator("#ledger-state")).to_have_text("Intact")


def test_the_event_log_reads_as_cards_at_phone_width(console, browser):
    base = console["base"]
    for body in ["JOIN", "YES", "A longer text that would make a table wide on a phone"]:
        text(base, body)
    password, _ = create_staff(console, browser, "viewer@example.com", "viewer")
    page = new_page(browser, [])
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, base, "viewer@example.com", password)
    page.goto(base + "/staff/events")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    first = page.locator("table.events tbody tr").first
    assert first.evaluate("row => getComputedStyle(row).display") == "block"
    cells = first.locator("td")
    assert cells.count() == 7
    for index in range(7):  # every column on the screen, none hidden off to the right
        box = cells.nth(index).bounding_box()
        assert box and box["width"] > 0 and box["x"] + box["width"] <= 390
    labels = [
        cells.nth(i).evaluate("c => getComputedStyle(c, '::before').content") for i in range(7)
    ]
    assert labels[1] == '"Number: "' and labels[6] == '"Reply: "'


# --- axe-core on every console page, for every role ----------------------------------------------


def pages_for(role: str, timeline: str, flagged_anchor: str) -> list[str]:
    pages = [
        "/staff/",
        "/staff/events",
        "/staff/events?since=2026-11-02&until=2026-11-01",
        timeline,
        "/staff/lookup",
        "/staff/lookup?q=23",
        "/staff/lookup?q=hello",
        "/staff/lookup?q=%2B14155550123",
        "/staff/rules",
        "/staff/account",
        "/staff/no-such-page",
    ]
    if role != "viewer":
        pages += [
            timeline + "?unmask=1",
            "/staff/lookup?q=%2B14155550199",
            "/staff/review",
            "/staff/review/decided",
        ]
    if role == "admin":
        pages += ["/staff/admin/staff", "/staff/admin/tokens", "/staff/admin/audit"]
    return pages


def test_every_console_page_passes_axe_for_every_role(console, browser):
    base = console["base"]
    for body in ["JOIN", "YES", "We have got to stop this bill", "HELP"]:
        text(base, body)
    text(base, "We have got to stop the noise", phone="+14155550177")
    dialogs: list[str] = []
    anonymous = new_page(browser, dialogs)
    for path in ("/staff/login",):
        anonymous.goto(base + path)
        assert_accessible(anonymous, f"anonymous {path}")
    anonymous.goto(enrolment_link(console, "new@example.com", "compliance"))
    assert_accessible(anonymous, "enrolment page")
    checked = 0
    for role in ("viewer", "compliance", "admin"):
        email = f"{role}@example.com"
        link_page = new_page(browser, dialogs)
        password, secret = create_staff(console, browser, email, role)
        page = new_page(browser, dialogs)
        page.goto(base + "/staff/")
        page.fill("#email", email)
        page.fill("#password", password)
        page.click("button[type=submit]")
        if secret:
            assert_accessible(page, f"{role} second factor")
            page.fill("#code", code_at(secret, 0))
            page.click("form button[type=submit]")
        expect(page.locator("h1")).to_have_text("Dashboard")
        page.goto(base + "/staff/events")
        timeline = page.locator("table.events a[href*='/staff/subscribers/']").first.get_attribute(
            "href"
        )
        for path in pages_for(role, timeline, ""):
            page.goto(base + path)
            assert_accessible(page, f"{role} {path}")
            checked += 1
        if role == "compliance":  # a refused decision, errors and all
            page.goto(base + "/staff/review")
            page.locator("article.review-item button[type=submit]").first.click()
            assert_accessible(page, "compliance refused decision")
        if role == "admin":  # the pages behind forms: a new account's link, a new second factor
            page.goto(base + "/staff/admin/staff")
            page.fill("input[name=email]", "another@example.com")
            page.click("main form button[type=submit]")
            expect(page.locator("#enrol-link")).to_be_visible()
            assert_accessible(page, "admin enrolment link")
            page.goto(base + "/staff/account")
            page.fill("#reauth_password", password)
            page.fill("#reauth_code", code_at(secret, 1))
            page.click("text=Continue")
            expect(page.locator("h1")).to_have_text("New second factor")
            assert_accessible(page, "admin new second factor")
        link_page.close()
    assert checked >= 40
    assert dialogs == []
