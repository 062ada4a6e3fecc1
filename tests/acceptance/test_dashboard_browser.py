"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright, against
the real ``s3q dashboard`` and ``s3q worker`` executables on moto's S3. Each test drives the
pages as an operator would and saves a screenshot of every page it visits into
``test-artifacts/screenshots/`` (git-ignored)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from tests.acceptance.conftest import Cli, wait_for
from tests.s3server import free_port

CHROMIUM = os.environ.get("S3Q_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
# Without these, Chromium on a machine with no network hangs on background connections.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Every expectation waits this long: a loaded 2-core machine runs moto, a worker, the
#: dashboard and the browser at once.
WAIT_MS = 60_000

if not Path(CHROMIUM).exists():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)",
                allow_module_level=True)
expect.set_options(timeout=WAIT_MS)


@pytest.fixture
def dashboard(cli: Cli, procs: list[subprocess.Popen[str]]) -> str:
    return serve(cli, procs)


def serve(cli: Cli, procs: list[subprocess.Popen[str]], env: dict[str, str] | None = None,
          ) -> str:
    """``s3q dashboard`` on a free loopback port, refreshing every second; its URL."""
    port = free_port()
    procs.append(cli.spawn("dashboard", "--port", str(port), "--refresh", "1", env=env))
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        import urllib.request
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    url + "/login", timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    wait_for(up, 60, "the dashboard to answer")
    return url


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    profile = tmp_path / "chromium-profile"  # a fresh user-data dir per test
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def count(page: Page, state: str) -> Locator:
    return page.locator(f"#count-{state} .value")


def test_overview_counts_change_while_a_worker_runs(
        cli: Cli, procs: list[subprocess.Popen[str]], dashboard: str, page: Page) -> None:
    cli.submit(8)
    page.goto(dashboard + "/")
    expect(count(page, "wait")).to_have_attribute("data-count", "8")
    expect(page.locator("#live-workers")).to_have_text("0")
    shot(page, "01-overview-before")

    w1 = f"browser-w1-{uuid4().hex[:6]}"  # ids are locked host-wide: unique per test run
    procs.append(cli.worker("--worker-id", w1, "-c", "2",
                            env={"S3Q_TEST_SLEEP": "1.5", "S3Q_HEARTBEAT_INTERVAL": "2"}))
    # the page refreshes itself (htmx): no reload here
    expect(page.locator("#live-workers")).to_have_text("1")
    expect(count(page, "processing")).not_to_have_attribute("data-count", "0")
    page.goto(dashboard + "/inflight")
    expect(page.locator("h2", has_text=w1)).to_be_visible()
    expect(page.locator("table.inflight tbody tr").first).to_contain_text("held")
    shot(page, "02-in-flight")
    page.goto(dashboard + "/workers")
    row = page.locator("table.workers tbody tr", has_text=w1)
    expect(row).to_contain_text("live")
    expect(row.locator(".slot")).to_have_count(2)
    expect(page.locator("#scanner")).to_contain_text(f"{w1}, last scan")  # the only worker
    shot(page, "03-workers")
    page.goto(dashboard + "/")
    expect(count(page, "finish")).to_have_attribute("data-count", "8")
    expect(count(page, "wait")).to_have_attribute("data-count", "0")
    expect(page.locator("#problems")).to_contain_text("None")
    shot(page, "04-overview-after")
    assert cli.counts() == {"wait": 0, "processing": 0, "finish": 8, "failed": 0}


def test_read_a_failed_requests_traceback_and_requeue_it(
        cli: Cli, procs: list[subprocess.Popen[str]], dashboard: str, page: Page) -> None:
    names = cli.submit(3, prefix="bad")
    worker = cli.worker("--worker-id", f"browser-fail-{uuid4().hex[:6]}", "--max-attempts",
                        "1", "--burst", env={"S3Q_TEST_EXIT": "3"})
    procs.append(worker)
    assert worker.wait(120) == 0
    page.goto(dashboard + "/failed")
    expect(page.locator("h1")).to_contain_text("Failed: 3")
    expect(page.locator("#groups")).to_contain_text("HandlerError")
    shot(page, "05-failed")

    page.get_by_role("link", name=names[1]).click()
    expect(page.locator("#state")).to_contain_text("failed")
    expect(page.locator("#error-summary")).to_contain_text("exit code 3")
    expect(page.locator("#traceback")).to_contain_text("boom: cannot handle")
    expect(page.locator("#body")).to_contain_text(names[1])  # the JSON body, pretty-printed
    shot(page, "06-request-detail")

    page.get_by_role("button", name="Requeue").click()
    expect(page.locator("h1")).to_have_text("Requeue 1 failed request?")
    shot(page, "07-confirm-requeue")
    page.locator("#confirm").click()
    expect(page.locator(".flash")).to_contain_text("requeued 1 request(s)")
    expect(page.locator("h1")).to_contain_text("Failed: 2")
    expect(page.get_by_role("link", name=names[1])).to_have_count(0)
    shot(page, "08-failed-after-requeue")
    listed = cli.run("ls", "failed", "--json").stdout
    assert names[1] not in listed and names[0] in listed
    assert names[1] in cli.run("ls", "wait", "--json").stdout

    # the two left: select both, purge the selection
    for name in (names[0], names[2]):
        page.get_by_label(f"select {name}").check()
    page.get_by_role("button", name="Purge selected").click()
    expect(page.locator("h1")).to_have_text("Purge 2 failed requests?")
    expect(page.locator("#confirm-text")).to_contain_text("cannot be undone")
    shot(page, "09-confirm-purge-selection")
    page.locator("#confirm").click()
    expect(page.locator(".flash")).to_contain_text("purged 2 request(s)")
    expect(page.locator("#nothing")).to_have_text("No failed request.")
    assert cli.counts()["failed"] == 0


def test_pause_stops_claims_and_resume_starts_them_again(
        cli: Cli, procs: list[subprocess.Popen[str]], dashboard: str, page: Page) -> None:
    procs.append(cli.worker("--worker-id", f"browser-w2-{uuid4().hex[:6]}", "--poll-interval",
                            "1"))
    page.goto(dashboard + "/")
    expect(page.locator("#live-workers")).to_have_text("1")
    page.get_by_placeholder("reason (optional)").fill("deploying the handler")
    page.wait_for_timeout(2500)  # two live refreshes: what one types is kept
    expect(page.get_by_placeholder("reason (optional)")).to_have_value("deploying the handler")
    page.get_by_role("button", name="Pause the queue").click()
    expect(page.locator("#pause-banner")).to_contain_text("PAUSED")
    expect(page.locator("#pause-banner")).to_contain_text("deploying the handler")
    status = cli.run("status").stdout
    assert "PAUSED" in status and "deploying the handler" in status

    time.sleep(2)  # the worker's pause flag is at most a second old, plus one poll
    cli.submit(3, prefix="held")
    expect(count(page, "wait")).to_have_attribute("data-count", "3")
    time.sleep(4)  # several polls of the worker: it claims nothing
    assert cli.counts()["wait"] == 3 and cli.runs("start") == {}
    shot(page, "10-paused")

    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#pause-banner")).to_have_count(0)
    expect(count(page, "finish")).to_have_attribute("data-count", "3")
    shot(page, "11-resumed")
    assert "PAUSED" not in cli.run("status").stdout


def test_sign_in_with_the_token_then_sign_out(
        cli: Cli, procs: list[subprocess.Popen[str]], page: Page) -> None:
    token = "t0ken-for-a-browser-test-0123456789"
    url = serve(cli, procs, env={"S3Q_DASHBOARD_TOKEN": token})
    page.goto(url + "/failed")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("dashboard token").fill("not the token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".flash")).to_contain_text("wrong token")
    page.get_by_label("dashboard token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(url + "/failed")  # back where the visit began
    shot(page, "20-signed-in")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator(".flash")).to_contain_text("signed out")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    page.goto(url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # no way back in
