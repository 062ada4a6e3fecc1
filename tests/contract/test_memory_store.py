"""Properties of :class:`MemoryStore` beyond the shared contract: the injectable clock, the
``snapshot`` test helper, ``open_store("memory://…")``, and speed."""

from __future__ import annotations

import time

from s3q.backends import open_store
from s3q.backends.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_injected_clock_stamps_writes() -> None:
    clock = Clock()
    store = MemoryStore("t", clock=clock)
    assert store.now() == clock.t
    assert store.put("a", b"a").last_modified == clock.t
    clock.t += 30
    assert store.head("a").last_modified == clock.t - 30
    assert store.copy("a", "b").last_modified == clock.t
    assert store.now() == clock.t


def test_snapshot_is_a_copy_in_key_order() -> None:
    store = MemoryStore()
    store.put("b", b"2")
    store.put("a/x", b"1")
    snap = store.snapshot()
    assert list(snap.items()) == [("a/x", b"1"), ("b", b"2")]
    store.delete("b")
    assert snap == {"a/x": b"1", "b": b"2"}
    assert store.snapshot() == {"a/x": b"1"}


def test_open_store_memory_url() -> None:
    store = open_store("memory://demo")
    assert isinstance(store, MemoryStore)
    assert store.url == "memory://demo"


def test_fast_enough_for_exhaustive_crash_tests() -> None:
    store = MemoryStore()
    start = time.perf_counter()
    for i in range(20_000):
        info = store.put(f"wait/{i % 500:04d}", b"body %d" % i)
        store.head(info.key)
        store.put(info.key, b"next", if_match=info.etag)
        if i % 50 == 0:
            store.list_page("wait/", limit=100)
    assert time.perf_counter() - start < 5  # ~0.3 s on a laptop
