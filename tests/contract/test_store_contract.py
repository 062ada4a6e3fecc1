"""The store contract: what the queue relies on (see :mod:`s3q.store`), checked on every
backend through the parametrized ``store`` fixture (memory, local, s3)."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from s3q.store import (
    InvalidKey,
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    Store,
    list_all,
)
from tests.contract.conftest import SameStore

STALE = '"0123456789abcdef0123456789abcdef"'
EMPTY_MD5 = '"d41d8cd98f00b204e9800998ecf8427e"'
MB = 1024**2


def md5_etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def keys_of(items: list[ObjectInfo]) -> list[str]:
    return [i.key for i in items]


def utf8_sorted(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


# -- round trips -----------------------------------------------------------------------------


def test_put_get_head_open_round_trip(store: Store) -> None:
    put = store.put("wait/a.json", b'{"x": 1}')
    assert put.key == "wait/a.json"
    assert put.etag == store.head("wait/a.json").etag
    assert put.size == 8

    data, got = store.get("wait/a.json")
    assert data == b'{"x": 1}'
    assert (got.key, got.etag, got.size) == ("wait/a.json", put.etag, 8)

    head = store.head("wait/a.json")
    assert (head.key, head.etag, head.size) == ("wait/a.json", put.etag, 8)
    assert abs(head.last_modified - got.last_modified) < 1e-3

    stream, opened = store.open("wait/a.json")
    with stream:
        assert stream.read() == b'{"x": 1}'
    assert opened.etag == put.etag


def test_put_overwrites(store: Store) -> None:
    store.put("k", b"one")
    info = store.put("k", b"two!")
    assert store.get("k") == (b"two!", store.head("k"))
    assert info.etag == store.head("k").etag and info.size == 4


def test_missing_key_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get("nope")
    with pytest.raises(NotFound):
        store.head("nope")
    with pytest.raises(NotFound):
        store.open("nope")
    with pytest.raises(NotFound):
        store.get("no/such/dir/nope")


def test_delete(store: Store) -> None:
    store.put("d/x", b"x")
    store.delete("d/x")
    with pytest.raises(NotFound):
        store.head("d/x")
    store.delete("d/x")  # unconditional delete of a missing key: silent
    store.delete("never/existed")


def test_put_from_stream(store: Store) -> None:
    info = store.put("s", io.BytesIO(b"streamed body"))
    assert info.etag == store.head("s").etag and info.size == 13
    assert store.get("s")[0] == b"streamed body"


class _OneWay(io.RawIOBase):
    """A non-seekable stream (like a pipe or a socket)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._rest = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), 1000, len(self._rest))
        buffer[:n], self._rest = self._rest[:n], self._rest[n:]
        return n


def test_put_from_non_seekable_stream(store: Store) -> None:
    data = bytes(range(256)) * 100
    info = store.put("pipe", io.BufferedReader(_OneWay(data)))
    assert (info.etag, info.size) == (store.head("pipe").etag, len(data))
    assert store.get("pipe")[0] == data


def test_put_rejects_two_conditions(store: Store) -> None:
    with pytest.raises(ValueError):
        store.put("k", b"x", if_none_match=True, if_match=STALE)


# -- conditional writes ------------------------------------------------------------------------


def test_if_none_match_creates_when_absent(store: Store) -> None:
    info = store.put("c", b"first", if_none_match=True)
    assert store.head("c").etag == info.etag


def test_if_none_match_refuses_when_present(store: Store) -> None:
    store.put("c", b"first")
    with pytest.raises(PreconditionFailed):
        store.put("c", b"second", if_none_match=True)
    assert store.get("c")[0] == b"first"


def test_if_match_current_etag_replaces(store: Store) -> None:
    old = store.put("m", b"v1")
    new = store.put("m", b"v2", if_match=old.etag)
    assert new.etag == store.head("m").etag != old.etag
    assert store.get("m")[0] == b"v2"


def test_if_match_stale_etag_refused(store: Store) -> None:
    old = store.put("m", b"v1")
    store.put("m", b"v2")
    with pytest.raises(PreconditionFailed):
        store.put("m", b"v3", if_match=old.etag)
    with pytest.raises(PreconditionFailed):
        store.put("m", b"v3", if_match=STALE)
    assert store.get("m")[0] == b"v2"


def test_if_match_missing_key_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.put("m", b"v1", if_match=STALE)
    with pytest.raises(NotFound):
        store.head("m")


def test_delete_if_match_current(store: Store) -> None:
    info = store.put("d", b"v1")
    store.delete("d", if_match=info.etag)
    with pytest.raises(NotFound):
        store.head("d")


def test_delete_if_match_stale_refused(store: Store) -> None:
    old = store.put("d", b"v1")
    store.put("d", b"v2")
    with pytest.raises(PreconditionFailed):
        store.delete("d", if_match=old.etag)
    assert store.get("d")[0] == b"v2"


def test_delete_if_match_missing_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.delete("d", if_match=STALE)


# -- ETags -------------------------------------------------------------------------------------


def test_an_etag_names_one_object_version(store: Store) -> None:
    """What the protocol relies on: the ETag a write returns is the one reads report for
    that object until it changes, and different bytes never share an ETag."""
    a = store.put("e/a", b"same")
    c = store.put("e/c", b"different")
    assert a.etag.startswith('"') and a.etag.endswith('"')
    assert store.head("e/a").etag == a.etag == store.get("e/a")[1].etag
    assert [i.etag for i in store.list_page("e/a").items] == [a.etag]
    assert c.etag != a.etag
    assert store.put("e/a", b"changed").etag not in (a.etag, c.etag)


def test_etag_md5_of_the_bytes_where_the_store_gives_it(store: Store, md5_etags: bool) -> None:
    a = store.put("e/a", b"same")
    b = store.put("e/b", b"same")
    rewritten = store.put("e/a", b"same")
    if md5_etags:
        assert a.etag == b.etag == rewritten.etag == md5_etag(b"same")
    else:  # opaque ETags (SSE-KMS): every write of the same bytes gets its own
        assert len({a.etag, b.etag, rewritten.etag}) == 3


def test_empty_object(store: Store, md5_etags: bool) -> None:
    info = store.put("empty", b"")
    assert info.size == 0
    data, got = store.get("empty")
    assert (data, got.size, got.etag) == (b"", 0, info.etag)
    assert store.head("empty").size == 0
    [listed] = store.list_page("empty").items
    assert (listed.size, listed.etag) == (0, info.etag)
    assert not md5_etags or info.etag == EMPTY_MD5


# -- copy --------------------------------------------------------------------------------------


def test_copy_keeps_content(store: Store, md5_etags: bool) -> None:
    src = store.put("wait/r.json", b"request body")
    info = store.copy("wait/r.json", "processing/r.json")
    assert info.key == "processing/r.json"
    assert info.size in (12, -1)  # S3Store: -1, CopyObject does not report the size
    assert store.get("processing/r.json")[0] == b"request body"
    assert store.head("processing/r.json").etag == info.etag
    assert store.get("wait/r.json")[0] == b"request body"  # the source stays
    assert (info.etag == src.etag) == md5_etags  # opaque: the copy has an ETag of its own


def test_copy_overwrites_destination(store: Store) -> None:
    store.put("dst", b"old destination")
    store.put("src", b"new")
    info = store.copy("src", "dst")
    assert store.get("dst") == (b"new", store.head("dst"))
    assert store.head("dst").etag == info.etag


def test_copy_if_none_match_never_overwrites(store: Store) -> None:
    """A create-if-absent copy, honoured on every store (natively, or as GET + PUT!)."""
    store.put("src", b"request")
    store.put("taken", b"somebody else's")
    made = store.copy("src", "fresh", if_none_match=True)
    assert store.get("fresh") == (b"request", store.head("fresh"))
    assert store.head("fresh").etag == made.etag
    with pytest.raises(PreconditionFailed):
        store.copy("src", "taken", if_none_match=True)
    assert store.get("taken")[0] == b"somebody else's"
    with pytest.raises(NotFound):
        store.copy("nope", "other", if_none_match=True)


def test_a_refusing_guard_sends_nothing(store: Store) -> None:
    """The guard runs right before a write is sent; when it raises, nothing changes."""
    class TooLate(Exception):
        pass

    def guard() -> None:
        raise TooLate

    store.put("k", b"v")
    before = {i.key: i.etag for i in list_all(store, "")}
    for write in (lambda: store.put("k", b"w", guard=guard),
                  lambda: store.put("new", b"w", if_none_match=True, guard=guard),
                  lambda: store.copy("k", "k2", guard=guard),
                  lambda: store.copy("k", "k3", if_none_match=True, guard=guard),
                  lambda: store.delete("k", guard=guard)):
        with pytest.raises(TooLate):
            write()
    assert {i.key: i.etag for i in list_all(store, "")} == before
    seen: list[int] = []
    store.put("k", b"w", guard=lambda: seen.append(1))  # a passing guard: the write happens
    assert seen and store.get("k")[0] == b"w"


def test_copy_if_source_match(store: Store, on_moto: bool) -> None:
    old = store.put("src", b"v1")
    current = store.put("src", b"v2")
    store.copy("src", "dst", if_source_match=current.etag)
    assert store.get("dst")[0] == b"v2"
    if on_moto:
        pytest.xfail("moto ignores x-amz-copy-source-if-match")
    with pytest.raises(PreconditionFailed):
        store.copy("src", "dst2", if_source_match=old.etag)
    with pytest.raises(NotFound):
        store.head("dst2")


def test_copy_missing_source(store: Store) -> None:
    with pytest.raises(NotFound):
        store.copy("nope", "dst")
    with pytest.raises(NotFound):
        store.copy("nope", "dst", if_source_match=STALE)
    with pytest.raises(NotFound):
        store.head("dst")


# -- listing -----------------------------------------------------------------------------------

#: Keys whose UTF-8 byte order differs from naive orders: case, '-' / '.' / '/' around a
#: "directory", and U+FB01 (3 UTF-8 bytes) < U+1D11E (4 bytes), reversed in UTF-16.
#: (No key is also a "directory" of another, e.g. "l/a" with "l/a/b": a local store, being a
#: file system, cannot hold both.)
ORDER_KEYS = [
    "l/B",
    "l/a-b",
    "l/a.txt",
    "l/a/b",
    "l/a/c/d",
    "l/a0",
    "l/Z",
    "l/é",
    "l/z",
    "l/\ufb01",
    "l/\ufb02",
    "l/\U0001d11e",
    "l/\U0001f600",
    "l/日本",
    "l/ab c",
    "l/a b",
]


def test_list_order_is_utf8_bytes(store: Store) -> None:
    for k in reversed(ORDER_KEYS):
        store.put(k, k.encode())
    page = store.list_page("l/")
    assert keys_of(page.items) == utf8_sorted(ORDER_KEYS)
    assert not page.truncated
    assert all(i.etag == store.head(i.key).etag for i in page.items)
    assert all(i.size == len(i.key.encode()) for i in page.items)


def test_list_prefix_matches_mid_name(store: Store) -> None:
    for k in ["p/a", "p/ab.json", "p/abc.json", "p/ab/x", "p/abd/y/z", "p/b", "pa", "q/ab"]:
        store.put(k, b".")
    under_ab = ["p/ab.json", "p/ab/x", "p/abc.json", "p/abd/y/z"]
    assert keys_of(store.list_page("p/ab").items) == under_ab
    assert keys_of(store.list_page("p/ab/").items) == ["p/ab/x"]
    assert keys_of(store.list_page("p/").items) == ["p/a", *under_ab, "p/b"]
    assert keys_of(store.list_page("p").items)[-1] == "pa"
    assert store.list_page("p/zzz").items == []
    assert store.list_page("nothing/").items == []
    everything = keys_of(store.list_page("").items)
    assert everything == utf8_sorted(everything) and len(everything) == 8


#: start_after values that are not keys of ORDER_KEYS.
BETWEEN_KEYS = [
    "l/",
    "l/a/",
    "l/a/b0",
    "l/a-",
    "l/a/c",
    "l/aa",
    "l/\ufb01x",
    "l/\U0001d11f",
    "a",
    "m",
]


def test_list_start_after(store: Store) -> None:
    for k in ORDER_KEYS:
        store.put(k, b".")
    ordered = utf8_sorted(ORDER_KEYS)
    for i, after in enumerate(ordered):
        assert keys_of(store.list_page("l/", start_after=after).items) == ordered[i + 1 :]
    # start_after need not be a key
    for after in BETWEEN_KEYS:
        expected = [k for k in ordered if k.encode() > after.encode()]
        got = keys_of(store.list_page("l/", start_after=after).items)
        assert got == expected, f"start_after={after!r}"


def test_list_limit_and_truncated(store: Store) -> None:
    keys = [f"t/{i:02d}" for i in range(5)]
    for k in keys:
        store.put(k, b".")
    first = store.list_page("t/", limit=2)
    assert (keys_of(first.items), first.truncated) == (keys[:2], True)
    second = store.list_page("t/", start_after=keys[1], limit=2)
    assert (keys_of(second.items), second.truncated) == (keys[2:4], True)
    third = store.list_page("t/", start_after=keys[3], limit=2)
    assert (keys_of(third.items), third.truncated) == (keys[4:], False)
    exact = store.list_page("t/", limit=5)
    assert (len(exact.items), exact.truncated) == (5, False)
    store.put("u", b".")  # a key after the prefix does not make the page truncated
    assert not store.list_page("t/", start_after=keys[2], limit=2).truncated


def test_list_limit_bounds(store: Store) -> None:
    for bad in (0, -1, 1001):
        with pytest.raises(ValueError):
            store.list_page("", limit=bad)


def test_list_all_pages(store: Store) -> None:
    keys = [f"all/{i % 3}/{i:03d}" for i in range(23)]
    for k in keys:
        store.put(k, b".")
    store.put("allx", b".")
    assert [i.key for i in list_all(store, "all/", page_size=4)] == utf8_sorted(keys)
    assert [i.key for i in list_all(store, "all/", page_size=1)] == utf8_sorted(keys)


def test_list_sees_writes_and_deletes_immediately(store: Store) -> None:
    store.put("rw/a", b".")
    assert keys_of(store.list_page("rw/").items) == ["rw/a"]
    store.put("rw/b", b".")
    store.delete("rw/a")
    assert keys_of(store.list_page("rw/").items) == ["rw/b"]
    info = store.put("rw/b", b"changed")
    [listed] = store.list_page("rw/").items
    assert listed.etag == info.etag


# -- keys --------------------------------------------------------------------------------------

ODD_KEYS = [
    "wait/with space.json",
    "wait/ spaces  around ",
    "wait/ünïcödé/日本語/😀_request.json",
    "wait/100%/%2F%41",
    "wait/a+b+c",
    "wait/a=b&c;d,e@f:g~h!i$j'k(l)m*n",
    "wait/#hash?query",
    "/".join(f"level{i}" for i in range(20)) + "/deep.json",
    "wait/.hidden",
    "wait/..dots..",
]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_keys_round_trip(store: Store, key: str) -> None:
    info = store.put(key, key.encode())
    assert info.key == key
    assert store.get(key)[0] == key.encode()
    assert store.head(key).etag == info.etag
    assert keys_of(store.list_page(key).items) == [key]
    store.copy(key, key + ".copy")
    assert store.get(key + ".copy")[0] == key.encode()
    store.delete(key, if_match=info.etag)
    store.delete(key + ".copy")
    assert store.list_page(key).items == []


BAD_KEYS = ["../x", "a/../../x", "/abs", "a//b", "a/./b", "x\x00y", "x\ny", "", "a/", "."]
BAD_PREFIXES = ["../x", "a/../b", "/abs", "x\x00y"]


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_invalid_keys_rejected_everywhere(store: Store, bad: str) -> None:
    store.put("ok", b"ok")
    operations: dict[str, Callable[[], object]] = {
        "get": lambda: store.get(bad),
        "open": lambda: store.open(bad),
        "head": lambda: store.head(bad),
        "put": lambda: store.put(bad, b"x"),
        "put if_none_match": lambda: store.put(bad, b"x", if_none_match=True),
        "put if_match": lambda: store.put(bad, b"x", if_match=STALE),
        "copy from": lambda: store.copy(bad, "ok2"),
        "copy to": lambda: store.copy("ok", bad),
        "delete": lambda: store.delete(bad),
        "delete if_match": lambda: store.delete(bad, if_match=STALE),
    }
    wrong: dict[str, str] = {}
    for name, operation in operations.items():
        try:
            operation()
            wrong[name] = "accepted"
        except InvalidKey:
            pass
        except Exception as e:
            wrong[name] = repr(e)
    assert not wrong, f"key {bad!r}: {wrong}"
    assert keys_of(store.list_page("").items) == ["ok"]


@pytest.mark.parametrize("bad", BAD_PREFIXES)
def test_invalid_list_prefixes_rejected(store: Store, bad: str) -> None:
    with pytest.raises(InvalidKey):
        store.list_page(bad)
    with pytest.raises(InvalidKey):
        store.list_page("", start_after=bad)


# -- time --------------------------------------------------------------------------------------


def test_clock(store: Store) -> None:
    assert abs(store.now() - time.time()) < 5
    info = store.put("clock", b"tick")
    now = store.now()
    assert abs(info.last_modified - now) < 5
    assert abs(store.head("clock").last_modified - now) < 5
    assert abs(store.copy("clock", "clock2").last_modified - now) < 5
    [listed] = store.list_page("clock2").items
    assert abs(listed.last_modified - now) < 5


# -- streaming ---------------------------------------------------------------------------------


def test_open_streams_a_large_object(store: Store, md5_etags: bool) -> None:
    block = hashlib.sha256(b"seed").digest() * (MB // 32)
    data = b"".join(bytes([i]) + block[1:] for i in range(20))  # 20 MB, every MB distinct
    info = store.put("big.bin", io.BytesIO(data))
    assert info.size == 20 * MB
    assert not md5_etags or info.etag == md5_etag(data)
    stream, opened = store.open("big.bin")
    digest = hashlib.sha256()
    chunks = 0
    with stream:
        while chunk := stream.read(MB):
            assert len(chunk) <= MB
            digest.update(chunk)
            chunks += 1
    assert chunks >= 20
    assert digest.digest() == hashlib.sha256(data).digest()
    assert (opened.size, opened.etag) == (20 * MB, info.etag)
    store.copy("big.bin", "big2.bin")
    assert store.head("big2.bin").size == 20 * MB


# -- concurrency -------------------------------------------------------------------------------


def _race(threads: int, work: Callable[[int], None]) -> None:
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as e:
            errors.append(e)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert not errors, errors


def test_concurrent_create_has_one_winner(same_store: SameStore) -> None:
    stores = [same_store() for _ in range(4)]
    winners: list[int] = []
    losers: list[int] = []

    def claim(i: int) -> None:
        try:
            stores[i % 4].put("lock", f"worker {i}".encode(), if_none_match=True)
            winners.append(i)
        except PreconditionFailed:
            losers.append(i)

    for round_ in range(3):
        stores[0].delete("lock")
        winners.clear()
        losers.clear()
        _race(16, claim)
        assert len(winners) == 1, f"round {round_}: winners {winners}"
        assert len(losers) == 15
        assert stores[0].get("lock")[0] == f"worker {winners[0]}".encode()
    for s in stores:
        s.close()


def test_concurrent_compare_and_swap_loses_no_update(same_store: SameStore) -> None:
    stores = [same_store() for _ in range(4)]
    stores[0].put("counter", b"0")

    def increment(i: int) -> None:
        s = stores[i % 4]
        for _ in range(10):
            while True:
                data, info = s.get("counter")
                try:
                    s.put("counter", str(int(data) + 1).encode(), if_match=info.etag)
                    break
                except PreconditionFailed:
                    continue

    _race(8, increment)
    assert stores[0].get("counter")[0] == b"80"
    for s in stores:
        s.close()
