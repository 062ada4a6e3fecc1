"""Answers that hold for every key (``StoreRefused``: rejected or missing credentials, a
bucket that does not exist, a clock S3 finds too skewed) met by the readers other than the
claim: the takeover scan, recovery, the bulk operator commands, status and the dashboard.
Such an answer says nothing of the object asked: nothing may be reported, marked or
counted per object because of it, and a run over many requests stops at it (nothing was
done by the refused request) instead of going through every one of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from s3q import Queue, QueueConfig
from s3q.backends import open_store
from s3q.backends.delegating import DelegatingStore
from s3q.bulk import BulkIncomplete
from s3q.store import Store, StoreRefused, StoreUnavailable

T = TypeVar("T")
NAMES = [f"r{i}_request.json" for i in range(3)]
EXPIRED = "S3 rejected the credentials (ExpiredToken)"


class Refuses(DelegatingStore):
    """Once ``on``, every request but a LIST (made before the credentials expired) is
    refused whatever its key."""

    def __init__(self, inner: Store, ops: tuple[str, ...] = ()) -> None:
        super().__init__(inner)
        self.on, self.ops, self.refused = False, ops, 0

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if self.on and op != "list" and (not self.ops or op in self.ops):
            self.refused += 1
            raise StoreRefused(f"{EXPIRED} for {op} {args.get('key', args.get('dst'))}")
        return fn()


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
