"""A lease whose GET is denied (another account's object, a KMS key not granted): the
looks at every lease (`s3q status`, the dashboard's snapshot, a burst's outlook) raised, so
one such lease made `s3q status` (and `--check`, which ValidateService runs), every
dashboard page and a burst worker fail altogether. They now name it and go on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from s3q import Queue, QueueConfig
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.cli.status import queue_status
from s3q.dashboard.snapshot import take_snapshot
from s3q.store import StoreError

T = TypeVar("T")
DENIED = ".s3q/lease/b_request.json"


class DeniedRead(DelegatingStore):
    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "get" and args.get("key") == DENIED:
            raise StoreError(f"AccessDenied: GetObject {DENIED}")
        return fn()


def held() -> Queue:
    """Three requests in flight, b's lease unreadable by this process."""
    mem = MemoryStore("unreadable")
    workers = Queue(mem, QueueConfig())
    for name in ("a_request.json", "b_request.json", "c_request.json"):
        workers.submit(name, b"{}")
        assert workers.claim("w") is not None
    return Queue(DeniedRead(mem), QueueConfig())


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
