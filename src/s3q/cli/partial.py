"""Operator commands that act on many requests (``requeue``, ``recover``, ``purge``) when
store errors keep them from doing all of it.

One request's own store error (access denied on its key) is recorded and the command goes
on with the others; an unavailable store (:class:`~s3q.store.StoreUnavailable`:
unreachable, or failing after the backend's retries) stops it, as every other request
would fail the same way. Either way the command first prints its normal summary of what
it did, then, on stderr, each request not done with its error and each not attempted, and
ends with one ``s3q: error:`` line that counts them and says how safe a re-run is: exit 3.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import click

from s3q.cli.errors import EXIT_STORE, Failure
from s3q.store import StoreError, StoreUnavailable

T = TypeVar("T")


@dataclass(slots=True)
class Undone:
    """What a command over many requests did not do."""

    failed: dict[str, str] = field(default_factory=dict)  # name -> its store error
    not_attempted: list[str] = field(default_factory=list)
    stopped: StoreError | None = None  # the unavailable store that ended the run
    #: of ``failed``: those the store went away under (every one in flight then): each may
    #: or may not have taken effect
    unknown: set[str] = field(default_factory=set)
    unlisted: bool = False  # stopped in its listing: requests after it were not looked at

    def __bool__(self) -> bool:
        return bool(self.failed or self.stopped is not None)

    def json(self) -> dict[str, object]:
        """The ``--json`` fields (always there, empty when all was done)."""
        return {"failed": [{"name": n, "error": e, "outcome_unknown": n in self.unknown}
                           for n, e in self.failed.items()],
                "not_attempted": list(self.not_attempted)}


def each(items: Iterable[T], key: Callable[[T], str], action: Callable[[T], bool], *,
         threads: int, advance: Callable[[int], None], undone: Undone,
         round_size: int | None = None) -> Iterator[tuple[T, bool]]:
    """``action(item)`` for every item, ``threads`` at a time (``round_size`` items listed
    ahead at most: memory stays bounded while ``items`` streams), yielding (item, its
    result) in order. A store error of an item's own goes into ``undone.failed`` and the
    run goes on; an unavailable store ends it: what was not started yet is cancelled and
    goes into ``undone.not_attempted``, with the rest of ``items`` if it is a list (else
    ``undone.unlisted``), and every item the store went away under (those in flight then)
    into ``undone.unknown``. An error of the listing itself ends it too."""
    it = iter(items)
    stop = threading.Event()

    def attempt(item: T) -> bool:
        if stop.is_set():  # (another thread's store just went away)
            raise _NotAttempted
        try:
            return action(item)
        except StoreUnavailable:
            stop.set()  # at once: no other request is started
            raise

    with ThreadPoolExecutor(max_workers=max(1, min(threads, 32))) as pool:
        while undone.stopped is None:
            try:
                batch = _take(it, round_size)
            except StoreError as e:  # the listing failed: what it had not listed is unknown
                undone.stopped, undone.unlisted = e, True
                return
            if not batch:
                return
            futures: list[Future[bool]] = [pool.submit(attempt, i) for i in batch]
            for item, future in zip(batch, futures, strict=True):
                error = None if future.cancelled() else future.exception()
                if future.cancelled() or isinstance(error, _NotAttempted):
                    undone.not_attempted.append(key(item))
                    continue
                if error is None:
                    advance(1)
                    yield item, future.result()
                    continue
                if not isinstance(error, StoreError):
                    raise error  # a bug: let it show
                undone.failed[key(item)] = " ".join(str(error).split())
                advance(1)
                if not isinstance(error, StoreUnavailable):
                    continue
                undone.unknown.add(key(item))  # (and each other one it went away under)
                if undone.stopped is None:
                    undone.stopped = error
                    for f in futures:
                        f.cancel()  # (those already running finish, and are reported)
        if isinstance(items, list):
            undone.not_attempted += [key(i) for i in it]
        else:
            undone.unlisted = True


class _NotAttempted(Exception):
    pass


def _take(it: Iterator[T], n: int | None) -> list[T]:
    batch: list[T] = []
    for item in it:
        batch.append(item)
        if n is not None and len(batch) >= n:
            break
    return batch


def report(undone: Undone, *, command: str, verb: str, done: int, rerun: str) -> None:
    """After the command's summary: the requests not done and not attempted on stderr,
    then stop with exit 3 (nothing when all was done). ``verb``: "requeued"; ``rerun``:
    why running the command again is safe."""
    if not undone:
        return
    for name, error in undone.failed.items():
        unknown = " (outcome unknown: the store went away)" if name in undone.unknown else ""
        click.echo(f"not {verb}{unknown}: {name}: {error}", err=True)
    for name in undone.not_attempted:
        click.echo(f"not attempted: {name}", err=True)
    counts = (f"{done} {verb}, {len(undone.failed)} failed, {len(undone.not_attempted)} "
              "not attempted")
    if undone.unlisted:
        counts += ", the requests it had not listed yet not looked at"
    stopped = undone.stopped
    why = ("store errors of some requests (it went on with the others)" if stopped is None
           else f"stopped, store unavailable ({stopped})"
           if isinstance(stopped, StoreUnavailable) else f"stopped, store error ({stopped})")
    raise Failure(f"{command}: {why}: {counts}; re-running is safe: {rerun}", EXIT_STORE)
