"""A lease whose GET is denied (another account's object, a KMS key not granted): the
looks at every lease (`s3q status`, the dashboard's snapshot, a burst's outlook) raised, so
one such lease made `s3q status` (and `--check`, which ValidateService runs), every
dashboard page and a burst worker fail altogether. They now name it and go on."""

from __future__ import annotations

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from s3q.cli.status import queue_status, render_status
from s3q.dashboard.snapshot import take_snapshot
from tests.unit.harness import Denies
from tests.unit.test_dashboard import client

DENIED = ".s3q/lease/b_request.json"


def held() -> Queue:
    """Three requests in flight, b's lease unreadable by this process."""
    mem = MemoryStore("unreadable")
    workers = Queue(mem, QueueConfig())
    for name in ("a_request.json", "b_request.json", "c_request.json"):
        workers.submit(name, b"{}")
        assert workers.claim("w") is not None
    return Queue(Denies(mem, [DENIED]), QueueConfig())


def test_status_names_a_lease_it_cannot_read_and_shows_the_others() -> None:
    status = queue_status(held())
    assert [r["name"] for r in status["in_flight"]] == ["a_request.json", "c_request.json"]
    [problem] = [p for p in status["problems"] if "cannot be read" in p]
    assert problem.startswith("1 lease(s) in .s3q/lease/ cannot be read")
    assert "b_request.json: AccessDenied" in problem
    assert status["healthy"] is False


def test_the_dashboard_names_a_lease_it_cannot_read_and_shows_the_others() -> None:
    snap = take_snapshot(held())
    assert [r.name for r in snap.in_flight] == ["a_request.json", "c_request.json"]
    assert any("b_request.json: AccessDenied" in p for p in snap.problems)
    assert snap.leases_complete


def test_a_burst_leaves_a_request_whose_lease_it_cannot_read() -> None:
    outlook = held().outlook()
    assert ("b_request.json", f"its lease cannot be read (AccessDenied: GetObject {DENIED})"
            ) in outlook.left


def role_denied() -> Queue:
    """As :func:`held`, and the scanner role (taken by the first claim) unreadable too."""
    denied = held().store
    assert isinstance(denied, Denies)
    denied.keys.add(".s3q/scanner")  # (written by the same worker as b's lease)
    return Queue(denied, QueueConfig())


def test_status_and_the_dashboard_go_on_when_the_scanner_role_cannot_be_read() -> None:
    """The worker that wrote b's lease holds the scanner role, whose GET is denied as
    well: `s3q status` (since it says who scans) and every dashboard page read the role
    unguarded, so they failed altogether with it, the unreadable lease never named. They
    say the role cannot be read and judge OVERDUE by their own scan interval."""
    queue = role_denied()
    status = queue_status(queue)
    assert [r["name"] for r in status["in_flight"]] == ["a_request.json", "c_request.json"]
    assert any("b_request.json: AccessDenied" in p for p in status["problems"])
    assert status["scanner"]["live"] is False and status["scanner"]["worker"] is None
    assert "AccessDenied: GetObject .s3q/scanner" in status["scanner"]["error"]
    line = next(t for t in render_status(status).splitlines() if t.startswith("scanner"))
    assert "cannot be read" in line and "AccessDenied" in line
    snap = take_snapshot(queue)
    assert [r.name for r in snap.in_flight] == ["a_request.json", "c_request.json"]
    assert snap.scanner is not None and snap.scanner.error is not None
    c = client(queue)
    for page in ("/", "/inflight", "/workers", "/request/a_request.json"):
        got = c.get(page)
        assert got.status_code == 200, page
    assert "cannot be read (AccessDenied" in c.get("/workers").get_data(as_text=True)


def test_the_dashboards_request_page_says_its_lease_cannot_be_read() -> None:
    """It answered 500 (Internal Server Error), the rest of the page lost with it."""
    page = client(held()).get("/request/b_request.json")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "cannot be read" in text and "AccessDenied" in text


def test_the_request_page_shows_the_rest_when_the_request_s_own_objects_cannot_be_read_either(
        ) -> None:
    """The worker whose lease this process may not read (another account's object, a KMS
    key not granted) wrote the request's processing/ view and its error record the same
    way: the page's GET of the view (the body preview) raised, and the page answered 500
    all the same, though the lease was shown as 'cannot be read'."""
    from s3q import layout

    mem = MemoryStore("unreadable")
    workers = Queue(mem, QueueConfig())
    workers.submit("b_request.json", b"{}")
    job = workers.claim("w")
    assert job is not None
    mem.put(layout.key(layout.ERRORS, "b_request.json"), b"{}")  # (an earlier dead letter's)
    denied = Denies(mem, [DENIED, "processing/b_request.json", ".s3q/error/b_request.json"],
                    ops=("get", "open"))
    page = client(Queue(denied, QueueConfig())).get("/request/b_request.json")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "AccessDenied: GetObject processing/b_request.json" in text
    assert "AccessDenied: GetObject .s3q/error/b_request.json" in text


def test_a_pause_or_worker_record_nested_too_deep_is_read_as_unreadable() -> None:
    """As the role's and a lease's: a record nested deeper than json.loads goes raised
    RecursionError out of every worker's pause check and out of s3q status."""
    from s3q.pause import PAUSE_KEY, pause_state
    from s3q.registry import PREFIX, Registry

    mem = MemoryStore("deep")
    mem.put(PAUSE_KEY, b"[" * 100000)
    mem.put(PREFIX + "w", b"[" * 100000)
    state = pause_state(mem)
    assert state is not None and "unreadable" in state.reason
    assert [e.record for e in Registry(mem).records()] == [None]
