"""Operator recovery: what ``recovery_candidates`` (``s3q recover --dry-run``) announces is
what ``recover_own`` / ``recover_stale`` / ``recover_all`` then touch, for every kind of
request a queue can hold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from s3q import Queue, QueueConfig, State, leases
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.job import Job
from s3q.records import Intent
from s3q.store import Store
from s3q.takeover import CHANGED, INTERRUPTED, RACED, Recovered
from tests.unit.harness import FakeClock

T = TypeVar("T")

CONFIG = QueueConfig(lease_ttl=30.0, retry_base_delay=1000.0, retry_max_delay=1000.0)
#: What a recovery reports for requests it found nothing to do about.
UNTOUCHED = {"waiting for retry", "gone"}


def world() -> tuple[MemoryStore, FakeClock]:
    """A: held by a dead worker; B: held by "me", dead; C: completed by a dead worker that
    died before moving it (a 'done' intent); D: waiting for its retry; E: in processing/
    with no lease (moved there by hand); F: held by a live worker."""
    clock = FakeClock()
    store = MemoryStore("recovery", clock=clock)
    q = Queue(store, CONFIG)
    store.put("processing/E_request.json", b"E")

    def claim(name: str, worker: str) -> Job:  # one at a time: claims pick at random
        q.submit(f"{name}_request.json", name)
        job = q.claim(worker)
        assert job is not None and job.name == f"{name}_request.json"
        if name == "C":  # the commit's fence write, and then the worker died
            leases.write(q.ctx, job.lease.next(intent=Intent.DONE, on_finish="move"),
                         job.lease_etag)
        elif name == "D":
            job.fail("flaky")
        return job

    for name, worker in [("A", "dead"), ("B", "me"), ("C", "dead"), ("D", "dead")]:
        claim(name, worker)
    live = claim("F", "live")
    clock.advance(CONFIG.lease_ttl + 30)
    live.renew()  # the only worker still alive
    return store, clock


def run(mode: str, store: MemoryStore) -> set[str]:
    q = Queue(store, CONFIG)  # a fresh process, as the CLI is
    if mode == "mine":
        done = q.recover_own("me")
    elif mode == "stale":
        done = q.recover_stale()
    else:
        done = q.recover_all("*")
    return {n for n, action in done.actions.items() if action not in UNTOUCHED}


@pytest.mark.parametrize(("mode", "expected", "live"), [
    ("mine", {"B"}, set()),
    ("stale", {"A", "B", "C", "E"}, set()),
    ("all", {"A", "B", "C", "E", "F"}, {"F"}),
])
def test_the_dry_run_announces_exactly_what_recovery_touches(
        mode: str, expected: set[str], live: set[str]) -> None:
    store, _ = world()
    before = store.snapshot()
    q = Queue(store, CONFIG)
    found = q.recovery_candidates(mode, "*", "me")  # type: ignore[arg-type]
    assert store.snapshot() == before  # a dry run writes nothing
    short = {c.name.removesuffix("_request.json") for c in found}
    assert short == expected
    assert {c.name.removesuffix("_request.json") for c in found if c.live} == live
    orphan = [c for c in found if c.lease is None]
    assert [c.name for c in orphan] == (["E_request.json"] if "E" in expected else [])
    touched = run(mode, store)
    assert {n.removesuffix("_request.json") for n in touched} == expected


def test_after_recovery_nothing_is_left_to_recover() -> None:
    store, _ = world()
    run("all", store)
    q = Queue(store, CONFIG)
    assert q.recovery_candidates("all") == []
    assert q.counts() == {"wait": 5, "processing": 0, "finish": 1, "failed": 0}
    # every request back in wait/ rests in a retry lease holding its body; D keeps its backoff
    waiting = {lease.name: lease for lease, _ in q.leases()}
    assert {lease.intent for lease in waiting.values()} == {Intent.RETRY}
    assert sorted(waiting) == [f"{n}_request.json" for n in "ABDEF"]
    assert [n for n, lease in waiting.items() if lease.not_before] == ["D_request.json"]
    assert [i.key for i in q.ls(State.FINISH)] == ["C_request.json"]


class Interrupted(BaseException):
    """Ctrl-C (or a kill) of `s3q recover --all`, as KeyboardInterrupt comes."""


class StopsAfterFence(DelegatingStore):
    """Every store operation after the takeover's fence (t1: the write of ``lease``) is
    interrupted: the recovery dies between t1 and the release."""

    def __init__(self, inner: Store, lease: str) -> None:
        super().__init__(inner)
        self.lease, self.fenced = lease, False

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if self.fenced:
            raise Interrupted
        result = fn()
        self.fenced = op == "put" and args["key"] == self.lease
        return result


@pytest.mark.parametrize("max_attempts", [1, 5])
def test_recover_all_interrupted_after_its_fence_does_not_count_the_attempt(
        max_attempts: int) -> None:
    """`recover --all` takes a request from a live worker (t1 fences it) and is killed
    before it releases it. The lease it wrote expires and the fleet's scan takes it over:
    the attempt it interrupted must not count, as it would not have had the recovery
    finished. It counted: one attempt closer to failed/ for what the operator meant to
    put back, and with its last attempt dead-lettered ("worker s3q-recover stopped
    renewing its lease"), a request that was running fine."""
    clock = FakeClock()
    store = MemoryStore("interrupted", clock=clock)
    config = replace(CONFIG, max_attempts=max_attempts)
    q = Queue(store, config)
    q.submit("x_request.json", b"x")
    job = q.claim("w-live")
    assert job is not None and job.attempt == 1
    with pytest.raises(Interrupted):
        Queue(StopsAfterFence(store, ".s3q/lease/x_request.json"), config).recover_all("*")
    clock.advance(config.lease_ttl + 30)  # nobody renews the lease recover --all wrote
    done = Queue(store, config).recover_stale()  # (the fleet's scan does the same)
    assert done.actions == {"x_request.json": "released"}
    assert q.counts()["wait"] == 1 and q.counts()["failed"] == 0
    found = q.lease("x_request.json")
    assert found is not None and found[0].intent is Intent.RETRY
    assert found[0].attempts == 0 and found[0].error is None


def test_a_recovery_counts_the_requests_it_recovered_not_those_it_left_alone() -> None:
    """The worker's 'takeover scan: N request(s) recovered' and its count of own recovery
    at start counted every request looked at: those gone since listed, alive, raced,
    changed since listed or waiting for their retry too, and those its takeover was
    interrupted at (the lease outlasted: the next taker carries on)."""
    done = Recovered(actions={
        "a": "released", "b": "dead-lettered", "c": "rolled forward done", "d": INTERRUPTED,
        "e": "gone", "f": "alive", "g": RACED, "h": CHANGED, "i": "waiting for retry",
        "j": "not mine"})
    assert len(done) == 3
