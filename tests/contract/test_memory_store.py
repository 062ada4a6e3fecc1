"""Properties of :class:`MemoryStore` beyond the shared contract: the injectable clock, the
``snapshot`` test helper, ``open_store("memory://…")``, and speed."""

from __future__ import annotations

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
