"""The admin in a real browser: Playwright driving Debian's Chromium against a live server.

Each test logs in through the real login form (no forced session) and leaves a full-page
screenshot in `screenshots/` (the folder the README names), so a failing run shows what the
browser saw. `scripts/install-chromium.sh` (run by `make test`) installs the browser.
"""

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from playwright.sync_api import Page, expect, sync_playwright

from caloria.management.commands.seed_demo import DEV_SUPERUSER, DEV_SUPERUSER_PASSWORD
from caloria.models import User
from dbops.models import BackupRecord

from .conftest import PROJECT_ROOT
from .pooling import DIRECT_PASSWORD, POOLED_PASSWORD

CHROMIUM = Path(os.environ.get("CALORIA_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = PROJECT_ROOT / "screenshots"
# What the machine's probe found necessary for headless Chromium as root on a closed network:
# without the background-networking flags it keeps trying to reach Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_health_results"),
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-chromium.sh (make test does)")
    # Playwright's sync API keeps an asyncio loop registered on this thread, so Django's
    # async-safety guard would refuse every ORM call the tests make between browser steps.
    # No async code of ours runs here; the guard is lifted for this module only.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context (no cookies) whose relative URLs go to the live server."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def seeded():
    """The demo data `make run` shows, with its development superuser."""
    call_command("seed_demo", users=12, entries=120, weight_days=3, verbosity=0)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def log_in(page: Page, username: str, password: str) -> None:
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/admin/$"))


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG contrast ratio of two computed CSS colours ("rgb(r, g, b)")."""

    def luminance(colour: str) -> float:
        channels = [int(value) / 255 for value in re.findall(r"\d+", colour)[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    lighter, darker = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def unreadable_headings(page: Page) -> list[str]:
    """Section headings whose text (or link) is hard to tell from the heading bar.

    3:1 is WCAG's minimum for large text; a plain link in an admin heading bar scores 1.0.
    """
    colours = page.evaluate(
        """() => [...document.querySelectorAll('#content-main .module h2')].map(h2 => [
            h2.textContent.trim(),
            getComputedStyle(h2.querySelector('a') || h2).color,
            getComputedStyle(h2).backgroundColor,
        ])"""
    )
    return [text for text, fg, bg in colours if contrast_ratio(fg, bg) < 3]


def test_an_anonymous_visitor_is_sent_to_the_login_page(page):
    for path in ("/admin/", "/admin/database/", "/admin/caloria/user/"):
        page.goto(path)
        expect(page).to_have_url(re.compile(r"/admin/login/\?next="))
        expect(page.locator("#id_username")).to_be_visible()
    screenshot(page, "admin-login")

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))


def test_a_wrong_password_keeps_the_visitor_on_the_login_page(page, seeded):
    page.goto("/admin/login/")
    page.fill("#id_username", DEV_SUPERUSER)
    page.fill("#id_password", "not-the-password")
    page.click("input[type=submit]")

    expect(page.locator(".errornote")).to_contain_text("correct username and password")
    expect(page).to_have_url(re.compile(r"/admin/login/"))


def test_staff_log_in_and_see_the_seeded_users(page, seeded):
    log_in(page, DEV_SUPERUSER, DEV_SUPERUSER_PASSWORD)
    expect(page.locator("#database-panel")).to_contain_text("all checks OK")
    screenshot(page, "admin-index")

    page.click("#content-main a[href='/admin/caloria/user/']")

    expect(page.locator("#result_list")).to_be_visible()
    for number in (1, 12):
        expect(page.locator("#result_list")).to_contain_text(f"demo-{number:06d}")
    user_count = User.objects.count()
    expect(page.locator(".paginator")).to_contain_text(f"{user_count} users")
    screenshot(page, "admin-users")


def test_backup_history_lists_a_real_verified_backup(page, seeded):
    call_command("dbbackup", "--verify", verbosity=0)
    backup = BackupRecord.objects.get()
    log_in(page, DEV_SUPERUSER, DEV_SUPERUSER_PASSWORD)

    page.click("#content-main a[href='/admin/dbops/backuprecord/']")

    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(backup.filename)
    expect(rows.first).to_contain_text("Succeeded")
    expect(rows.first).to_contain_text("Passed")
    screenshot(page, "backup-history")


def test_the_database_status_page_shows_the_database_and_never_its_password(page, seeded):
    call_command("dbbackup", "--verify", verbosity=0)
    log_in(page, DEV_SUPERUSER, DEV_SUPERUSER_PASSWORD)

    page.click("#database-panel h2 a")

    expect(page).to_have_url(re.compile(r"/admin/database/$"))
    content = page.locator("#content-main")
    expect(content).to_contain_text(re.compile(r"postgresql \d+\.\d+"))
    expect(content).to_contain_text(connection.settings_dict["NAME"])
    expect(content).to_contain_text("caloria_foodentry")
    expect(content).to_contain_text("DatabaseReachable(alias='default')")
    expect(content).to_contain_text(str(settings.DBOPS_ENV_FILE))
    expect(content.locator("tr", has_text="Passed")).to_have_count(1)
    expect(content.locator(".module h2")).to_have_count(11)
    expect(content.locator(".module", has_text="Standby")).to_contain_text("none configured")
    expect(content.locator(".module", has_text="WAL archiving")).to_contain_text("off")
    expect(content.locator(".module h2", has_text="Off-site")).to_be_visible()
    expect(content.locator(".module h2", has_text="Newest restore")).to_be_visible()
    assert unreadable_headings(page) == []
    text = page.content()
    assert settings.SECRET_KEY not in text
    if connection.settings_dict.get("PASSWORD"):
        assert connection.settings_dict["PASSWORD"] not in text
    screenshot(page, "database-status")


def test_the_status_page_charts_the_last_30_backups_and_the_newest_verification(page, seeded):
    call_command("dbbackup", "--verify", verbosity=0)
    verified = BackupRecord.objects.get()
    start = verified.started_at
    for n in range(1, 32):
        when = start + timedelta(hours=n)
        failed = n % 10 == 0
        BackupRecord.objects.create(
            started_at=when,
            finished_at=when + timedelta(seconds=n),
            status="failed" if failed else "succeeded",
            filename="" if failed else f"chart-{n:02d}.psql.bin.gz",
            size=None if failed else 1000 * n,
            duration_seconds=None if failed else float(n),
        )
    log_in(page, DEV_SUPERUSER, DEV_SUPERUSER_PASSWORD)

    page.goto("/admin/database/")

    chart = page.locator("#backup-chart svg")
    expect(chart).to_be_visible()
    runs = chart.locator("rect.backup-run")
    expect(runs).to_have_count(30)  # the 30 newest of 32 runs: 2..31, three of them failed
    expect(chart.locator("rect.backup-run.failed")).to_have_count(3)
    expect(chart.locator("circle.backup-duration-point")).to_have_count(27)
    # The verified backup is older than the 30 newest: the caption still names it.
    expect(chart.locator("rect.verified")).to_have_count(0)
    caption = page.locator("#backup-chart figcaption")
    expect(caption).to_contain_text(
        f"Newest verification: passed at {verified.verified_at:%Y-%m-%d}"
    )
    expect(caption).to_contain_text(verified.filename)
    newest = runs.last.locator("title")
    expect(newest).to_have_text(re.compile(r"chart-31\.psql\.bin\.gz, 30\.3\sKB in 31\.0 s\s*$"))
    # The largest backup fills the plot's height; one of half its size, half of it.
    heights = runs.evaluate_all("rects => rects.map(r => r.getBBox().height)")
    assert max(heights) == pytest.approx(136, abs=0.1)
    assert heights[-1] == pytest.approx(136, abs=0.1) and heights[14] == pytest.approx(
        136 * 16 / 31, abs=0.1
    )
    # Nothing from another host (no CDN): every script, style and image is the site's own.
    external = "script[src*='//'], link[href*='//'], img[src*='//'], image[href*='//']"
    assert page.locator(external).count() == 0
    screenshot(page, "backup-chart")


def test_the_newest_verified_backup_is_marked_in_the_chart(page, seeded):
    call_command("dbbackup", "--verify", verbosity=0)
    log_in(page, DEV_SUPERUSER, DEV_SUPERUSER_PASSWORD)

    page.goto("/admin/database/")

    expect(page.locator("#backup-chart rect.backup-run")).to_have_count(1)
    expect(page.locator("#backup-chart rect.backup-run.verified")).to_have_count(1)
    expect(page.locator("#backup-chart figcaption")).to_contain_text("Newest verification: passed")


def test_the_admin_works_through_pgbouncer_in_transaction_mode(browser, pooled_site):
    """Caloria on gunicorn with DATABASE_URL at PgBouncer (tests/pooling.py): log in, the user
    list, a change page saved, and the status page that names the pooler."""
    context = browser.new_context(base_url=pooled_site.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        log_in(page, DEV_SUPERUSER, DEV_SUPERUSER_PASSWORD)
        page.goto("/admin/caloria/user/")
        expect(page.locator("#result_list")).to_contain_text("demo-000001")
        page.click("#result_list a:text('demo-000001')")
        expect(page).to_have_url(re.compile(r"/admin/caloria/user/\d+/change/$"))
        change_page = page.url
        page.fill("#id_first_name", "Pooled")
        page.click("input[name=_save]")
        expect(page.locator(".messagelist .success")).to_contain_text("was changed successfully")
        page.goto(change_page)
        expect(page.locator("#id_first_name")).to_have_value("Pooled")

        page.goto("/admin/database/")
        content = page.locator("#content-main")
        expect(content).to_contain_text(pooled_site.database)
        database = content.locator(".module").first
        expect(database).to_contain_text(re.compile(r"pooler\s*pgbouncer \(transaction mode\)"))
        expect(database).to_contain_text(re.compile(r"server-side cursors\s*off"))
        expect(database).to_contain_text(
            re.compile(r"direct connection\s*postgresql .*password=\*+: answered in")
        )
        text = page.content()
        for secret in (DIRECT_PASSWORD, POOLED_PASSWORD):
            assert secret not in text
        screenshot(page, "database-status-pgbouncer")
    finally:
        context.close()
