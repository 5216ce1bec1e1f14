"""The staff console in a real browser: headless Chromium driven by Playwright.

gunicorn runs the app for real; texts arrive through signed webhooks; a
compliance officer is created with the CLI, signs in with password and TOTP,
searches, opens a timeline, decides a review item and downloads an export.
Hostile texts must render as inert text. Screenshots of the dashboard and a
timeline are taken on every run; with UPDATE_SCREENSHOTS=1 they are written to
docs/screenshots/ (the README shows them), otherwise to the test's tmp folder,
so an ordinary run leaves the work tree clean.

Needs Debian's Chromium (/usr/bin/chromium). `.ci/run` installs it and sets
REQUIRE_BROWSER=1, so in CI a missing browser fails instead of skipping.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import requests

from tests.servers import PROJECT, free_port, gunicorn, service_env
from tests.twilio_helpers import (
    SHORT_CODE,
    inbound_params,
    new_message_sid,
    sign,
)

SCREENSHOTS = PROJECT / "docs" / "screenshots"
UPDATE_SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PHONE = "+14155550123"
SCRIPT = '<script>alert("xss")</script>'
IMG = '"><img src=x onerror=alert(1)>'

if not Path(CHROMIUM).exists():
    if os.environ.get("REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"REQUIRE_BROWSER=1 but there is no Chromium at {CHROMIUM}")
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt-get install chromium; CI requires it)",
        allow_module_level=True,
    )

from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.fixture
def console(database_url, tmp_path):
    """gunicorn serving the app on loopback, over plain HTTP like `make run`."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(database_url, base, tmp_path, SECRET_KEY="browser-secret")
    with gunicorn(env, port, tmp_path / "web.log"):
        yield {"base": base, "env": env}


def text(base: str, body: str, phone: str = PHONE) -> None:
    params = inbound_params(phone, body, to=SHORT_CODE, message_sid=new_message_sid())
    url = base + "/twilio/sms"
    response = requests.post(url, data=params, headers={"X-Twilio-Signature": sign(url, params)})
    assert response.status_code == 200


STAFF_PASSWORD = "quokka marmalade zeppelin"


def staff_command(console, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "staff", *args],
        cwd=PROJECT,
        env=console["env"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()


def enrolment_link(console, email: str, role: str) -> str:
    """`staff create` prints the single-use enrolment link as its last line."""
    last = staff_command(console, "create", email, "--role", role)[-1]
    assert last.startswith("enrol: " + console["base"] + "/staff/enrol/"), last
    return last.removeprefix("enrol: ")


def code_at(secret: str, steps: int, margin: float = 8.0) -> str:
    """The code `steps` time steps from now (the server accepts one step of drift either way).

    A code one step off is still one step off when the server reads it only if no step
    boundary falls in between, so with less than `margin` seconds left in this step it
    waits for the next one: a browser that takes a few seconds to submit (as on a busy CI
    machine) still sends a code the server accepts.
    """
    totp = pyotp.TOTP(secret)
    left = totp.interval - time.time() % totp.interval
    if left < margin:
        time.sleep(left + 0.05)
    return totp.at(time.time() + steps * totp.interval)


def create_staff(console, browser, email: str, role: str) -> tuple[str, str | None]:
    """An account made with the CLI and set up by its owner through the link, in the browser.

    The enrolment's code is the previous step's, so a sign-in right after may use the
    current one (each code works once).
    """
    link = enrolment_link(console, email, role)
    page = browser.new_page()
    page.goto(link)
    secret = None
    if page.locator("#otpauth-uri").count():
        uri = page.get_attribute("#otpauth-uri", "href")
        secret = parse_qs(urlsplit(uri).query)["secret"][0]
    page.fill("#password", STAFF_PASSWORD)
    page.fill("#confirmation", STAFF_PASSWORD)
    if secret:
        page.fill("#code", code_at(secret, -1))
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/staff/login$"))
    page.context.close()
    return STAFF_PASSWORD, secret


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


def new_page(browser, dialogs: list):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    return page


def sign_in(page, base, email, password, secret=None):
    page.goto(base + "/staff/")
    expect(page).to_have_url(re.compile(r"/staff/login"))
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    if secret:
        expect(page).to_have_url(re.compile(r"/staff/login/code$"))
        page.fill("#code", code_at(secret, 0))
        page.click("form button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")


def assert_inert(page, dialogs):
    """Hostile texts are on the page as text, and nothing they contain ran or rendered."""
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("script").count() == 0
    assert dialogs == []


def test_compliance_officer_works_the_console(console, browser, tmp_path):
    base = console["base"]
    for body in ["JOIN", "YES", "We have got to stop this bill", SCRIPT, IMG]:
        text(base, body)
    for i in range(6):
        text(base, "JOIN", phone=f"+1415555{i:04d}")
    text(base, "YES", phone="+14155550001")
    text(base, "STOP", phone="+14155550002")
    password, secret = create_staff(console, browser, "officer@example.com", "compliance")
    assert secret

    dialogs: list[str] = []
    page = new_page(browser, dialogs)
    sign_in(page, base, "officer@example.com", password, secret)
    expect(page.locator("svg.chart")).to_be_visible()
    shots = SCREENSHOTS if UPDATE_SCREENSHOTS else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    assert (shots / "dashboard.png").stat().st_size > 0
    assert_inert(page, dialogs)

    # Search by phone in a national format, then open the timeline.
    page.click("text=Event log")
    page.fill("input[name=phone]", "(415) 555-0123")
    page.click("form.search button[type=submit]")
    rows = page.locator("table.events tbody tr")
    expect(rows).to_have_count(5)
    expect(page.locator("table.events")).to_contain_text(SCRIPT)
    expect(page.locator("table.events")).to_contain_text("+1 •••• 23")
    assert_inert(page, dialogs)
    rows.first.locator("a").click()
    expect(page.locator("h1")).to_contain_text("Subscriber +1 •••• 23")
    expect(page.locator("ol.timeline")).to_contain_text(IMG)
    expect(page.locator("ol.timeline")).to_contain_text("Msg & data rates may apply")
    expect(page.locator("text=Intact: 5 events verified")).to_be_visible()
    page.screenshot(path=str(tmp_path / "timeline-search.png"), full_page=True)
    assert_inert(page, dialogs)
    page.click("text=Show full number")
    expect(page.locator("h1")).to_contain_text(PHONE)

    # Work the review item.
    page.click("text=Review queue")
    item = page.locator("article.review-item")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("We have got to stop this bill")
    item.locator("input[value=opt_out]").check()
    item.locator("textarea").fill("A reasonable person would read this as stop")
    item.locator("button[type=submit]").click()
    expect(page.locator(".flash")).to_contain_text("Recorded as an opt-out")
    expect(page.locator("text=Nothing waits for review.")).to_be_visible()

    # Download an export of this number's events.
    page.goto(base + "/staff/events?phone=%2B14155550123")
    with page.expect_download() as download_info:
        page.click("a:text-is('CSV')")
    download = download_info.value
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    exported = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert len(exported) == 6  # five texts and the staff decision
    assert exported[0]["kind"] == "staff_decision" and exported[0]["status_after"] == "opted_out"
    # Issue 15: E.164 digits, which spreadsheets read as they are (no "'+1…" apostrophe).
    assert {row["phone_e164_digits"] for row in exported} == {PHONE[1:]}
    assert SCRIPT in {row["body"] for row in exported}
    assert dialogs == []


def test_viewer_sees_masked_numbers_and_cannot_export(console, browser):
    base = console["base"]
    text(base, IMG)
    password, secret = create_staff(console, browser, "viewer@example.com", "viewer")
    assert secret is None
    dialogs: list[str] = []
    page = new_page(browser, dialogs)
    sign_in(page, base, "viewer@example.com", password)
    page.click("text=Event log")
    expect(page.locator("table.events")).to_contain_text("+1 •••• 23")
    assert PHONE not in page.content() and "0123" not in page.content()
    assert page.locator("input[name=phone]").count() == 0  # no lookup by number for viewers
    assert page.locator("text=CSV").count() == 0
    assert_inert(page, dialogs)
    response = page.goto(base + "/staff/events/export.csv")
    assert response.status == 403
    # Readable on a phone: nothing wider than the screen but the scrollable tables.
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/staff/", "/staff/events"):
        page.goto(base + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    page.goto(base + "/staff/")
    page.click("text=Sign out")
    expect(page).to_have_url(re.compile(r"/staff/login$"))
    page.goto(base + "/staff/")
    expect(page).to_have_url(re.compile(r"/staff/login"))


def read_qr_code(png: bytes) -> str:
    """The text of the QR code in a screenshot, decoded from its pixels (zxing-cpp)."""
    import zxingcpp
    from PIL import Image

    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(found) == 1, "one QR code on the page"
    return found[0].text


def test_a_new_compliance_officer_enrols_from_a_link(console, browser):
    """Issue 13: the officer sets their own password and second factor from a single-use link,
    scanning the QR code; then signs in and changes the password. Nobody else saw either."""
    base = console["base"]
    link = enrolment_link(console, "new.officer@example.com", "compliance")
    dialogs: list[str] = []
    page = new_page(browser, dialogs)
    page.goto(link)
    expect(page.locator("h1")).to_have_text("Set up your account")
    uri = read_qr_code(page.locator("#totp-qr svg").screenshot())
    assert uri == page.get_attribute("#otpauth-uri", "href")
    assert uri.startswith("otpauth://totp/") and "new.officer%40example.com" in uri
    secret = parse_qs(urlsplit(uri).query)["secret"][0]

    # A breached password is refused; the link still works after the refusal.
    page.fill("#password", "password1234")
    page.fill("#confirmation", "password1234")
    page.fill("#code", code_at(secret, -1))
    page.click("button[type=submit]")
    expect(page.locator(".flash-error")).to_contain_text("too easy to guess")
    page.fill("#password", STAFF_PASSWORD)
    page.fill("#confirmation", STAFF_PASSWORD)
    page.fill("#code", code_at(secret, -1))
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/staff/login$"))
    expect(page.locator(".flash")).to_contain_text("Your credentials are set")
    assert page.goto(link).status == 404  # single use

    sign_in(page, base, "new.officer@example.com", STAFF_PASSWORD, secret)
    page.click("a.who")
    expect(page.locator("h1")).to_have_text("Your account")
    new_password = "harmonica walrus umbrella"
    page.fill("#current_password", STAFF_PASSWORD)
    page.fill("#code", code_at(secret, 1))
    page.fill("#new_password", new_password)
    page.fill("#confirmation", new_password)
    page.click("text=Change password")
    expect(page.locator(".flash")).to_contain_text("Your password is changed")
    expect(page.locator("a.who")).to_contain_text("new.officer@example.com")  # still signed in
    page.click("text=Sign out")

    for password, expected in ((STAFF_PASSWORD, r"/staff/login\?"), (new_password, r"/code$")):
        page.goto(base + "/staff/login")
        page.fill("#email", "new.officer@example.com")
        page.fill("#password", password)
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(expected))
    expect(page.locator("h1")).to_have_text("Second factor")  # the new password was accepted
    assert dialogs == []


def test_screenshots_folder_is_where_the_readme_says():
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    assert "docs/screenshots/dashboard.png" in readme and "docs/screenshots/timeline.png" in readme


# --- hostile input: every attacker-controlled field on every page (docs/reliability.md) ------

# Each payload would leave an element whose id starts with "xss" (or a dialog) if it ever ran.
PAYLOADS = [
    '<script id=xss1>alert("xss-1")</script>',
    '"><img src=x onerror=alert(2) id=xss2>',
    "<svg id=xss3 onload=alert(3)>",
    '\'><iframe id=xss4 src="javascript:alert(4)"></iframe>',
    '</textarea></title><a id=xss5 href="javascript:alert(5)">click</a>',
    "{{ 7*7 }}<b id=xss6>{% raw %}",
]
# A sender that is markup: refused at the webhook (From must be a phone number), so it is
# searched for below, never stored. The second subscriber is an ordinary number.
HOSTILE_FROM = "<img src=x onerror=alert(7) id=xss7>"
OTHER_PHONE = "+14155550177"
HOSTILE_SEARCH = "<script>alert(8)</script><i id=xss8>"


def assert_nothing_injected(page, dialogs, where: str) -> None:
    """No payload ran (no dialog) and none became markup (no element it would have created)."""
    assert page.locator("[id^=xss]").count() == 0, where
    assert page.locator("script, iframe, img[src=x]").count() == 0, where
    assert dialogs == [], where


def test_hostile_input_is_inert_on_every_page_that_shows_it(console, browser, tmp_path):
    base = console["base"]
    text(base, "JOIN")
    for payload in PAYLOADS:
        text(base, payload)
    text(base, "We have got to stop this " + PAYLOADS[1])  # flagged for review
    text(base, "We have got to stop " + PAYLOADS[0], phone=OTHER_PHONE)
    refused = inbound_params(HOSTILE_FROM, "JOIN", to=SHORT_CODE, message_sid=new_message_sid())
    url = base + "/twilio/sms"
    answer = requests.post(url, data=refused, headers={"X-Twilio-Signature": sign(url, refused)})
    assert answer.status_code == 400
    password, secret = create_staff(console, browser, "admin@example.com", "admin")
    dialogs: list[str] = []
    page = new_page(browser, dialogs)
    sign_in(page, base, "admin@example.com", password, secret)

    visited = []

    def visit(path: str, must_show: str | None = None) -> None:
        response = page.goto(base + path)
        assert response.status in (200, 400), (path, response.status)
        if must_show:
            assert must_show in page.inner_text("main"), path
        assert_nothing_injected(page, dialogs, path)
        visited.append(path)

    visit("/staff/")
    visit("/staff/events?unmask=1", PAYLOADS[0])
    visit("/staff/events", PAYLOADS[3])
    visit("/staff/events?text=" + requests.utils.quote(HOSTILE_SEARCH))
    assert page.input_value("input[name=text]") == HOSTILE_SEARCH  # echoed as a value, inert
    visit("/staff/events?phone=" + requests.utils.quote(HOSTILE_SEARCH))
    visit("/staff/events?unmask=1&phone=" + requests.utils.quote(HOSTILE_FROM))
    visit("/staff/events?unmask=1&phone=" + requests.utils.quote(OTHER_PHONE), OTHER_PHONE)
    page.goto(base + "/staff/events?unmask=1")
    timelines = sorted(
        set(
            page.eval_on_selector_all(
                "table.events a[href*='/staff/subscribers/']",
                "links => links.map(link => link.getAttribute('href').split('?')[0])",
            )
        )
    )
    assert len(timelines) == 2
    for path in timelines:
        visit(path)
        visit(path + "?unmask=1")
    visit("/staff/review?unmask=1", OTHER_PHONE)

    # A decision whose reason is a payload: shown on the timeline and in the audit log.
    item = page.locator("article.review-item").first
    item.locator("input[value=not_opt_out]").check()
    item.locator("textarea").fill("Not a stop: " + PAYLOADS[4])
    item.locator("button[type=submit]").click()
    expect(page.locator(".flash")).to_contain_text("Recorded as not an opt-out")
    assert_nothing_injected(page, dialogs, "review decision")
    for path in timelines:
        visit(path)

    # An API token named with a payload.
    visit("/staff/admin/tokens")
    page.fill("input[name=name]", PAYLOADS[2])
    page.click("main form button[type=submit]")
    expect(page.locator("code.secret")).to_be_visible()
    assert PAYLOADS[2] in page.inner_text("main")
    assert_nothing_injected(page, dialogs, "token created")
    visit("/staff/admin/tokens", PAYLOADS[2])
    visit("/staff/admin/staff")
    visit("/staff/admin/audit", "id=xss8")  # the audited search, JSON-escaped

    # The evidence bundles, opened from disk the way a lawyer would open them.
    for path in timelines:
        with page.expect_download() as download_info:
            page.goto(base + path)
            page.click("a:text-is('printable HTML')")
        saved = tmp_path / f"evidence-{path.rsplit('/', 1)[1]}.html"
        download_info.value.save_as(saved)
        assert "Content-Security-Policy" in saved.read_text(encoding="utf-8")  # no script runs
        page.goto(saved.as_uri())
        assert PAYLOADS[0] in page.inner_text("body")
        assert_nothing_injected(page, dialogs, saved.name)
        visited.append(saved.name)
    assert len(visited) >= 15
