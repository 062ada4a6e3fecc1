"""A conditional delete on the local store moves the file aside into ``.s3qlocal/tmp``
(``*.del``) and puts it back when it turns out to be a producer's replacement. ``os.rename``
keeps the file's mtime, so a replacement prepared long ago looks old there: a store opening
meanwhile (``remove_stale_temps``) must not take it for a crashed writer's temp file, and
``put_back`` must never lose it in silence.

Real parts: LocalStore (two instances: a worker and a second process opening the store),
real renames. The only hook orders them: the producer's ``mv`` lands between the ETag check
and the move aside, and the other store opens right after the move aside."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from s3q.backends import localfs
from s3q.backends.local import LocalStore
from s3q.store import PreconditionFailed, StoreError


def test_a_replacement_moved_aside_survives_another_store_opening(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "q"
    store = LocalStore(root)
    old = store.put("wait/x_request.json", b"old request")
    prepared = tmp_path / "outbox.json"
    prepared.write_bytes(b"new request, prepared two hours ago")
    two_hours_ago = time.time() - 7200
    os.utime(prepared, (two_hours_ago, two_hours_ago))
    target = root / "wait" / "x_request.json"
    real_take_aside = localfs.take_aside

    def ordered(path: str, tmp_dir: str) -> str | None:
        os.rename(prepared, target)  # the producer's mv lands after the ETag check
        aside = real_take_aside(path, tmp_dir)
        LocalStore(root).close()  # another worker process starts (s3q worker, s3q status)
        return aside

    monkeypatch.setattr(localfs, "take_aside", ordered)
    with pytest.raises(PreconditionFailed):  # e.g. a claim's c2: wait/ holds another request
        store.delete("wait/x_request.json", if_match=old.etag)
    monkeypatch.undo()
    assert target.exists(), "the producer's re-submission is gone"
    assert target.read_bytes() == b"new request, prepared two hours ago"
    assert list((root / ".s3qlocal" / "tmp").iterdir()) == []
    store.close()


def test_put_back_of_a_file_removed_meanwhile_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever removes the file moved aside (an operator cleaning ``.s3qlocal/tmp``), the
    delete that had to put it back fails loudly instead of reporting a refusal that left
    nothing in place."""
    root = tmp_path / "q"
    store = LocalStore(root)
    old = store.put("wait/x_request.json", b"old request")
    real_take_aside = localfs.take_aside

    def swept(path: str, tmp_dir: str) -> str | None:
        replacement = tmp_path / "outbox.json"
        replacement.write_bytes(b"new request")
        os.rename(replacement, path)  # a producer's mv after the ETag check
        aside = real_take_aside(path, tmp_dir)
        assert aside is not None
        os.unlink(aside)  # and something removes it from the tmp directory
        return aside

    monkeypatch.setattr(localfs, "take_aside", swept)
    with pytest.raises(StoreError, match="removed meanwhile") as refused:
        store.delete("wait/x_request.json", if_match=old.etag)
    assert not isinstance(refused.value, PreconditionFailed)
    store.close()


def test_stale_temp_files_go_and_files_moved_aside_stay_and_are_reported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a store removes ``*.tmp`` files nobody wrote to for an hour; a ``*.del``
    file is never removed, however old its mtime, and one whose move aside (its ctime) is an
    hour old is reported as left by an interrupted conditional delete."""
    root = tmp_path / "q"
    LocalStore(root).close()
    tmp = root / ".s3qlocal" / "tmp"
    stale, aside = tmp / "1.dead.tmp", tmp / "2.moved.del"
    stale.write_bytes(b"left by a crash")
    aside.write_bytes(b"a request moved aside")
    old = time.time() - 2 * localfs.STALE_TEMP_SECONDS
    for path in (stale, aside):
        os.utime(path, (old, old))
    with caplog.at_level(logging.WARNING, logger="s3q.backends.local"):
        LocalStore(root).close()
    assert not stale.exists()
    assert aside.read_bytes() == b"a request moved aside"
    assert not [r for r in caplog.records if getattr(r, "event", "") == "local_aside_left"]
    # an hour after its move aside (a ctime cannot be set back: the hour is made shorter)
    monkeypatch.setattr(localfs, "STALE_TEMP_SECONDS", -60.0)
    with caplog.at_level(logging.WARNING, logger="s3q.backends.local"):
        LocalStore(root).close()
    assert aside.read_bytes() == b"a request moved aside"
    reported = [r for r in caplog.records if getattr(r, "event", "") == "local_aside_left"]
    assert [getattr(r, "path", "") for r in reported] == [str(aside)]
