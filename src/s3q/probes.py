"""Probing a store's conditional requests, for ``s3q doctor`` (:mod:`s3q.doctor`):
create-if-absent, compare-and-swap and conditional delete, each on throwaway keys, and the
atomicity of the first two under concurrent writers (the copies' conditions and DeleteObjects':
:mod:`s3q.copyprobes`).

Every request goes through the :class:`~s3q.store.Store` seam (but S3's multipart uploads,
through :mod:`s3q.backends.s3multipart`, as s3q sends them); :meth:`Prober.ask` turns its
answer into an :class:`Answer` (accepted, 412, 404, denied, another error) and retries a 409
ConditionalRequestConflict, which only says that another conditional request overlapped. A
412 or 404 answered to the SDK's retry of a request is an error: the first try may have been
applied (its answer lost), and the 412 or 404 be its doing.
A check concludes MISSING only from an answer no transient failure can produce (a condition
that should have refused and did not); anything else it cannot explain is UNKNOWN.

Atomicity: :attr:`Prober.racers` threads send one conditional write each to one fresh key
at the same moment (on S3 a barrier in the send-time guard, after signing, so that the
requests leave together), :attr:`Prober.rounds` times. More than one winner is proof that
the store checks and writes in two steps (seaweedfs issue 8800).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from s3q.guarantees import DENIED_CODES, MISSING, OK, UNKNOWN, Check, row
from s3q.store import (
    Guard,
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    Store,
    StoreError,
    StoreUnavailable,
)

__all__ = ["PROBE", "Answer", "Prober", "error_code", "is_denied", "said"]

#: Where probes write, relative to the queue's root.
PROBE = ".s3q/probe/"
#: Tries of one request answered 409 ConditionalRequestConflict before giving up.
CONFLICT_TRIES = 20
_BARRIER_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    """How the store answered one request (after retrying 409s)."""

    kind: Literal["ok", "412", "404", "denied", "error"]
    value: Any = None
    error: str = ""

    def __str__(self) -> str:
        return {"ok": "accepted", "412": "412 PreconditionFailed", "404": "404 NotFound",
                "denied": "AccessDenied"}.get(self.kind, self.error)


@dataclass
class Prober:
    """Probes of one store under a fresh ``.s3q/probe/<random>/``; each check returns a
    :class:`~s3q.guarantees.Check`."""

    store: Store
    racers: int
    rounds: int
    base: str = field(default_factory=lambda: f"{PROBE}{uuid.uuid4().hex}/")
    checks: list[Check] = field(default_factory=list)
    conflicts: int = 0
    conditional_writes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- plumbing -------------------------------------------------------------------------

    def key(self, name: str) -> str:
        return self.base + name

    def ask(self, call: Callable[[], Any], *, conditional: bool = True) -> Answer:
        """Send one request; a 409 (a conflicting conditional request) is retried."""
        for _ in range(CONFLICT_TRIES):
            if conditional:
                self._count(writes=1)
            try:
                return Answer("ok", call())
            except (PreconditionFailed, NotFound) as e:
                if e.retried:  # an earlier try may have been applied: 412/404 its doing
                    return Answer("error", error=f"{said(e)} to a retry (an earlier try "
                                  "got no answer, and may have been applied)")
                if isinstance(e, NotFound):
                    return Answer("404", error=str(e))
                if error_code(e) != "ConditionalRequestConflict":
                    return Answer("412", error=str(e))
                self._count(conflicts=1)
            except StoreUnavailable:
                raise
            except StoreError as e:
                return Answer("denied" if is_denied(e) else "error", error=str(e))
        return Answer("error", error=f"{CONFLICT_TRIES} answers 409 in a row")

    def _count(self, *, writes: int = 0, conflicts: int = 0) -> None:
        with self._lock:
            self.conditional_writes += writes
            self.conflicts += conflicts

    def run(self, check: Callable[[], Check]) -> None:
        name = check.__name__
        try:
            self.checks.append(check())
        except StoreUnavailable as e:
            self.checks.append(row(name, UNKNOWN, f"the store failed: {e}"))
        except StoreError as e:
            self.checks.append(row(name, UNKNOWN, f"could not probe: {e}"))

    def write(self, name: str, body: bytes) -> ObjectInfo:
        info: ObjectInfo = self.store.put(self.key(name), body)
        return info

    # -- the guarantees -------------------------------------------------------------------

    def create_if_absent(self) -> Check:
        k = self.key("create")
        first = self.ask(lambda: self.store.put(k, b"first", if_none_match=True))
        if first.kind != "ok":
            return row("create_if_absent", UNKNOWN, f"a create of a new key: {first}")
        again = self.ask(lambda: self.store.put(k, b"second", if_none_match=True))
        if again.kind == "ok":
            return row("create_if_absent", MISSING, "PUT If-None-Match: * over an existing "
                       "key was accepted: the object was replaced")
        if again.kind != "412":
            return row("create_if_absent", UNKNOWN, f"over an existing key: {again}")
        if self.store.get(k)[0] != b"first":
            return row("create_if_absent", MISSING, "refused (412), yet the object changed")
        return self._atomic("create_if_absent", "412 over an existing key", lambda k: None,
                            lambda k, i, _, guard: self.store.put(
                                k, b"racer %d" % i, if_none_match=True, guard=guard))

    def compare_and_swap(self) -> Check:
        k = self.key("cas")
        e1 = self.write("cas", b"v1").etag
        current = self.ask(lambda: self.store.put(k, b"v2", if_match=e1))
        if current.kind == "412":
            bare = self.ask(lambda: self.store.put(k, b"v2", if_match=e1.strip('"')))
            also = (f"; the same ETag without its quotes ({e1.strip(chr(34))}) is accepted: "
                    "the store compares the header verbatim" if bare.kind == "ok" else "")
            return row("compare_and_swap", MISSING,
                       f"PUT If-Match with the current ETag {e1} refused (412){also}")
        if current.kind != "ok":
            return row("compare_and_swap", UNKNOWN, f"PUT If-Match, current ETag: {current}")
        stale = self.ask(lambda: self.store.put(k, b"v3", if_match=e1))
        if stale.kind == "ok":
            return row("compare_and_swap", MISSING, "PUT If-Match with a stale ETag was "
                       "accepted: the object was overwritten (If-Match ignored)")
        if stale.kind != "412" or self.store.get(k)[0] != b"v2":
            return row("compare_and_swap", UNKNOWN, f"PUT If-Match, stale ETag: {stale}")
        absent = self.ask(lambda: self.store.put(self.key("cas-absent"), b"x", if_match=e1))
        if absent.kind == "ok":
            return row("compare_and_swap", MISSING, "PUT If-Match on a missing key created it")
        return self._atomic("compare_and_swap",
                            f"current ETag accepted, stale one refused (412), missing key: "
                            f"{absent}",
                            lambda k: self.store.put(k, b"start").etag,
                            lambda k, i, etag, guard: self.store.put(
                                k, b"racer %d" % i, if_match=etag, guard=guard))

    def conditional_delete(self) -> Check:
        k = self.key("delete")
        e1 = self.write("delete", b"d1").etag
        e2 = self.write("delete", b"d2").etag
        stale = self.ask(lambda: self.store.delete(k, if_match=e1))
        kept = self.ask(lambda: self.store.head(k), conditional=False)
        if stale.kind == "ok" and kept.kind == "404":
            return row("conditional_delete", MISSING, "DELETE If-Match with a stale ETag "
                       "deleted the object (If-Match ignored)")
        if kept.kind == "404":
            return row("conditional_delete", MISSING, f"DELETE If-Match with a stale ETag "
                       f"answered {stale}, yet the object is gone")
        if stale.kind != "412":
            return row("conditional_delete", UNKNOWN, f"DELETE If-Match, stale: {stale}")
        current = self.ask(lambda: self.store.delete(k, if_match=e2))
        gone = self.ask(lambda: self.store.head(k), conditional=False)
        if current.kind != "ok" or gone.kind != "404":
            return row("conditional_delete", MISSING if current.kind == "412" else UNKNOWN,
                       f"DELETE If-Match with the current ETag: {current}")
        absent = self.ask(lambda: self.store.delete(k, if_match=e2))
        if absent.kind == "ok":
            # a fresh claim's c2 (and d5) read a first try's 404 as "that object is no
            # longer there": a store that says 204 instead would let a claim run a request
            # another worker claimed and completed between its c0 and its c1
            return row("conditional_delete", MISSING, "DELETE If-Match of a missing key was "
                       "accepted (204), not 404 NotFound: a claim could not tell that the "
                       "request it read was claimed and completed by another worker meanwhile")
        if absent.kind not in ("404", "412"):
            return row("conditional_delete", UNKNOWN, f"DELETE If-Match of a missing key: "
                       f"{absent}")
        return row("conditional_delete", OK, f"stale ETag refused (412) and the object kept; "
                   f"current accepted; missing key: {absent}")

    # -- atomicity --------------------------------------------------------------------------

    def _atomic(self, name: str, seen: str, setup: Callable[[str], str | None],
                attempt: Callable[[str, int, str | None, Guard], object]) -> Check:
        """``rounds`` times: set up a fresh key, then ``racers`` threads send ``attempt`` at
        once. One winner in each round: OK; more in any round: MISSING."""
        conclusive = 0
        for r in range(self.rounds):
            k = self.key(f"{name}-race-{r}")
            won = self._race(k, setup(k), attempt)
            if won is not None and won > 1:
                return row(name, MISSING, f"{seen}; but {won} of {self.racers} concurrent "
                           f"writes won in round {r + 1}: the check and the write are not "
                           "atomic")
            conclusive += won is not None
        if not conclusive:
            return row(name, UNKNOWN, f"{seen}; concurrent writes: no round was conclusive")
        return row(name, OK, f"{seen}; {self.racers} concurrent writes x {conclusive} "
                   "rounds: exactly one won each time")

    def _race(self, k: str, etag: str | None,
              attempt: Callable[[str, int, str | None, Guard], object]) -> int | None:
        """How many racers won; None when inconclusive (an error, a broken barrier, or
        every racer refused, e.g. by 409s)."""
        barrier = threading.Barrier(self.racers)
        at_send = _sends_over_network(self.store)
        outcomes: list[str] = [""] * self.racers

        def racer(i: int) -> None:
            guard = _Guard(barrier, at_send)
            try:
                if not at_send:
                    barrier.wait(_BARRIER_TIMEOUT)
                attempt(k, i, etag, guard)
                outcomes[i] = "won"
            except PreconditionFailed as e:
                conflict = error_code(e) == "ConditionalRequestConflict"
                self._count(conflicts=int(conflict))
                outcomes[i] = "lost"
            except NotFound:
                outcomes[i] = "lost"
            except (StoreError, threading.BrokenBarrierError) as e:
                outcomes[i] = f"error: {e}"
            self._count(writes=1)

        threads = [threading.Thread(target=racer, args=(i,), name=f"s3q-probe-{i}")
                   for i in range(self.racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = outcomes.count("won")
        return won if won > 1 or (won == 1 and outcomes.count("lost") == self.racers - 1) \
            else None


class _Guard:
    """A racer's send-time guard: waits once at the barrier, so that every racer's request
    leaves at the same moment (after signing, in botocore's before-send)."""

    def __init__(self, barrier: threading.Barrier, at_send: bool) -> None:
        self.barrier, self.armed = barrier, at_send

    def __call__(self) -> None:
        if self.armed:  # a retry of the same request is not held again
            self.armed = False
            self.barrier.wait(_BARRIER_TIMEOUT)


def _sends_over_network(store: Store) -> bool:
    """True for S3: its guard runs just before the bytes leave, outside any lock. The
    in-process stores call the guard under their lock: racers wait before the call there."""
    from s3q.backends.s3 import S3Store

    return isinstance(store, S3Store)


def said(answer: StoreError | None) -> str:
    return "deleted" if answer is None else f"{type(answer).__name__} ({answer})"


def error_code(e: BaseException) -> str:
    """The S3 error code behind a store error (botocore's ClientError), or ``""``."""
    response = getattr(e.__cause__, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def is_denied(e: StoreError) -> bool:
    return error_code(e) in DENIED_CODES or "permission denied" in str(e)
