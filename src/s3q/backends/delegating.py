"""A store that delegates every call to ``inner`` through one hook, for wrappers that watch
(count, record, schedule, crash) a real store without re-implementing it: the dashboard's
request meter, the benchmarks' counters, the tests' adversaries.

Subclasses override :meth:`DelegatingStore._call`, which gets the operation's name, its
arguments by name and a function doing the real call. Dataclass subclasses call
``DelegatingStore.__init__(self, self.inner)`` in ``__post_init__``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, TypeVar

from s3q.capabilities import Capabilities
from s3q.store import Body, Guard, ObjectInfo, Page, Store, StoreError

T = TypeVar("T")


class DelegatingStore:
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def max_key_bytes(self) -> int:
        return self.inner.max_key_bytes

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        """Around every store operation ("get", "open", "head", "put", "copy", "delete",
        "delete_batch", "list"): by default, just ``fn()``. ``args`` holds the call's
        arguments by name (``guard``: the caller's send-time check, run by the inner store
        inside ``fn``)."""
        return fn()

    def get(self, key: str) -> tuple[bytes, ObjectInfo]:
        return self._call("get", {"key": key}, lambda: self.inner.get(key))

    def open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        return self._call("open", {"key": key}, lambda: self.inner.open(key))

    def head(self, key: str) -> ObjectInfo:
        return self._call("head", {"key": key}, lambda: self.inner.head(key))

    def put(self, key: str, body: Body, *, if_none_match: bool = False,
            if_match: str | None = None, guard: Guard | None = None) -> ObjectInfo:
        return self._call(
            "put", {"key": key, "if_none_match": if_none_match, "if_match": if_match,
                    "guard": guard, "body": body},
            lambda: self.inner.put(key, body, if_none_match=if_none_match, if_match=if_match,
                                   guard=guard))

    def copy(self, src: str, dst: str, *, if_source_match: str | None = None,
             if_none_match: bool = False, guard: Guard | None = None) -> ObjectInfo:
        return self._call(
            "copy", {"src": src, "dst": dst, "if_source_match": if_source_match,
                     "if_none_match": if_none_match, "guard": guard},
            lambda: self.inner.copy(src, dst, if_source_match=if_source_match,
                                    if_none_match=if_none_match, guard=guard))

    def delete(self, key: str, *, if_match: str | None = None,
               guard: Guard | None = None) -> None:
        self._call("delete", {"key": key, "if_match": if_match, "guard": guard},
                   lambda: self.inner.delete(key, if_match=if_match, guard=guard))

    def delete_batch(self, items: Sequence[tuple[str, str]], *,
                     guard: Guard | None = None) -> list[StoreError | None]:
        return self._call("delete_batch", {"items": items, "guard": guard},
                          lambda: self.inner.delete_batch(items, guard=guard))

    def list_page(self, prefix: str, *, start_after: str | None = None,
                  limit: int = 1000) -> Page:
        return self._call(
            "list", {"prefix": prefix, "start_after": start_after, "limit": limit},
            lambda: self.inner.list_page(prefix, start_after=start_after, limit=limit))

    def now(self) -> float:
        return self.inner.now()  # a clock read, not a store operation

    def close(self) -> None:
        self.inner.close()
