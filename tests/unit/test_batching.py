"""s3q.batching: conditional deletes that share a request keep their own conditions and
answers; a lone one, or one on a store without the capability, is a DeleteObject of its own,
sent at once; a request that fails as a whole fails each of its deletes, and an interrupted
leader leaves none of them taken for done (tested on a MemoryStore that says it honours
DeleteObjects' ETags; tests/contract and tests/integration have the same on S3).

Deletes are made to meet deterministically: a first delete is held in flight by the store
(``Recorded.hold``) while the others arrive, and they go together once it returns."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.batching import DeleteBatcher
from s3q.errors import LeaseLost
from s3q.store import Guard, NotFound, PreconditionFailed, StoreError, StoreUnavailable

T = TypeVar("T")
HELD = "held-in-flight"


class Recorded(DelegatingStore):
    """The requests sent: ("delete", key) or ("delete_batch", keys). A delete of ``HELD``
    waits for ``release`` (``in_flight`` says it is there); ``fail``: the next request of
    several deletes takes effect, then raises it."""

    def __init__(self, batches: bool = True) -> None:
        mem = MemoryStore("batching")
        mem.capabilities = replace(mem.capabilities, batch_conditional_delete=batches)
        super().__init__(mem)
        self.mem = mem
        self.sent: list[tuple[str, Any]] = []
        self.fail: BaseException | None = None
        self.in_flight, self.release = threading.Event(), threading.Event()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "delete":
            self.sent.append((op, args["key"]))
            if args["key"] == HELD:
                self.in_flight.set()
                assert self.release.wait(30)
        elif op == "delete_batch":
            self.sent.append((op, sorted(k for k, _ in args["items"])))
            if self.fail is not None:
                error, self.fail = self.fail, None
                fn()
                raise error
        return fn()


def _run(batcher: DeleteBatcher, key: str, etag: str,
         outcomes: dict[str, BaseException | None]) -> threading.Thread:
    def one() -> None:
        try:
            batcher.delete(key, etag)
            outcomes[key] = None
        except BaseException as exc:  # (what the caller got is the point)
            outcomes[key] = exc

    thread = threading.Thread(target=one)
    thread.start()
    return thread


def _waiting(batcher: DeleteBatcher, n: int) -> None:
    """Until ``n`` deletes wait in ``batcher`` (sent by threads of their own)."""
    deadline = time.monotonic() + 10
    while len(batcher._pending) < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(batcher._pending) == n


@contextlib.contextmanager
def _a_commit_during_a_claim(store: Recorded, etag: str | None = None) -> Iterator[
        tuple[DeleteBatcher, dict[str, BaseException | None]]]:
    """A batcher of ``store`` with a claim under way, and the delete of "lease" (at
    ``etag``, else at the ETag of a new "lease") waiting for it, from a thread of its own:
    the batcher and the outcomes. Once the claim ends, that thread has ended too."""
    batcher = DeleteBatcher(lambda: store, linger=0.0, ride=30.0)
    outcomes: dict[str, BaseException | None] = {}
    with batcher.claiming():
        commit = _run(batcher, "lease", etag or store.put("lease", b"l").etag, outcomes)
        _waiting(batcher, 1)
        yield batcher, outcomes
    commit.join(10)
    assert not commit.is_alive()


def _behind_a_request(store: Recorded, batcher: DeleteBatcher,
                      items: Sequence[tuple[str, str]], *, close: bool = True
                      ) -> tuple[dict[str, BaseException | None], list[threading.Thread]]:
    """Each of ``items`` from a thread of its own, all arriving while a delete of ``HELD``
    is in flight; then that one returns (with ``close``, the batcher stops lingering
    first: the next request goes at once). Each one's outcome."""
    outcomes: dict[str, BaseException | None] = {}
    threads = [_run(batcher, HELD, store.put(HELD, b"held").etag, outcomes)]
    assert store.in_flight.wait(10)
    threads += [_run(batcher, key, etag, outcomes) for key, etag in items]
    _waiting(batcher, len(items))
    if close:
        batcher.close()
    store.release.set()
    if close:
        for t in threads:
            t.join(10)
    return outcomes, threads


def test_deletes_that_meet_share_one_request_and_keep_their_own_answers() -> None:
    store = Recorded()
    etags = {k: store.put(k, k.encode()).etag for k in ("a", "b", "c", "d")}
    stale = etags["b"]
    store.put("b", b"changed since")  # b's ETag is stale now
    batcher = DeleteBatcher(lambda: store, linger=30.0)
    outcomes, _ = _behind_a_request(store, batcher, [
        ("a", etags["a"]), ("b", stale), ("c", etags["c"]), ("gone", etags["d"] + "x")])
    assert store.sent == [("delete", HELD), ("delete_batch", ["a", "b", "c", "gone"])]
    assert outcomes[HELD] is None and outcomes["a"] is None and outcomes["c"] is None
    assert isinstance(outcomes["b"], PreconditionFailed)
    assert isinstance(outcomes["gone"], NotFound)
    assert set(store.mem.snapshot()) == {"b", "d"}  # the refused one is kept


def test_deletes_that_came_together_wait_for_company_until_closed() -> None:
    """After a request of several, the next leader lingers for more (up to ``linger``);
    close() ends the wait."""
    store = Recorded()
    etags = {k: store.put(k, k.encode()).etag for k in ("a", "b")}
    batcher = DeleteBatcher(lambda: store, linger=30.0)
    outcomes, threads = _behind_a_request(store, batcher, list(etags.items()), close=False)
    time.sleep(0.3)
    assert set(outcomes) == {HELD}  # a and b linger, for company
    batcher.close()
    for t in threads:
        t.join(10)
    assert outcomes == {HELD: None, "a": None, "b": None}
    assert store.sent == [("delete", HELD), ("delete_batch", ["a", "b"])]


def test_a_lone_caller_never_waits() -> None:
    """One thread completing jobs one after another: each delete goes at once, alone."""
    store = Recorded()
    batcher = DeleteBatcher(lambda: store, linger=30.0)
    started = time.monotonic()
    for key in ("a", "b", "c"):
        batcher.delete(key, store.put(key, b"x").etag)
    assert time.monotonic() - started < 15  # (no linger of 30 s)
    assert store.sent == [("delete", "a"), ("delete", "b"), ("delete", "c")]
    with pytest.raises(NotFound):
        batcher.delete("a", store.put("z", b"z").etag)


@pytest.mark.parametrize(("capable", "enabled"), [(False, True), (True, False)])
def test_without_the_capability_or_switched_off_deletes_never_meet(
        capable: bool, enabled: bool) -> None:
    """(Switched off: the batch_deletes setting, QueueConfig.batch_deletes.) Deletes that
    arrive while another is in flight go at once, each alone."""
    store = Recorded(batches=capable)
    etags = {k: store.put(k, b"x" + k.encode()).etag for k in ("a", "b")}
    batcher = DeleteBatcher(lambda: store, linger=30.0, enabled=enabled)
    outcomes: dict[str, BaseException | None] = {}
    held = _run(batcher, HELD, store.put(HELD, b"held").etag, outcomes)
    assert store.in_flight.wait(10)
    for key, etag in etags.items():
        batcher.delete(key, etag)  # not behind the held one
    store.release.set()
    held.join(10)
    assert store.sent == [("delete", HELD), ("delete", "a"), ("delete", "b")]
    assert outcomes == {HELD: None} and store.mem.snapshot() == {}


def test_a_request_that_fails_as_a_whole_fails_each_delete() -> None:
    """(After it took effect: each caller must treat its delete as possibly applied, as
    after a DeleteObject that failed; leases.commit's retry then sees NotFound, retried.)
    Each caller raises an error of its own, chained to the request's."""
    store = Recorded()
    etags = {k: store.put(k, k.encode()).etag for k in ("a", "b")}
    store.fail = StoreUnavailable("connection reset")
    batcher = DeleteBatcher(lambda: store, linger=30.0)
    outcomes, _ = _behind_a_request(store, batcher, list(etags.items()))
    a, b = outcomes["a"], outcomes["b"]
    assert isinstance(a, StoreUnavailable) and isinstance(b, StoreUnavailable)
    assert a is not b and a.__cause__ is b.__cause__ is not None
    assert store.mem.snapshot() == {}
    batcher.delete("c", store.put("c", b"c").etag)  # the next request goes as usual
    assert store.sent[-1] == ("delete", "c")


def test_an_interrupted_leader_leaves_no_delete_taken_for_done() -> None:
    """KeyboardInterrupt in the thread that sends the request: every delete in it fails
    with it (none returns as if deleted), and the next caller leads as usual."""
    store = Recorded()
    etags = {k: store.put(k, k.encode()).etag for k in ("a", "b")}
    store.fail = KeyboardInterrupt()
    batcher = DeleteBatcher(lambda: store, linger=30.0)
    outcomes, _ = _behind_a_request(store, batcher, list(etags.items()))
    assert all(isinstance(o, KeyboardInterrupt) for k, o in outcomes.items() if k != HELD)
    batcher.delete("c", store.put("c", b"c").etag)
    assert store.sent[-1] == ("delete", "c")


def test_a_key_deleted_twice_at_once_goes_in_two_requests() -> None:
    """Each delete gets its own answer: one takes the object, the other finds it gone (a
    request holding both could answer only once for the key)."""
    store = Recorded()
    etag = store.put("a", b"a").etag
    batcher = DeleteBatcher(lambda: store, linger=30.0)
    outcomes: dict[str, BaseException | None] = {}
    threads = [_run(batcher, HELD, store.put(HELD, b"held").etag, outcomes)]
    assert store.in_flight.wait(10)
    answers: list[BaseException | None] = []

    def twice() -> None:
        try:
            batcher.delete("a", etag)
            answers.append(None)
        except StoreError as exc:
            answers.append(exc)

    threads += [threading.Thread(target=twice) for _ in range(2)]
    for t in threads[1:]:
        t.start()
    _waiting(batcher, 2)
    batcher.close()
    store.release.set()
    for t in threads:
        t.join(10)
    assert store.sent == [("delete", HELD), ("delete", "a"), ("delete", "a")]
    assert sorted(type(a).__name__ for a in answers) == ["NoneType", "NotFound"]


def test_a_wrong_answer_from_the_store_fails_its_deletes_not_the_batcher() -> None:
    """A store whose delete_batch answers for the wrong number of keys (a bug) fails those
    deletes; the next caller leads the next request as usual."""

    class Short(Recorded):
        def delete_batch(self, items: Sequence[tuple[str, str]], *,
                         guard: Guard | None = None) -> list[StoreError | None]:
            return super().delete_batch(items, guard=guard)[:1]

    short = Short()
    etags = {k: short.put(k, k.encode()).etag for k in ("a", "b")}
    batcher = DeleteBatcher(lambda: short, linger=30.0)
    outcomes, _ = _behind_a_request(short, batcher, list(etags.items()))
    assert all(isinstance(o, StoreError) and "answered 1 of 2" in str(o)
               for k, o in outcomes.items() if k != HELD), outcomes
    batcher.delete("c", short.put("c", b"c").etag)
    assert short.sent[-1] == ("delete", "c")


# ---------------------------------------------------------------------- urgent deletes
def test_an_urgent_delete_goes_at_once_with_those_waiting_even_beside_a_request() -> None:
    """A claim's c2 is on its slot's critical path: it does not wait behind the request
    in flight; it takes the delete waiting behind that request along."""
    store = Recorded()
    batcher = DeleteBatcher(lambda: store, linger=30.0)
    outcomes: dict[str, BaseException | None] = {}
    threads = [_run(batcher, HELD, store.put(HELD, b"held").etag, outcomes)]
    assert store.in_flight.wait(10)
    threads.append(_run(batcher, "a", store.put("a", b"a").etag, outcomes))
    _waiting(batcher, 1)
    batcher.delete("w", store.put("w", b"w").etag, urgent=True)
    threads[1].join(10)
    assert outcomes == {"a": None}  # (HELD is still in flight)
    assert store.sent == [("delete", HELD), ("delete_batch", ["a", "w"])]
    store.release.set()
    threads[0].join(10)
    assert outcomes[HELD] is None and store.mem.snapshot() == {}


def test_during_a_claim_a_lone_delete_waits_for_the_claims_urgent_delete() -> None:
    """A worker's commit (sent by a settler thread) and its slot's next claim: the commit
    waits (up to ``ride``) for the claim's c2, and both go in one request."""
    store = Recorded()
    with _a_commit_during_a_claim(store) as (batcher, outcomes):
        assert store.sent == []  # (it waits for the claim, not for linger = 0)
        batcher.delete("wait", store.put("wait", b"w").etag, urgent=True)
    assert outcomes == {"lease": None}
    assert store.sent == [("delete_batch", ["lease", "wait"])]


def test_a_claim_that_ends_without_an_urgent_delete_lets_the_waiting_one_go() -> None:
    """(A claim that found nothing to claim, or lost its race: no c2.)"""
    store = Recorded()
    with _a_commit_during_a_claim(store) as (_, outcomes):
        assert store.sent == []  # (it waits for the claim, which ends without a c2)
    assert outcomes == {"lease": None} and store.sent == [("delete", "lease")]


def test_claims_begun_after_a_delete_do_not_hold_it() -> None:
    """A commit waits only for the claims under way when it came: a slot that finds nothing
    claims again and again (the end of a burst, an idle queue), and those later claims
    would otherwise hold it up to ``ride``."""
    store = Recorded()
    batcher = DeleteBatcher(lambda: store, linger=0.0, ride=30.0)
    outcomes: dict[str, BaseException | None] = {}
    first = batcher.claiming()
    first.__enter__()
    commit = _run(batcher, "lease", store.put("lease", b"l").etag, outcomes)
    _waiting(batcher, 1)
    with batcher.claiming():  # begun after the commit came
        time.sleep(0.05)
        assert store.sent == []  # (the first claim may still carry it)
        first.__exit__(None, None, None)  # ends without a c2
        commit.join(10)
        assert not commit.is_alive()  # sent while the later claim is still under way
        assert outcomes == {"lease": None} and store.sent == [("delete", "lease")]


class Stalled(LeaseLost):
    """What a claim's guard raises once its deadline passed."""


def _guard(passes: int) -> Callable[[], None]:
    """A claim's send-time fence that lets ``passes`` checks through, then stops."""
    calls = iter(range(passes + 1))

    def check() -> None:
        if next(calls, passes) >= passes:
            raise Stalled("the claim's deadline passed")

    return check


def test_an_urgent_delete_whose_guard_fails_is_not_sent_the_others_are() -> None:
    store = Recorded()
    with _a_commit_during_a_claim(store) as (batcher, outcomes), \
            pytest.raises(Stalled):
        batcher.delete("wait", store.put("wait", b"w").etag, guard=_guard(0), urgent=True)
    assert outcomes == {"lease": None}
    assert store.sent == [("delete", "lease")] and set(store.mem.snapshot()) == {"wait"}


def test_a_guard_that_stops_a_retry_leaves_the_others_to_be_sent_again() -> None:
    """The request took effect for "lease" before the claim's guard stopped it (here: its
    deletes are sent one by one, the guard checked before each): the claim gets what its
    guard raised, "lease" is sent again alone and gets NotFound marked ``retried`` (an
    earlier try may have deleted it: leases.commit takes that as its own commit)."""
    store = Recorded()
    with _a_commit_during_a_claim(store) as (batcher, outcomes), \
            pytest.raises(Stalled):  # passes: before the request, before "lease"'s delete
        batcher.delete("wait", store.put("wait", b"w").etag, guard=_guard(2), urgent=True)
    assert isinstance(outcomes["lease"], NotFound) and outcomes["lease"].retried
    assert store.sent == [("delete_batch", ["lease", "wait"]), ("delete", "lease")]
    assert set(store.mem.snapshot()) == {"wait"}  # (the claim's delete was never applied)


def test_a_guard_that_stops_the_first_try_leaves_the_others_unmarked() -> None:
    """Nothing was sent: "lease" goes again alone, and its answer is a first try's (a 404
    there is somebody else's doing, not ours)."""
    store = Recorded()
    gone = store.put("lease", b"l").etag
    store.mem.delete("lease")  # (taken over and settled by another worker meanwhile)
    with _a_commit_during_a_claim(store, gone) as (batcher, outcomes), \
            pytest.raises(Stalled):  # passes: only the check before the request
        batcher.delete("wait", store.put("wait", b"w").etag, guard=_guard(1), urgent=True)
    assert isinstance(outcomes["lease"], NotFound) and not outcomes["lease"].retried
    assert store.sent == [("delete_batch", ["lease", "wait"]), ("delete", "lease")]


def test_a_key_left_unanswered_in_a_guarded_request_goes_again_with_its_own_guard() -> None:
    """With a guard, the store leaves a key answered InternalError (after it took effect)
    to the batcher, which sends it again alone: NotFound, ``retried``. The claim's own
    answer is kept."""

    class Unanswered(Recorded):
        def delete_batch(self, items: Sequence[tuple[str, str]], *,
                         guard: Guard | None = None) -> list[StoreError | None]:
            results = super().delete_batch(items, guard=guard)
            return [StoreUnavailable("InternalError") if key == "lease" else r
                    for (key, _), r in zip(items, results, strict=True)]

    store = Unanswered()
    with _a_commit_during_a_claim(store) as (batcher, outcomes):
        batcher.delete("wait", store.put("wait", b"w").etag, guard=_guard(10), urgent=True)
    assert isinstance(outcomes["lease"], NotFound) and outcomes["lease"].retried
    assert store.sent == [("delete_batch", ["lease", "wait"]), ("delete", "lease")]
    assert store.mem.snapshot() == {}


def test_an_interrupt_before_the_request_leaves_nobody_waiting() -> None:
    """KeyboardInterrupt from the urgent caller's guard, before anything was sent: the
    commit it took along fails with it (it is not left waiting for an answer)."""
    store = Recorded()

    def interrupted() -> None:
        raise KeyboardInterrupt

    with _a_commit_during_a_claim(store) as (batcher, outcomes), \
            pytest.raises(KeyboardInterrupt):
        batcher.delete("wait", store.put("wait", b"w").etag, guard=interrupted, urgent=True)
    assert isinstance(outcomes["lease"], KeyboardInterrupt)  # (and its thread ended)
    assert store.sent == [] and set(store.mem.snapshot()) == {"lease", "wait"}
