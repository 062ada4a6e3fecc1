"""A lease renewed while a large request's bytes are copied (docs/PROTOCOL.md §4, "Long
copies"; :func:`s3q.renewing.copying`), when a renewal's outcome is unknown: the store
applied it but answered with an error (PROTOCOL §2.3). The holder's next lease write is
rebased on it (:func:`s3q.leases.write`); its last step, the lease's deletion, must be too."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from s3q import layout
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.errors import LeaseLost
from s3q.queue import Queue, QueueConfig
from s3q.records import INLINE_MAX, Lease
from s3q.running import Runner
from s3q.store import NotFound, StoreError
from tests.unit.harness import FakeClock

NAME = "big.bin"
BODY = bytes(range(256)) * (INLINE_MAX // 256 + 1)  # large: a private copy


class RenewalAppliedUnanswered(DelegatingStore):
    """The first renewal sent during a copy to ``dst_prefix`` is applied but answered with an
    error; the copy ends only once that renewal was sent (it outlasted one renewal)."""

    def __init__(self, inner: MemoryStore, dst_prefix: str) -> None:
        super().__init__(inner)
        self.dst_prefix = dst_prefix
        self.renewed = threading.Event()
        self.copying = False

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], Any]) -> Any:
        if (op == "put" and args["key"] == layout.key(layout.LEASES, NAME) and self.copying
                and threading.current_thread().name == "s3q-copy-renew"
                and not self.renewed.is_set()):
            fn()  # applied …
            self.renewed.set()
            raise StoreError("InternalError (applied)")  # … and answered as failed
        if op == "copy" and args["dst"].startswith(self.dst_prefix):
            self.copying = True
            assert self.renewed.wait(30), "no renewal during the copy"
        return fn()


def _queue(store: DelegatingStore, **config: Any) -> Queue:
    settings: dict[str, Any] = {"lease_ttl": 5.0, "on_finish": "move", "retry_base_delay": 0,
                                "retry_max_delay": 0, **config}
    return Queue(store, QueueConfig(**settings))


def _leases(mem: MemoryStore) -> list[str]:
    return [i.key for i in mem.list_page(layout.LEASES).items]


def test_a_completion_after_an_unanswered_renewal_during_d3_leaves_no_lease() -> None:
    mem = MemoryStore("m")
    mem.put(layout.key(layout.WAIT, NAME), BODY)
    store = RenewalAppliedUnanswered(mem, layout.FINISH)
    q = _queue(store)
    job = q.claim("w")
    assert job is not None and job.lease.body_key is not None
    job.complete()  # d1, d2, d3 (renewed: applied, unanswered), d4, d5
    assert store.renewed.is_set()
    assert mem.get(layout.key(layout.FINISH, NAME))[0] == BODY
    assert _leases(mem) == []  # not left for a takeover to settle again
    assert mem.list_page(".s3q/body/").items == []


def test_a_dead_letter_after_an_unanswered_renewal_during_x2_leaves_no_lease() -> None:
    mem = MemoryStore("m")
    mem.put(layout.key(layout.WAIT, NAME), BODY)
    store = RenewalAppliedUnanswered(mem, layout.FAILED)
    q = _queue(store, max_attempts=1)
    job = q.claim("w")
    assert job is not None
    job.fail("the handler failed")  # x1, x2 (renewed: applied, unanswered), x3, x4, x5
    assert store.renewed.is_set()
    assert mem.get(layout.key(layout.FAILED, NAME))[0] == BODY
    assert _leases(mem) == []


class SlowReads(DelegatingStore):
    """Each streamed read (``open``) of a large object takes ``seconds``: reading a large
    request's bytes whole, as is_ours does to compare two copies, takes minutes on S3."""

    def __init__(self, inner: MemoryStore, seconds: float) -> None:
        super().__init__(inner)
        self.seconds = seconds
        self.slow = False

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], Any]) -> Any:
        if op == "open" and self.slow:
            time.sleep(self.seconds)
        return fn()


def test_a_dead_letter_that_finds_its_own_copy_in_failed_compares_them_renewed() -> None:
    """x2 finds failed/NAME taken (an earlier x2 of this request took effect, or a dead
    letter of the same bytes): is_ours reads both large objects whole, which may take longer
    than the lease lives. Unrenewed, x3 was refused by the deadline (LeaseLost), and so was
    every taker's roll-forward, which compares them again: the dead lease stayed for good."""
    mem = MemoryStore("m")
    mem.put(layout.key(layout.WAIT, NAME), BODY)
    mem.put(layout.key(layout.FAILED, NAME), BODY)  # x2 done before (its holder died)
    store = SlowReads(mem, 2.5)  # two reads: 5 s, past the deadline (4 s after x1)
    q = _queue(store, max_attempts=1)
    job = q.claim("w")
    assert job is not None and job.lease.body_key is not None
    store.slow = True
    job.fail("the handler failed")  # x1, x2 (found ours: compared), x3, x4, x5
    assert q.error_record(NAME) is not None
    assert _leases(mem) == []
    assert mem.list_page(".s3q/body/").items == []


class SlowCopies(DelegatingStore):
    """Each copy out of processing/ takes ``seconds`` before it is sent (a large request's
    copy in parts: its guard is checked as its last part goes)."""

    def __init__(self, inner: MemoryStore, seconds: float) -> None:
        super().__init__(inner)
        self.seconds = seconds

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], Any]) -> Any:
        if op == "copy" and args["src"].startswith(layout.PROCESSING):
            time.sleep(self.seconds)
        return fn()


def test_an_orphan_whose_adoption_copy_outlasts_the_lease_is_taken_over_at_once() -> None:
    """adopt_orphan's private copy is not renewed: its lease is held by nobody, and the scan
    takes it over at once, whose t2 makes the copy renewed. A copy that outlasted the lease
    raised LeaseLost out of adopt_orphan, and so out of the scan (out of a library user's
    claim(), which runs it), leaving the rest of the scan undone."""
    clock = FakeClock()
    mem = MemoryStore("m", clock=clock)
    mem.put(layout.key(layout.PROCESSING, NAME), BODY)  # an orphan: no lease
    clock.advance(60)
    q = _queue(SlowCopies(mem, 4.5))  # past the deadline (4 s after the lease's creation)
    done = q.recover_stale("s")
    assert done.actions == {NAME: "released"} and done.failed == {}
    assert mem.get(layout.key(layout.WAIT, NAME))[0] == BODY
    assert mem.list_page(layout.PROCESSING).items == []


class TakenDuringCopy(DelegatingStore):
    """While a copy to finish/ (d3) is under way, another worker takes the lease over
    (``PUT`` of a lease of its own claim); the copy's next part waits for the holder's
    renewal to have found that, then is sent under the holder's guard."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.refused = threading.Event()
        self.parts = 0

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], Any]) -> Any:
        key = layout.key(layout.LEASES, NAME)
        if op == "put" and args["key"] == key and \
                threading.current_thread().name == "s3q-copy-renew":
            try:
                return fn()
            except StoreError:
                self.refused.set()
                raise
        if op == "copy" and args["dst"].startswith(layout.FINISH):
            body, _ = self.inner.get(key)
            taken = replace(Lease.from_bytes(body), worker="other", claim="taker")
            self.inner.put(key, taken.next(gen=taken.gen + 1).to_bytes())
            assert self.refused.wait(30), "no renewal during the copy"
            for _ in range(3):  # the copy's parts, each under the guard
                args["guard"]()
                self.parts += 1
        return fn()


def test_a_copy_whose_renewal_finds_the_lease_taken_over_stops_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """The renewal that finds the lease another claim's ends the holder's deadline: the
    copy's next part is refused (LeaseLost), not sent until the deadline a lease_ttl later
    (here a fake clock that never moves: without it, d3 was written after the takeover)."""
    clock = FakeClock()
    mem = MemoryStore("m", clock=clock)
    mem.put(layout.key(layout.WAIT, NAME), BODY)
    store = TakenDuringCopy(mem)
    q = Queue(store, QueueConfig(lease_ttl=5.0, on_finish="move"), monotonic=clock)
    job = q.claim("w")
    assert job is not None and job.lease.body_key is not None
    with caplog.at_level(logging.WARNING, logger="s3q"), pytest.raises(LeaseLost):
        job.complete()
    assert store.parts == 0
    with pytest.raises(NotFound):
        mem.head(layout.key(layout.FINISH, NAME))
    lost = [r for r in caplog.records if getattr(r, "event", "") == "copy_lease_lost"]
    assert len(lost) == 1 and lost[0].request == NAME  # type: ignore[attr-defined]
    held, _ = mem.get(layout.key(layout.LEASES, NAME))
    assert Lease.from_bytes(held).claim == "taker"  # the taker's lease, untouched


def test_a_job_whose_copy_finds_its_lease_taken_over_is_lost_not_a_store_error(
        caplog: pytest.LogCaptureFixture) -> None:
    """The renewal during d3 that finds the lease another claim's knows the job is lost:
    the job is marked lost (its handler interrupted, ``lease_lost`` said and counted) and
    its outcome is ``lost``. Before, the copy stopped on its deadline, ended at once, and
    the settlement's LeaseLost read as a deadline that passed by itself: the outcome was
    ``store_error``, logged as "could not settle in time ... it returns once expired" (it
    was the taker's already), and no lease_lost was said or counted."""
    clock = FakeClock()
    mem = MemoryStore("m", clock=clock)
    mem.put(layout.key(layout.WAIT, NAME), BODY)
    store = TakenDuringCopy(mem)
    q = Queue(store, QueueConfig(lease_ttl=5.0, on_finish="move"), monotonic=clock)
    events: list[str] = []
    q.listeners.append(lambda event, fields: events.append(event))
    job = q.claim("w")
    assert job is not None and job.lease.body_key is not None
    outcomes: list[str] = []
    runner = Runner(lambda j: None, 1, lambda j, outcome, _: outcomes.append(outcome),
                    background=False)
    with caplog.at_level(logging.WARNING, logger="s3q"):
        runner.run(job, lambda j: None)
    q.close()
    assert store.parts == 0
    assert outcomes == ["lost"]
    assert job.lost and job.interrupted
    assert events.count("lease_lost") == 1
    assert not [r for r in caplog.records if getattr(r, "event", "") == "settle_failed"]
    held, _ = mem.get(layout.key(layout.LEASES, NAME))
    assert Lease.from_bytes(held).claim == "taker"
