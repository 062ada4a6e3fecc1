"""Answers that hold for every key (``StoreRefused``: rejected or missing credentials, a
bucket that does not exist, a clock S3 finds too skewed) met by the readers other than the
claim: the takeover scan, recovery, the bulk operator commands, status and the dashboard.
Such an answer says nothing of the object asked: nothing may be reported, marked or
counted per object because of it, and a run over many requests stops at it (nothing was
done by the refused request) instead of going through every one of them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from s3q import Queue, QueueConfig
from s3q.backends import open_store
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.bulk import BulkIncomplete
from s3q.recovery import RecoveryIncomplete
from s3q.store import Store, StoreRefused, StoreUnavailable
from tests.unit.harness import FakeClock

T = TypeVar("T")
NAMES = [f"r{i}_request.json" for i in range(3)]
EXPIRED = "S3 rejected the credentials (ExpiredToken)"


class Refuses(DelegatingStore):
    """Once ``on``, every request but a LIST (made before the credentials expired) is
    refused whatever its key (only ``ops``, if given); or once ``after`` is listed (the
    credentials expire just after that LIST)."""

    def __init__(self, inner: Store, ops: tuple[str, ...] = ()) -> None:
        super().__init__(inner)
        self.on, self.ops, self.refused = False, ops, 0
        self.after: str | None = None

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if self.on and op != "list" and (not self.ops or op in self.ops):
            self.refused += 1
            raise StoreRefused(f"{EXPIRED} for {op} {args.get('key', args.get('dst'))}")
        result = fn()
        if op == "list" and self.after is not None and args["prefix"].endswith(self.after):
            self.on = True
        return result


def dead_letters(qdir: Path) -> None:
    q = Queue(str(qdir), QueueConfig(max_attempts=1))
    for name in NAMES:
        q.submit(name, b"{}")
        job = q.claim("w")
        assert job is not None
        job.fail("broken")


def test_a_bulk_requeue_stops_at_the_store_refusing_every_request(tmp_path: Path) -> None:
    """requeue --all (and purge, the dashboard's actions: bulk.each) whose credentials
    expire after its listing: the first refusal ends it, the others not attempted, none of
    them said to have failed of its own nor of an unknown outcome (nothing was done)."""
    dead_letters(tmp_path)
    store = Refuses(open_store(str(tmp_path)))
    q = Queue(store, QueueConfig())
    store.on = True
    with pytest.raises(BulkIncomplete) as incomplete:
        q.requeue_all()
    e = incomplete.value
    assert not isinstance(e, StoreUnavailable)
    assert isinstance(e.undone.stopped, StoreRefused)
    assert e.done == [] and list(e.undone.failed) == [NAMES[0]]
    assert e.undone.unknown == set() and e.undone.not_attempted == NAMES[1:]
    assert "stopped, the store refused" in str(e) and EXPIRED in str(e)


def held_by(worker: str, *, expired: bool) -> tuple[Queue, Refuses]:
    """Every name claimed by ``worker`` (on a fake clock: ``expired``, 2 minutes later)."""
    clock = FakeClock()
    store = Refuses(MemoryStore("refused", clock=clock))
    q = Queue(store, QueueConfig())
    for name in NAMES:
        q.submit(name, b"{}")
        assert q.claim(worker) is not None
    if expired:
        clock.advance(120)
    return q, store


def said(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "event", None) == event]


def test_own_recovery_stops_at_the_store_refusing_every_request(
        caplog: pytest.LogCaptureFixture) -> None:
    """A worker's own recovery at its start whose credentials expire after its LIST of the
    leases: the refusal ends it (the start fails, as an unavailable store ends it), not an
    ERROR for each request ('not taken back ... a lease it cannot read may be another's')
    and a worker started with all of them left behind."""
    q, store = held_by("w", expired=False)
    store.on = True
    with caplog.at_level(logging.DEBUG, logger="s3q"), pytest.raises(
            RecoveryIncomplete) as stopped:
        q.recover_own("w")
    e = stopped.value
    assert isinstance(e, StoreRefused) and isinstance(e.stopped, StoreRefused)
    assert EXPIRED in str(e) and "the store refused" in str(e)
    assert e.done.failed == {} and e.done.unknown == set()
    assert said(caplog, "recover_failed") == []
    assert store.refused == 1  # stopped at the first refusal


def test_recover_all_stops_at_the_store_refusing_every_request(
        caplog: pytest.LogCaptureFixture) -> None:
    """recover --all refused at its first takeover (t1's PUT): that request failed, its
    outcome known; the others not attempted."""
    q, store = held_by("w", expired=True)
    store.ops = ("put",)
    store.on = True
    with caplog.at_level(logging.DEBUG, logger="s3q"), pytest.raises(
            RecoveryIncomplete) as stopped:
        q.recover_all()
    e = stopped.value
    assert isinstance(e, StoreRefused)
    assert list(e.done.failed) == [NAMES[0]] and e.done.unknown == set()
    assert e.not_attempted == NAMES[1:]
    assert said(caplog, "recover_failed") == []


def test_the_takeover_scan_stops_at_the_store_refusing_every_request(
        caplog: pytest.LogCaptureFixture) -> None:
    """The worker's takeover scan whose credentials expire after its LIST of the leases:
    one refusal ends it (the worker says 'takeover scan failed' once), not a scan_failed
    warning for each expired lease, each recorded as a takeover that failed."""
    q, store = held_by("dead", expired=True)
    store.after = ".s3q/lease/"
    with caplog.at_level(logging.DEBUG, logger="s3q"), pytest.raises(
            StoreRefused, match="rejected the credentials"):
        q.scan("w2")
    assert said(caplog, "scan_failed") == []
    assert store.refused == 1


def test_the_scanner_role_refused_is_not_a_role_that_cannot_be_read(
        caplog: pytest.LogCaptureFixture) -> None:
    """The scanner role's GET (a worker's scan, every scan interval; status and the
    dashboard) refused as every key is: the refusal is raised, not 'scanner role cannot be
    read (...): w2 scans without it' (a WARNING at every scan, then a scan the same
    refusal ends) nor status' 'scanner cannot be read' of the role object."""
    q, store = held_by("dead", expired=True)
    store.on = True
    with caplog.at_level(logging.DEBUG, logger="s3q"), pytest.raises(
            StoreRefused, match=r"for get \.s3q/scanner"):
        q.scan("w2")
    assert said(caplog, "scanner_role_unreadable") == []
    with pytest.raises(StoreRefused, match=r"for get \.s3q/scanner"):
        q.scanner()


def test_a_corrupt_lease_is_not_said_left_for_an_operator_by_a_refusal() -> None:
    """A corrupt lease holding no body whose request is still in processing/ (so the
    takeover can take it over): the HEAD that looks for it there refused as every key is
    made status, the dashboard and the gauges count it as 'corrupt lease left for an
    operator' with the refusal as its reason (s3q_queue_corrupt_leases, status --check
    failing), and a burst leave it."""
    from s3q import leases
    from s3q.takeover import kept_corrupt

    mem = MemoryStore("refused")
    mem.put("processing/a_request.json", b"{}")
    mem.put(".s3q/lease/a_request.json", b'{"v":2, truncated')
    store = Refuses(mem, ops=("head",))
    q = Queue(store, QueueConfig())
    found = leases.read(q.ctx, "a_request.json")
    assert found is not None and found[0].claim == leases.CORRUPT
    assert kept_corrupt(q.ctx, found[0]) is None  # (its request is in processing/)
    store.on = True
    with pytest.raises(StoreRefused):
        kept_corrupt(q.ctx, found[0])
