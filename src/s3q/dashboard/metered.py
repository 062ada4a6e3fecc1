"""A store that counts the requests sent through it, by operation: the dashboard shows
what each page cost, and the exporter exports the counts (``s3q_store_requests_total``)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from s3q.backends.delegating import DelegatingStore
from s3q.store import Store

T = TypeVar("T")

__all__ = ["MeteredStore"]


class MeteredStore(DelegatingStore):
    """Delegates every call to ``inner`` and counts it (thread-safe)."""

    OPERATIONS: ClassVar[dict[str, str]] = {
        "get": "GET", "open": "GET", "head": "HEAD", "put": "PUT", "copy": "COPY",
        "delete": "DELETE", "delete_batch": "DELETE", "list": "LIST"}

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        with self._lock:
            self._counts[self.OPERATIONS[op]] += 1
        return fn()

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def snapshot_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(requests by operation, errors by code: none counted here), as StoreCollector
        reads them."""
        with self._lock:
            return dict(self._counts), {}
