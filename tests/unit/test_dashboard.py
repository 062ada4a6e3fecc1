"""The dashboard's pages and actions through Flask's test client, on the local store:
escaping, CSRF, authentication, the bind rule, confirmations, and bounded store cost."""

from __future__ import annotations

import base64
import re
import time
from html import unescape
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from s3q import Queue, QueueConfig
from s3q.backends.local import LocalStore
from s3q.backends.memory import MemoryStore
from s3q.dashboard.app import SYNC_LIMIT, create_app
from s3q.dashboard.failed import purge_failed
from s3q.dashboard.metered import MeteredStore
from s3q.dashboard.security import Credentials, is_loopback
from s3q.pause import pause_state
from s3q.registry import PREFIX, WorkerRecord
from s3q.settings import Secret
from tests.acceptance.conftest import wait_for

EVIL = "<script>alert(1)</script>_request.json"


def fail(q: Queue, name: str, error: Exception, body: bytes = b'{"x": 1}') -> None:
    q.submit(name, body)
    job = q.claim("w")
    assert job is not None and job.name == name
    job.fail(error, retry=False)


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(MeteredStore(LocalStore(tmp_path / "q")), QueueConfig(max_attempts=1))


def client(queue: Queue, credentials: Credentials | None = None) -> FlaskClient:
    app: Flask = create_app(queue, credentials or Credentials(), refresh=1)
    app.testing = True
    return app.test_client()


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF field on the page"
    return match.group(1)


def confirmation(page: str) -> dict[str, str]:
    """The hidden fields of a confirmation page's form: what its "Yes" button posts."""
    form = page[page.index('<form method="post" action="/failed/action">'):]
    form = form[:form.index("</form>")]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))
    assert fields.get("confirmed") == "yes" and fields.get("selection"), form
    return {k: unescape(v) for k, v in fields.items()}


def test_every_page_escapes_request_names_and_bodies(queue: Queue) -> None:
    fail(queue, EVIL, ValueError("<b>bad</b> input"))
    queue.submit("x_request.json", b"<img src=x onerror=alert(2)>")
    c = client(queue)
    pages = {p: c.get(p).get_data(as_text=True)
             for p in ["/", "/failed", "/inflight", "/workers", "/request/" + EVIL,
                       "/request/x_request.json"]}
    for path, html in pages.items():
        assert "<script>alert" not in html and "<img src=x" not in html, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;_request.json" in pages["/failed"]
    assert "&lt;b&gt;bad&lt;/b&gt; input" in pages["/request/" + EVIL]
    assert "&lt;img src=x onerror=alert(2)&gt;" in pages["/request/x_request.json"]
    assert "ValueError" in pages["/failed"] and 'id="traceback"' in pages["/request/" + EVIL]


def test_actions_need_the_csrf_token_and_a_confirmation_stating_the_count(
        queue: Queue) -> None:
    for i in range(3):
        fail(queue, f"f{i}_request.json", KeyError("customer_id"))
    fail(queue, "other_request.json", TimeoutError("slow"))
    c = client(queue)
    page = c.get("/failed").get_data(as_text=True)
    assert re.search(r"KeyError</a> <span class=\"count\">3", page)  # most common first
    assert page.index("KeyError") < page.index("TimeoutError")
    form = {"do": "requeue:matching", "glob": "f*", "type": ""}
    assert c.post("/failed/action", data=form).status_code == 400  # no CSRF token
    token = csrf_of(page)
    confirm = c.post("/failed/action", data={**form, "csrf": token}).get_data(as_text=True)
    assert "Requeue 3 failed requests?" in confirm
    assert sorted(i.key for i in queue.ls("failed")) == [  # nothing done yet
        "f0_request.json", "f1_request.json", "f2_request.json", "other_request.json"]
    done = c.post("/failed/action", data=confirmation(confirm),
                  follow_redirects=True).get_data(as_text=True)
    assert "requeued 3 request(s)" in done
    assert [i.key for i in queue.ls("failed")] == ["other_request.json"]
    assert len(list(queue.ls("wait"))) == 3
    purge = {"do": "purge:one:other_request.json", "csrf": token}
    confirm = c.post("/failed/action", data=purge).get_data(as_text=True)
    assert "Purge 1 failed request?" in confirm
    c.post("/failed/action", data=confirmation(confirm))
    assert list(queue.ls("failed")) == [] and queue.error_record("other_request.json") is None
    overview = c.get("/").get_data(as_text=True)
    assert "requeue 3 failed request(s) matching &#39;f*&#39;" in overview and "3 of 3" in overview
    assert "local (" in overview  # who


def test_a_post_from_another_origin_is_refused(queue: Queue) -> None:
    c = client(queue)
    token = csrf_of(c.get("/").get_data(as_text=True))
    response = c.post("/pause", data={"csrf": token}, headers={"Origin": "http://evil.test"})
    assert response.status_code == 400 and pause_state(queue.store) is None
    assert c.post("/pause", data={"csrf": token, "reason": "deploy"}).status_code == 302
    state = pause_state(queue.store)
    assert state is not None and state.reason == "deploy" and state.by.startswith("local")
    assert "PAUSED" in c.get("/").get_data(as_text=True)
    c.post("/resume", data={"csrf": token})
    assert pause_state(queue.store) is None


def test_credentials_bearer_basic_and_the_sign_in_form(queue: Queue) -> None:
    token = Credentials(token=Secret("s3cret-token"))
    c = client(queue, token)
    assert c.get("/").status_code == 302  # to the sign-in form
    assert c.get("/metrics").status_code == 401  # scrapers get no redirect
    assert c.get("/", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert c.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 302
    csrf = csrf_of(c.get("/login").get_data(as_text=True))
    c.post("/login", data={"csrf": csrf, "token": "wrong"})
    assert c.get("/").status_code == 302
    c.post("/login", data={"csrf": csrf, "token": "s3cret-token"})
    assert c.get("/").status_code == 200

    basic = client(queue, Credentials(user="ops", password=Secret("pw")))
    denied = basic.get("/")
    assert denied.status_code == 401 and "Basic" in denied.headers["WWW-Authenticate"]
    good = base64.b64encode(b"ops:pw").decode()
    assert basic.get("/", headers={"Authorization": f"Basic {good}"}).status_code == 200
    bad = base64.b64encode(b"ops:nope").decode()
    assert basic.get("/", headers={"Authorization": f"Basic {bad}"}).status_code == 401


def test_signing_out_ends_the_session_and_its_cookie_replayed_is_refused(
        queue: Queue) -> None:
    c = client(queue, Credentials(token=Secret("s3cret-token")))
    csrf = csrf_of(c.get("/login").get_data(as_text=True))
    c.post("/login", data={"csrf": csrf, "token": "s3cret-token"})
    page = c.get("/").get_data(as_text=True)
    assert "Sign out" in page
    cookie = c.get_cookie("session")
    assert cookie is not None
    kept = cookie.value  # a copy of the cookie, kept elsewhere
    assert c.post("/logout", data={"csrf": "forged"}).status_code == 400  # CSRF checked
    assert c.get("/").status_code == 200
    out = c.post("/logout", data={"csrf": csrf_of(page)})
    assert out.status_code == 302 and out.headers["Location"].endswith("/login")
    assert "signed out" in c.get("/login").get_data(as_text=True)
    assert c.get("/").status_code == 302  # to the sign-in form
    c.set_cookie("session", kept)
    assert c.get("/").status_code == 302  # the old session stays ended
    csrf = csrf_of(c.get("/login").get_data(as_text=True))
    c.post("/login", data={"csrf": csrf, "token": "s3cret-token"})  # a new one may begin
    assert c.get("/").status_code == 200
    # Bearer and basic authentication keep no session: nothing to sign out of
    fresh = client(queue, Credentials(token=Secret("s3cret-token")))
    answer = fresh.get("/", headers={"Authorization": "Bearer s3cret-token"})
    assert answer.status_code == 200 and "Sign out" not in answer.get_data(as_text=True)


def test_without_credentials_only_loopback_host_names_are_served(queue: Queue) -> None:
    c = client(queue)
    assert c.get("/", headers={"Host": "127.0.0.1:8080"}).status_code == 200
    assert c.get("/", headers={"Host": "[::1]:8080"}).status_code == 200
    assert c.get("/", headers={"Host": "localhost"}).status_code == 200
    # DNS rebinding: a page on evil.test whose name now resolves to 127.0.0.1
    assert c.get("/", headers={"Host": "evil.test:8080"}).status_code == 400
    token = client(queue, Credentials(token=Secret("t")))
    assert token.get("/", headers={"Host": "dash.example:8080",
                                   "Authorization": "Bearer t"}).status_code == 200


def test_binding_beyond_loopback_needs_credentials() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    assert Credentials().bind_refusal("127.0.0.1") is None
    refusal = Credentials().bind_refusal("0.0.0.0")
    assert refusal is not None and "dashboard_token" in refusal
    assert Credentials(token=Secret("t")).bind_refusal("0.0.0.0") is None


def test_the_overview_never_lists_finish_whole(tmp_path: Path) -> None:
    inner = LocalStore(tmp_path / "big")
    for i in range(2500):
        inner.put(f"finish/{i:05d}_request.json", b"{}")
    store = MeteredStore(inner)
    q = Queue(store, QueueConfig())
    c = client(q)
    before = store.snapshot_counts()[0].get("LIST", 0)
    page = c.get("/").get_data(as_text=True)
    lists = store.snapshot_counts()[0]["LIST"] - before
    assert 'data-count="1000"' in page and "1,000+" in page
    # wait/, processing/, failed/ (one page each), finish/ (one page + one look past it),
    # leases, workers: never the 3 pages finish/ would take
    assert lists <= 7, lists
    assert re.search(r"this page: \d+ store request", page)


def test_purge_failed_deletes_only_the_listed_bytes(queue: Queue) -> None:
    fail(queue, "p_request.json", RuntimeError("x"))
    [info] = list(queue.ls("failed"))
    assert not purge_failed(queue, "p_request.json", '"another-etag"')
    assert [i.key for i in queue.ls("failed")] == ["p_request.json"]
    assert purge_failed(queue, "p_request.json", info.etag)
    assert list(queue.ls("failed")) == [] and queue.error_record("p_request.json") is None


def test_result_download_and_binary_preview(queue: Queue) -> None:
    queue.submit("bin_request.json", bytes(range(256)))
    job = queue.claim("w")
    assert job is not None
    job.complete(b"the result")
    c = client(queue)
    page = c.get("/request/bin_request.json").get_data(as_text=True)
    assert "binary, 256 bytes" in page and "00000000  00 01 02" in page
    download = c.get("/result/bin_request.json")
    assert download.data == b"the result"
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert c.get("/result/missing_request.json").status_code == 404
    assert c.get("/request/a/../b").status_code == 404


def test_a_large_selection_runs_in_the_background_with_its_progress_shown(
        queue: Queue) -> None:
    n = SYNC_LIMIT + 5
    for i in range(n):
        fail(queue, f"bulk{i:03d}_request.json", KeyError("k"))
    c = client(queue)
    token = csrf_of(c.get("/failed").get_data(as_text=True))
    form = {"do": "requeue:matching", "glob": "bulk*", "type": "KeyError", "csrf": token}
    confirm = c.post("/failed/action", data=form).get_data(as_text=True)
    assert f"Requeue {n} failed requests?" in confirm
    page = c.post("/failed/action", data=confirmation(confirm),
                  follow_redirects=True).get_data(as_text=True)
    assert f"requeueing {n} request(s) in the background" in page
    wait_for(lambda: f"{n} of {n}</td>" in c.get("/").get_data(as_text=True)
             .replace("\n", "").replace("    ", ""), 60, "the background requeue to end")
    assert list(queue.ls("failed")) == [] and len(list(queue.ls("wait"))) == n


def test_dead_workers_show_as_overdue_in_flight_and_stale(tmp_path: Path) -> None:
    now = [1_764_000_000.0]
    store = MemoryStore("dead", clock=lambda: now[0])
    q = Queue(store, QueueConfig(lease_ttl=10))
    for i in range(2):
        q.submit(f"{i}_request.json", b"{}")
    assert q.claim("ip-9/i-dead") is not None
    store.put(PREFIX + "ip-9/i-dead", WorkerRecord(
        id="ip-9/i-dead", host="ip-9", pid=1, version="0", slots=2, busy=1, paused=False,
        interval=60, started=now[0], heartbeat=now[0]).to_bytes())
    c = client(q)
    overdue, expired = '<strong class="bad">OVERDUE', '<strong class="warn">EXPIRED'
    assert overdue not in c.get("/inflight").get_data(as_text=True)
    now[0] += 10 + 2 + 1  # expired: a live worker would take it over
    time.sleep(1.1)  # the snapshot's ttl
    assert expired in c.get("/inflight").get_data(as_text=True)
    now[0] += 200  # nobody did: overdue; and the worker's record is stale
    time.sleep(1.1)
    inflight = c.get("/inflight").get_data(as_text=True)
    assert overdue in inflight and "ip-9/i-dead" in inflight
    assert '<strong class="bad">STALE' in c.get("/workers").get_data(as_text=True)
    problems = c.get("/").get_data(as_text=True)
    assert "expired lease(s) not taken over in time" in problems
    assert "stale worker record(s)" in problems


@pytest.mark.parametrize("target", ["/\t/evil.test/", "/\n/evil.test/", "/\r/evil.test/",
                                    "\t//evil.test/", "/\\evil.test/", "//evil.test/",
                                    "https://evil.test/"])
def test_sign_in_never_redirects_to_another_site(queue: Queue, target: str) -> None:
    """A link to the sign-in form with ?next= may come from anybody: the browser drops the
    tabs and newlines of a Location (WHATWG URL), so "/<TAB>/evil.test" is "//evil.test"."""
    c = client(queue, Credentials(token=Secret("s3cret-token")))
    csrf = csrf_of(c.get("/login").get_data(as_text=True))
    signed_in = c.post("/login", query_string={"next": target},
                       data={"csrf": csrf, "token": "s3cret-token"})
    assert signed_in.status_code == 302
    location = signed_in.headers["Location"]
    cleaned = re.sub(r"[\t\n\r]", "", location)
    assert cleaned.startswith("/") and not cleaned.startswith("//"), location


def test_a_request_named_like_a_result_download_has_its_page(queue: Queue) -> None:
    """Names may contain "/": a request called ``batch/result`` must reach its own page
    (its error, its requeue and purge buttons), not the result download of ``batch``."""
    fail(queue, "batch/result", ValueError("the error to see"))
    c = client(queue)
    failed = c.get("/failed").get_data(as_text=True)
    link = re.search(r'href="(/request/[^"]+)" class="request-link"', failed)
    assert link is not None
    page = c.get(link.group(1))
    assert page.status_code == 200, page.get_data(as_text=True)
    assert "the error to see" in page.get_data(as_text=True)
