"""The local store's "a file another program writes is listed only once settled" protects
the *listing*; a claim must not take a file that is being written either. A producer's
``cp NEW wait/NAME`` over a request that waits there (settled, already listed: the
claimer's page is shared and reused) truncates the same inode and writes it block by block.
A claim whose c0 falls between two blocks reads the partial file; its c2 (``DEL=`` the ETag
of that partial content) must be refused, else ``cp`` writes the rest into an unlinked
inode: the re-submission lost, the handler run on a truncated request. The window is c0..c2,
milliseconds: no pause of the writer is needed.

Real parts: LocalStore, Queue, real file operations of a "cp" (O_TRUNC on the existing
file, then chunked writes). A DelegatingStore only orders them: cp's first block lands right
before the claim's c0 (GET of wait/NAME); its last block after the claim returned."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from s3q.backends.delegating import DelegatingStore
from s3q.backends.local import LocalStore
from s3q.context import QueueConfig
from s3q.queue import Queue
from s3q.store import NotFound, PreconditionFailed

NAME = "x_request.json"
OLD = b'{"old": true}'
NEW = b'{"new": "' + b"n" * 100_000 + b'"}'  # a re-submission of other bytes
FIRST_BLOCK = 32 * 1024


class _Cp:
    """``cp NEW wait/NAME`` onto an existing file: open it O_TRUNC, write block by block."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def start(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC)
        os.write(self.fd, NEW[:FIRST_BLOCK])

    def finish(self) -> None:
        assert self.fd is not None
        os.write(self.fd, NEW[FIRST_BLOCK:])
        os.close(self.fd)


class _Ordering(DelegatingStore):
    def __init__(self, inner: LocalStore, cp: _Cp) -> None:
        super().__init__(inner)
        self.cp: _Cp | None = cp

    def _call(self, op: str, args: dict[str, Any], fn: Any) -> Any:
        if op == "get" and args["key"] == f"wait/{NAME}" and self.cp is not None:
            cp, self.cp = self.cp, None
            cp.start()  # cp's first block lands just before c0
        return fn()


def _settled_long_ago(path: Path) -> None:
    past = time.time() - 60
    os.utime(path, (past, past))


def test_a_cp_resubmission_landing_during_a_claim_is_not_lost(tmp_path: Path) -> None:
    root = tmp_path / "q"
    local = LocalStore(root)
    wait = root / "wait"
    wait.mkdir(parents=True, exist_ok=True)
    target = wait / NAME
    target.write_bytes(OLD)  # a producer's file, settled long ago
    _settled_long_ago(target)
    cp = _Cp(target)
    q = Queue(_Ordering(local, cp), QueueConfig(lease_ttl=30))
    try:
        job = q.claim("w")
        ran = None
        if job is not None:
            ran = job.read()
        cp.finish()  # cp writes its remaining blocks (it never paused for long)
        if job is not None:
            job.complete()
        # every file of the store (a listing would leave out the one cp just wrote)
        everything = {str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*")
                      if f.is_file() and ".s3qlocal" not in f.parts}
        holders = [k for k, v in everything.items() if v == NEW]
        assert ran in (None, OLD, NEW) and (holders or ran == NEW), (
            f"handler ran on {len(ran or b'')} of {len(NEW)} bytes; the full re-submission "
            f"is held by {holders}; the store holds "
            f"{ {k: len(v) for k, v in everything.items()} }")
        assert ran is None, "the claim took a file that was being written"
        assert target.read_bytes() == NEW
        # once cp is done and the file settled, the re-submission is claimed, whole
        _settled_long_ago(target)
        again = q.claim("w")
        assert again is not None and again.read() == NEW
        again.complete()
    finally:
        q.close()


def test_a_conditional_delete_refuses_a_file_being_written_in_wait(tmp_path: Path) -> None:
    """``DEL=e`` of a wait/ file another program wrote to less than ``settle`` ago is
    refused, and the file kept; settled, or outside wait/, it is deleted."""
    root = tmp_path / "q"
    store = LocalStore(root)
    (root / "wait").mkdir(parents=True, exist_ok=True)
    (root / "finish").mkdir(parents=True, exist_ok=True)
    fresh, other = root / "wait" / "a", root / "finish" / "a"
    fresh.write_bytes(b"partial")  # just written, not by this store: no stamp
    other.write_bytes(b"partial")
    etag = store.head("wait/a").etag
    with pytest.raises(PreconditionFailed, match="another program wrote to it"):
        store.delete("wait/a", if_match=etag)
    assert fresh.read_bytes() == b"partial"
    assert list((root / ".s3qlocal" / "tmp").iterdir()) == []
    store.delete("finish/a", if_match=store.head("finish/a").etag)
    assert not other.exists()
    _settled_long_ago(fresh)
    store.delete("wait/a", if_match=etag)
    assert not fresh.exists()
    own = store.put("wait/b", b"written by the store")  # stamped: deleted at once
    store.delete("wait/b", if_match=own.etag)


def test_without_stamps_a_retry_claimed_at_once_does_not_run_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that cannot keep the store's stamp (coarse timestamps): s3q's own
    fresh view in wait/ looks like another program's, so the store refuses nothing for being
    fresh there. A release puts the view in wait/, a claim by name takes it at once (c2
    deletes that view), and once completed the request is not in wait/ to run again."""
    from s3q.backends import localfs

    monkeypatch.setattr(localfs, "stamped", lambda st: False)
    store = LocalStore(tmp_path / "q", settle=60.0)  # its own files: listed after 60 s
    q = Queue(store, QueueConfig(lease_ttl=30))
    try:
        q.submit(NAME, OLD)
        q.offer([NAME])  # (claimed by name: the listing would wait out the settle time)
        job = q.claim("w")
        assert job is not None
        job.release()  # w1: the view in wait/, w2: a retry lease
        q.offer([NAME])
        job = q.claim("w")  # at once, as the scan offers a due retry
        assert job is not None and job.name == NAME and job.attempt == 1
        job.complete()
        assert not (tmp_path / "q" / "wait" / NAME).exists()
        assert q.lease(NAME) is None
    finally:
        q.close()


@pytest.mark.parametrize("exclusive", [True, False], ids=["create", "replace"])
def test_the_stores_own_file_keeps_its_stamp_when_placed_late(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exclusive: bool) -> None:
    """A write stamps its temp file, then links or renames it into place; that changes the
    file's ctime. Placed more than the stamp's 31.4 ms later (directories recreated under a
    concurrent delete, a loaded machine), the ctime passes the stamped atime, and on a
    ``relatime`` mount the next read rewrites the atime: the stamp gone, the store's own
    fresh file in wait/ looked like another program's, and a conditional delete (a claim's
    c2) refused it for 2 s (seen in CI as a flaky churn test)."""
    store = LocalStore(tmp_path / "q")
    real = os.link if exclusive else os.replace

    def late(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.06)  # placed 60 ms after the stamp
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link" if exclusive else "replace", late)
    info = store.put("wait/a_request.json", b"{}", if_none_match=exclusive)
    monkeypatch.undo()
    time.sleep(0.01)
    assert store.get("wait/a_request.json")[0] == b"{}"  # a read: relatime may touch atime
    store.delete("wait/a_request.json", if_match=info.etag)  # no PreconditionFailed
    with pytest.raises(PreconditionFailed):  # (another program's fresh file still is)
        path = tmp_path / "q" / "wait" / "b_request.json"
        path.write_bytes(b"{}")
        store.delete("wait/b_request.json", if_match=store.head("wait/b_request.json").etag)


def test_a_read_during_a_conditional_delete_does_not_refuse_the_stores_own_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim's c2 moves the file aside to check it, which sets its ctime to now. Another
    claim's c0 that opened the file before the move and reads it after (a worker's slots
    race for one candidate) then rewrites its atime on a ``relatime`` mount: the stamp
    gone, c2 found the store's own file "written by another program less than 2 s ago",
    put it back and gave up; a burst then ended with the request waiting (seen in CI as
    test_every_json_output_has_a_schema_and_iso_times failing, about one run in 150)."""
    from s3q.backends import localfs

    store = LocalStore(tmp_path / "q")
    info = store.put(f"wait/{NAME}", OLD, if_none_match=True)
    time.sleep(0.05)  # (past the stamp's 31.4 ms: a read after the move rewrites the atime)
    real = localfs.take_aside

    def read_across_the_move(path: str, tmp_dir: str) -> str | None:
        with open(path, "rb") as reader:  # another slot's c0, opened before the move
            aside = real(path, tmp_dir)
            assert reader.read() == OLD  # ... and read after it
        return aside

    monkeypatch.setattr(localfs, "take_aside", read_across_the_move)
    store.delete(f"wait/{NAME}", if_match=info.etag)  # no PreconditionFailed
    monkeypatch.undo()
    with pytest.raises(NotFound):
        store.head(f"wait/{NAME}")


def test_a_store_opened_on_a_loaded_machine_still_refuses_a_file_being_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a store opens it checks that the file system keeps its stamp: it stamps a probe
    file, reads it, and looks. The probe's ``utime`` landing more than the stamp's 31.4 ms
    after its clock read (a thread descheduled on a loaded machine) set a ctime past the
    stamped atime, the read then rewrote the atime on a ``relatime`` mount, and the store
    concluded, for its whole life, that the file system keeps no stamps: its conditional
    deletes in wait/ then took a file a ``cp`` was still writing."""
    real = os.utime
    late = [True]

    def utime(*args: Any, **kwargs: Any) -> None:
        if late:
            late.pop()
            time.sleep(0.06)  # the probe's stamp placed 60 ms after its clock read
        real(*args, **kwargs)

    monkeypatch.setattr(os, "utime", utime)
    store = LocalStore(tmp_path / "q")
    monkeypatch.undo()
    assert not late
    path = tmp_path / "q" / "wait" / NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(b"partial")  # another program's, just written
    with pytest.raises(PreconditionFailed, match="another program wrote to it"):
        store.delete(f"wait/{NAME}", if_match=store.head(f"wait/{NAME}").etag)
    assert path.read_bytes() == b"partial"
