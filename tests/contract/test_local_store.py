"""Properties of :class:`LocalStore` beyond the shared contract: the directory *is* the
store (files dropped in are objects), keys cannot escape the root, the store's own files stay
hidden, directories come and go safely, OS errors are translated, and compare-and-swap holds
across processes."""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3q import Queue
from s3q.backends import local, localdirs, localetags, localfs, open_store
from s3q.backends.local import LocalStore
from s3q.context import QueueConfig
from s3q.store import InvalidKey, NotFound, PreconditionFailed, StoreError, list_all


def md5_etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "s3q-data"


@pytest.fixture
def store(root: Path) -> Iterator[LocalStore]:
    s = LocalStore(root)
    yield s
    s.close()


def all_keys(store: LocalStore, prefix: str = "") -> list[str]:
    return [i.key for i in list_all(store, prefix)]


def drop(path: Path, data: bytes, *, ago: float = 60.0) -> None:
    """A file another program (``cp``) wrote into the store and finished ``ago`` seconds
    ago: long enough to be listed (see LocalStore's settle time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time_ns() - int(ago * 1e9)
    os.utime(path, ns=(then, then))


# -- the directory is the store ------------------------------------------------------------


def test_objects_are_plain_files(store: LocalStore, root: Path) -> None:
    store.put("wait/a/b.json", b'{"x": 1}')
    assert (root / "wait" / "a" / "b.json").read_bytes() == b'{"x": 1}'
    assert store.url == "file://" + str(root.absolute())


def test_dropped_in_files_are_objects(store: LocalStore, root: Path) -> None:
    drop(root / "wait" / "sub" / "x_request.json", b"dropped")
    drop(root / "wait" / "y_request.json", b"")
    [x, y] = store.list_page("wait/").items
    assert (x.key, x.etag, x.size) == ("wait/sub/x_request.json", md5_etag(b"dropped"), 7)
    assert (y.key, y.etag, y.size) == ("wait/y_request.json", md5_etag(b""), 0)
    assert store.get("wait/sub/x_request.json")[0] == b"dropped"
    assert store.copy("wait/sub/x_request.json", "processing/x").etag == x.etag


def test_etag_follows_changes_made_behind_the_stores_back(store: LocalStore, root: Path) -> None:
    path = root / "wait" / "f"
    store.put("wait/f", b"aaaa")
    assert store.head("wait/f").etag == md5_etag(b"aaaa")
    path.write_bytes(b"bbbb")  # same size, rewritten in place
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert store.head("wait/f").etag == md5_etag(b"bbbb")
    assert store.list_page("wait/f").items[0].etag == md5_etag(b"bbbb")
    path.write_bytes(b"longer")
    assert store.get("wait/f")[1].etag == md5_etag(b"longer")


def test_open_store_urls(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = open_store("file://" + str(root))
    assert isinstance(s, LocalStore) and s.root == root
    monkeypatch.chdir(tmp_path)
    relative = open_store("s3q-data")
    assert isinstance(relative, LocalStore) and relative.url == "file://" + str(root)
    s.put("k", b"v")
    assert relative.get("k")[0] == b"v"
    assert open_store(s.url).get("k")[0] == b"v"


def test_opening_without_create_creates_nothing(tmp_path: Path) -> None:
    """Read-only commands open the store with create=False: a directory that holds no
    queue is NotFound, and nothing is created, neither it nor .s3qlocal/ inside it."""
    missing = tmp_path / "nothing-here"
    with pytest.raises(NotFound, match="no queue at"):
        LocalStore(missing, create=False)
    for url in (str(missing), "file://" + str(missing)):
        with pytest.raises(NotFound, match="no queue at"):
            open_store(url, create=False)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFound):
        LocalStore(empty, create=False)
    assert list(empty.iterdir()) == []
    (empty / "wait").mkdir()  # a request directory made by hand: that is a queue
    store = LocalStore(empty, create=False)
    assert store.list_page("wait/").items == []
    store.close()


# -- keys cannot escape the root ---------------------------------------------------------------


def test_path_traversal_rejected(store: LocalStore, tmp_path: Path) -> None:
    for bad in ["../escape", "a/../../escape", "/etc/passwd", "a\\..\\b", "\x00"]:
        with pytest.raises(InvalidKey):
            store.put(bad, b"x")
        with pytest.raises(InvalidKey):
            store.get(bad)
    assert not (tmp_path / "escape").exists()


def test_symlink_out_of_the_root_rejected(store: LocalStore, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (root / "wait").mkdir()
    (root / "wait" / "evil").symlink_to(outside)
    (root / "wait" / "evil_file").symlink_to(outside / "secret")
    for key in ["wait/evil/secret", "wait/evil/new", "wait/evil_file"]:
        with pytest.raises(InvalidKey, match="outside the store root"):
            store.get(key)
        with pytest.raises(InvalidKey, match="outside the store root"):
            store.put(key, b"overwritten")
        with pytest.raises(InvalidKey, match="outside the store root"):
            store.delete(key)
        with pytest.raises(InvalidKey, match="outside the store root"):
            store.copy(key, "wait/copied")
    assert (outside / "secret").read_bytes() == b"secret"
    assert not (outside / "new").exists()
    assert all_keys(store) == []
    assert all_keys(store, "wait/evil/") == []


def test_symlink_inside_the_root_followed(store: LocalStore, root: Path) -> None:
    store.put("templates/t.json", b"template")
    (root / "wait").mkdir()
    (root / "wait" / "t_request.json").symlink_to(root / "templates" / "t.json")
    assert store.get("wait/t_request.json")[0] == b"template"
    assert all_keys(store, "wait/") == ["wait/t_request.json"]


def test_a_relative_symlink_request_is_claimed(root: Path) -> None:
    """``ln -s in/x.json wait/x_request.json``: a relative symlink, listed like an absolute
    one. A conditional delete moved it aside into the store's tmp directory and then
    followed it from there (to a file that is not there): every c2 failed with a
    StoreError, the request was never run and each takeover scan stopped on it."""
    store = LocalStore(root)
    drop(root / "wait" / "in" / "x.json", b"template")
    (root / "wait" / "x_request.json").symlink_to("in/x.json")
    data, info = store.get("wait/x_request.json")
    assert data == b"template"
    store.delete("wait/x_request.json", if_match=info.etag)  # the link goes, not its target
    assert not (root / "wait" / "x_request.json").is_symlink()
    assert (root / "wait" / "in" / "x.json").read_bytes() == b"template"
    (root / "wait" / "y_request.json").symlink_to("in/x.json")
    with pytest.raises(PreconditionFailed):
        store.delete("wait/y_request.json", if_match=md5_etag(b"other"))
    assert (root / "wait" / "y_request.json").is_symlink()  # put back as it was
    assert list((root / ".s3qlocal" / "tmp").iterdir()) == []
    queue = Queue(store, QueueConfig(filter="*request.json"))
    job = queue.claim("w")
    assert job is not None
    with job:
        assert job.read() == b"template"
    assert (root / "finish" / "y_request.json").read_bytes() == b"template"
    assert not (root / "wait" / "y_request.json").is_symlink()
    queue.close()


# -- the store's own files ---------------------------------------------------------------------


def test_internal_directory_hidden_and_reserved(store: LocalStore, root: Path) -> None:
    store.put(".s3q/lease/a", b"lease")
    store.put("wait/a", b"a")
    with pytest.raises(PreconditionFailed):
        store.put("wait/a", b"a", if_none_match=True)  # leaves no temp file behind
    assert (root / ".s3qlocal" / "locks").is_dir()
    assert list((root / ".s3qlocal" / "tmp").iterdir()) == []
    assert all_keys(store) == [".s3q/lease/a", "wait/a"]
    assert all_keys(store, ".s3q") == [".s3q/lease/a"]
    assert all_keys(store, ".s3qlocal/") == []
    assert all_keys(store, ".s3qlocal/locks/") == []
    for key in [".s3qlocal", ".s3qlocal/x", ".s3qlocal/locks/00"]:
        with pytest.raises(InvalidKey, match="reserved"):
            store.put(key, b"x")
        with pytest.raises(InvalidKey, match="reserved"):
            store.get(key)
        with pytest.raises(InvalidKey, match="reserved"):
            store.delete(key)


def test_stale_temp_files_removed_on_open(root: Path) -> None:
    LocalStore(root).close()
    stale = root / ".s3qlocal" / "tmp" / "1.dead.tmp"
    fresh = root / ".s3qlocal" / "tmp" / "2.live.tmp"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"being written")
    old = time.time() - 2 * localfs.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    LocalStore(root).close()
    assert not stale.exists() and fresh.exists()


# -- directories -------------------------------------------------------------------------------


def test_empty_parent_directories_removed(store: LocalStore, root: Path) -> None:
    store.put("wait/a/b/c/x.json", b"x")
    store.put("wait/a/y.json", b"y")
    store.delete("wait/a/b/c/x.json")
    assert not (root / "wait" / "a" / "b").exists()
    assert (root / "wait" / "a" / "y.json").exists()
    store.delete("wait/a/y.json", if_match=md5_etag(b"y"))
    assert not (root / "wait" / "a").exists()
    assert (root / "wait").is_dir()  # top-level directories stay (cp x s3q-data/wait/)
    store.put("deep/" + "/".join("d" * 20) + "/z", b"z")
    store.delete("deep/" + "/".join("d" * 20) + "/z")
    assert list((root / "deep").iterdir()) == []


def test_put_retries_when_a_delete_removes_its_directory(
    store: LocalStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: the directory vanishes between the store's check and its rename."""
    (root / "wait" / "a" / "b").mkdir(parents=True)
    real_replace = os.replace
    calls: list[str] = []

    def racing_replace(src: Any, dst: Any) -> None:
        if not calls:
            os.rmdir(root / "wait" / "a" / "b")  # what a concurrent delete's cleanup does
            os.rmdir(root / "wait" / "a")
        calls.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", racing_replace)
    store.put("wait/a/b/x", b"x")
    monkeypatch.undo()
    assert len(calls) == 2
    assert store.get("wait/a/b/x")[0] == b"x"


def test_a_write_is_not_undone_by_a_prune_between_its_mkdir_and_its_link(
        store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load, other threads' deletes pruned the directory a write had just created,
    before its link, again and again: the write gave up after 100 tries ("its directory
    keeps disappearing"; CI, test_puts_race_deletes_in_shared_directories). Here a prune
    comes after every directory the write creates, as the worst schedule would have it:
    a directory this process is writing into is not pruned."""
    store.put("wait/x/y/other", b"0")
    store.delete("wait/x/y/other")  # (x/y pruned: the write below creates it again)
    made = localdirs.makedirs

    def made_then_pruned(directory: str) -> None:
        made(directory)
        localdirs.prune(directory, str(store.root))  # another thread's delete, every time

    monkeypatch.setattr(localdirs, "makedirs", made_then_pruned)
    info = store.put("wait/x/y/z/a", b"1", if_none_match=True)
    assert store.get("wait/x/y/z/a")[0] == b"1"
    store.delete("wait/x/y/z/a", if_match=info.etag)  # (its own prune goes through)
    assert not (store.root / "wait" / "x").exists()


def test_puts_race_deletes_in_shared_directories(store: LocalStore) -> None:
    """Stress: threads keep creating and deleting siblings, so directories keep being removed
    and recreated under each other's feet; no write may fail or be lost."""
    errors: list[BaseException] = []
    stop = time.monotonic() + 1.5

    def churn(i: int) -> None:
        key = f"wait/x/y/z/{i}"
        try:
            n = 0
            while time.monotonic() < stop:
                info = store.put(key, b"%d" % n, if_none_match=True)
                assert store.get(key)[0] == b"%d" % n
                store.delete(key, if_match=info.etag)
                n += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all_keys(store) == []


def test_file_and_directory_of_the_same_name(store: LocalStore) -> None:
    """A file system cannot hold both "a" and "a/b" (S3 can): a clear error, not OSError."""
    store.put("f/a", b"file")
    with pytest.raises(StoreError, match="in the way"):
        store.put("f/a/b", b"x")
    store.put("g/a/b", b"x")
    with pytest.raises(StoreError, match="in the way"):
        store.put("g/a", b"x")
    with pytest.raises(NotFound):
        store.get("f/a/b")
    with pytest.raises(NotFound):
        store.head("g/a")
    store.delete("g/a")  # a directory is no object: nothing to delete
    with pytest.raises(NotFound):
        store.delete("g/a", if_match=md5_etag(b"x"))
    assert all_keys(store) == ["f/a", "g/a/b"]


# -- listing -----------------------------------------------------------------------------------


def test_large_directory_listing_pages_in_order(store: LocalStore, root: Path) -> None:
    names = [f"wait/{i:05d}_request.json" for i in range(2500)]
    (root / "wait").mkdir()
    for name in reversed(names):  # the directory's own order is not key order
        drop(root / name, b"{}")
    assert all_keys(store, "wait/") == names  # pages of 1000, each the next smallest keys
    store.put("wait/00000_request.json.new", b"new")  # later changes show on later pages
    store.delete(names[5])
    expected = sorted([*names[:5], *names[6:], "wait/00000_request.json.new"])
    assert all_keys(store, "wait/") == expected


def test_listing_memory_does_not_grow_with_the_directory(store: LocalStore, root: Path) -> None:
    import tracemalloc

    (root / "wait").mkdir()
    peaks: list[int] = []
    for n in (2_000, 20_000):
        for i in range(n - len(list((root / "wait").iterdir()))):
            drop(root / "wait" / f"{len(peaks)}-{i:06d}_request.json", b"")
        tracemalloc.start()
        page = store.list_page("wait/", limit=100)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert len(page.items) == 100 and page.truncated
    assert peaks[1] < 2 * peaks[0], peaks  # 10x the files, not 10x the memory


def test_unlistable_names_skipped(store: LocalStore, root: Path) -> None:
    (root / "wait").mkdir()
    drop(root / "wait" / "new\nline", b"x")
    os.mkfifo(root / "wait" / "fifo")
    drop(root / "wait" / "ok", b"x")
    assert all_keys(store) == ["wait/ok"]


# -- files other programs write, and files nobody may read -------------------------------------


def test_a_request_still_being_copied_in_is_not_claimed(root: Path) -> None:
    """Issue 9: ``cp`` creates the file and writes it a block at a time. A claim between two
    blocks read a partial request, ran the handler on it and deleted the file, and ``cp``
    finished writing into an unlinked inode: the whole request was lost. Now a file is
    claimed only once nobody wrote to it for the settle time."""
    queue = Queue(LocalStore(root))
    body = bytes(range(256)) * 35  # 8,960 bytes: three blocks of cp
    path = root / "wait" / "r_request.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as cp:
        for start in range(0, len(body), 4096):
            cp.write(body[start:start + 4096])
            cp.flush()
            job = queue.claim("w")  # a worker polls between two blocks
            assert job is None, f"claimed after {start + 4096} of {len(body)} bytes"
    deadline = time.monotonic() + 60
    while (job := queue.claim("w")) is None:
        assert time.monotonic() < deadline, "never claimed"
        time.sleep(0.1)
    with job:
        assert job.read() == body
    assert [i.key for i in queue.ls("finish")] == ["r_request.json"]
    assert (root / "finish" / "r_request.json").read_bytes() == body
    queue.close()


def test_files_of_other_programs_are_listed_once_settled(store: LocalStore, root: Path) -> None:
    drop(root / "wait" / "a", b"being written", ago=0)
    store.put("wait/b", b"written by the store")
    LocalStore(root).put("wait/c", b"by another store on the same root (another process)")
    assert all_keys(store) == ["wait/b", "wait/c"]  # the store's own files at once
    assert store.head("wait/a").size == 13  # reads by key are not held back
    then = time.time_ns() - int(store.settle * 1e9) - 10**8
    os.utime(root / "wait" / "a", ns=(then, then))  # nobody wrote to it for the settle time
    assert all_keys(store) == ["wait/a", "wait/b", "wait/c"]
    (root / "wait" / "b").write_bytes(b"rewritten by hand")  # no longer the store's stamp
    assert all_keys(store) == ["wait/a", "wait/c"]


def test_a_page_of_files_being_written_is_skipped_for_the_next(store: LocalStore,
                                                              root: Path) -> None:
    for i in range(5):
        drop(root / "wait" / f"{i}", b"x", ago=0)
    store.put("wait/9", b"x")
    page = store.list_page("wait/", limit=2)
    assert ([i.key for i in page.items], page.truncated) == (["wait/9"], False)


def test_unreadable_entries_are_skipped_and_reported(
        store: LocalStore, root: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 9: one file nobody may read (another user's, umask 077) made the whole listing
    fail, and no request was claimed again. (Simulated, so it also runs as root.)"""
    for name in ("a_request.json", "b_request.json", "c_request.json", "sub/d_request.json"):
        drop(root / "wait" / name, name.encode())
    secret, closed = str(root / "wait" / "b_request.json"), str(root / "wait" / "sub")
    real_open, real_scandir = open, os.scandir

    def guarded_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path) == secret:
            raise PermissionError(errno.EACCES, "Permission denied", secret)
        return real_open(path, *args, **kwargs)

    def guarded_scandir(path: Any) -> Any:
        if str(path).rstrip("/") == closed:
            raise PermissionError(errno.EACCES, "Permission denied", closed)
        return real_scandir(path)

    for module in (local, localetags):  # (reads, and the hashing of listed files)
        monkeypatch.setattr(module, "open", guarded_open, raising=False)
    monkeypatch.setattr(os, "scandir", guarded_scandir)
    with caplog.at_level("WARNING", logger="s3q.backends.local"):
        assert all_keys(store, "wait/") == ["wait/a_request.json", "wait/c_request.json"]
        assert all_keys(store, "wait/") == ["wait/a_request.json", "wait/c_request.json"]
        # each listing names what it left out, for `s3q status` (logged only once)
        assert {str(e) for e in store.list_page("wait/").left_out} == {
            "wait/b_request.json: permission denied", "wait/sub/: permission denied"}
        queue = Queue(store)
        claimed = {job.name for job in (queue.claim("w"), queue.claim("w")) if job}
    assert claimed == {"a_request.json", "c_request.json"}
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2, warned  # each once, however often listed
    assert any(secret in m and "permission denied" in m for m in warned)
    assert any(closed in m and "permission denied" in m for m in warned)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unreadable_file_of_another_user_is_skipped(store: LocalStore, root: Path) -> None:
    drop(root / "wait" / "a", b"a")
    drop(root / "wait" / "b", b"b")
    (root / "wait" / "b").chmod(0o000)
    try:
        assert all_keys(store) == ["wait/a"]
    finally:
        (root / "wait" / "b").chmod(0o600)


# -- OS errors ---------------------------------------------------------------------------------


def test_no_space_left(store: LocalStore, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StoreError, match=r"\.s3qlocal/tmp/.*no space left") as caught:
        store.put("wait/x", b"x")
    assert not isinstance(caught.value, OSError)
    monkeypatch.undo()
    assert list((root / ".s3qlocal" / "tmp").iterdir()) == []
    with pytest.raises(NotFound):
        store.head("wait/x")


def test_io_error_on_fsync(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(StoreError, match="Input/output error"):
        store.put("wait/x", b"x")


def test_permission_error_translated(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Simulated, so it also runs as root.)"""

    def denied(src: Any, dst: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(StoreError, match=r"wait/x: permission denied") as caught:
        store.put("wait/x", b"x")
    assert not isinstance(caught.value, OSError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied(store: LocalStore, root: Path) -> None:
    store.put("ro/x", b"x")
    (root / "ro").chmod(0o500)
    try:
        with pytest.raises(StoreError, match=r"permission denied") as caught:
            store.put("ro/y", b"y")
        assert str(root / "ro") in str(caught.value)
        with pytest.raises(StoreError, match=r"permission denied"):
            store.delete("ro/x")
    finally:
        (root / "ro").chmod(0o700)


def test_name_too_long(store: LocalStore) -> None:
    key = "wait/" + "n" * 300
    with pytest.raises(InvalidKey, match="too long"):
        store.put(key, b"x")
    with pytest.raises(InvalidKey, match="too long"):
        store.get(key)


# -- compare-and-swap across threads and processes ------------------------------------------


def test_cas_across_store_instances_in_threads(root: Path) -> None:
    """Several LocalStore objects in one process (separate lock file descriptions)."""
    LocalStore(root).put("counter", b"0")
    threads = [threading.Thread(target=_increment, args=(str(root), 100)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert LocalStore(root).get("counter")[0] == b"400"


def _increment(root: str, times: int, start: Any = None) -> None:
    """Add 1 to the counter ``times`` times by read-modify-write with If-Match."""
    store = LocalStore(Path(root))
    if start is not None:
        start.wait()
    for _ in range(times):
        while True:
            data, info = store.get("counter")
            try:
                store.put("counter", str(int(data) + 1).encode(), if_match=info.etag)
                break
            except PreconditionFailed:
                continue
    store.close()


@pytest.mark.slow
def test_cas_across_processes(root: Path) -> None:
    LocalStore(root).put("counter", b"0")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_increment, args=(str(root), 200, start)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert LocalStore(root).get("counter")[0] == b"800"
