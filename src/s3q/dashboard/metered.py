"""A store that counts the requests sent through it, by operation: the dashboard shows
what each page cost, and the exporter exports the counts (``s3q_store_requests_total``)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import BinaryIO

from s3q.store import Body, ObjectInfo, Page, Store

__all__ = ["MeteredStore"]


class MeteredStore:
    """Delegates every call to ``inner`` and counts it (thread-safe)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, op: str) -> None:
        with self._lock:
            self._counts[op] += 1

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def snapshot_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(requests by operation, errors by code: none counted here), as StoreCollector
        reads them."""
        with self._lock:
            return dict(self._counts), {}

    def get(self, key: str) -> tuple[bytes, ObjectInfo]:
        self._count("GET")
        return self.inner.get(key)

    def open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        self._count("GET")
        return self.inner.open(key)

    def head(self, key: str) -> ObjectInfo:
        self._count("HEAD")
        return self.inner.head(key)

    def put(self, key: str, body: Body, *, if_none_match: bool = False,
            if_match: str | None = None) -> ObjectInfo:
        self._count("PUT")
        return self.inner.put(key, body, if_none_match=if_none_match, if_match=if_match)

    def copy(self, src: str, dst: str, *, if_source_match: str | None = None) -> ObjectInfo:
        self._count("COPY")
        return self.inner.copy(src, dst, if_source_match=if_source_match)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self._count("DELETE")
        self.inner.delete(key, if_match=if_match)

    def list_page(self, prefix: str, *, start_after: str | None = None,
                  limit: int = 1000) -> Page:
        self._count("LIST")
        return self.inner.list_page(prefix, start_after=start_after, limit=limit)

    def now(self) -> float:
        return self.inner.now()

    def close(self) -> None:
        self.inner.close()
