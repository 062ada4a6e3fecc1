"""A request replaced by a larger one between the LIST that found it and its c0: the claim
runs the bytes c0 read (copied privately, as any large request), and its lease must say
their size. It said the listed one, and the request's own views were then not known as
its own where a view is compared with the lease (``is_ours`` compares sizes first: w1,
the retry claim's sweep, x2's 412): duplicates, or its own dead letter moved aside."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from s3q import Queue, QueueConfig
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.records import INLINE_MAX

T = TypeVar("T")
LARGER = b"B" * (INLINE_MAX + 100)


class ReplacedAtC0(DelegatingStore):
    """wait/x_request.json is replaced by LARGER just before the first GET of it."""

    armed = True

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "get" and args.get("key") == "wait/x_request.json" and self.armed:
            self.armed = False
            self.inner.put("wait/x_request.json", LARGER)
        return fn()


def test_the_lease_says_the_size_of_the_bytes_the_claim_holds() -> None:
    q = Queue(ReplacedAtC0(MemoryStore("replaced")), QueueConfig())
    q.submit("x_request.json", b"small")
    job = q.claim("w")
    assert job is not None and job.read() == LARGER
    found = q.lease("x_request.json")
    assert found is not None
    assert found[0].size == len(LARGER)  # (5, the listed size, before)
    job.complete()
    assert q.store.get("finish/x_request.json")[0] == LARGER
