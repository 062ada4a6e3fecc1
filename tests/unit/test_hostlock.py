"""The host lock of a worker id (s3q.hostlock): held by ``s3q worker`` and by
``s3q recover --mine``, seen by another user's process too."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from s3q.errors import ConfigError
from s3q.hostlock import HostLockHeld, one_per_host


def test_a_held_lock_is_seen_through_a_lock_file_this_user_cannot_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3Q_LOCK_DIR", str(tmp_path))
    real_open = os.open

    def no_write(path: Any, flags: int, *args: Any) -> int:
        if flags & (os.O_RDWR | os.O_WRONLY):  # the unit's file, to an operator's shell
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    with one_per_host("w1", "file:///q"):
        monkeypatch.setattr(os, "open", no_write)
        with (pytest.raises(HostLockHeld, match="another worker with id 'w1'") as held,
              one_per_host("w1", "file:///q")):
            pass
        assert held.value.path.parent == tmp_path and held.value.worker_id == "w1"
        monkeypatch.setattr(os, "open", real_open)
    monkeypatch.setattr(os, "open", no_write)
    with one_per_host("w1", "file:///q"):  # free again: taken read-only
        pass


def test_a_lock_directory_that_cannot_be_used_is_one_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3Q_LOCK_DIR", str(tmp_path / "missing"))
    with (pytest.raises(ConfigError, match=r"cannot open the lock file .*S3Q_LOCK_DIR"),
          one_per_host("w1", "file:///q")):
        pass


def test_a_shell_without_s3q_lock_dir_sees_the_units_lock_in_its_runtime_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit sets S3Q_LOCK_DIR=/run/s3q (its /tmp is private); an operator's shell does
    not set it: where the runtime directory exists, both lock there."""
    from s3q import hostlock

    run = tmp_path / "run-s3q"
    run.mkdir()
    monkeypatch.setattr(hostlock, "RUN_DIR", str(run))
    monkeypatch.setenv("S3Q_LOCK_DIR", str(run))  # the unit's worker
    with one_per_host("host-1", "s3://b/q"):
        monkeypatch.delenv("S3Q_LOCK_DIR")  # the operator's shell
        with (pytest.raises(HostLockHeld) as held, one_per_host("host-1", "s3://b/q")):
            pass
        assert held.value.path.parent == run
    monkeypatch.setattr(hostlock, "RUN_DIR", str(tmp_path / "absent"))
    assert run not in hostlock.lock_dirs()  # no runtime directory: the temporary one


def test_another_users_id_without_a_lock_file_in_the_runtime_directory_locks_in_tmp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/run/s3q belongs to the unit's user (0755): another user can open the lock file of
    an id the unit ran (read-only), but cannot make one for another id or queue there; that
    lock is taken in the temporary directory instead of failing."""
    from s3q import hostlock

    run, tmp = tmp_path / "run-s3q", tmp_path / "tmp"
    run.mkdir()
    tmp.mkdir()
    monkeypatch.setattr(hostlock, "RUN_DIR", str(run))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp))
    monkeypatch.delenv("S3Q_LOCK_DIR", raising=False)
    with one_per_host("unit-id", "s3://b/q"):  # the unit's lock file, made by its user
        pass
    real_open = os.open

    def not_the_owner(path: Any, flags: int, *args: Any) -> int:
        if str(path).startswith(str(run)) and flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", not_the_owner)
    with one_per_host("other-id", "s3://b/q"):
        assert [p.parent for p in tmp.iterdir()] == [tmp]  # taken in the temporary dir
    with one_per_host("unit-id", "s3://b/q"):  # the unit's file there: read-only
        assert len(list(tmp.iterdir())) == 1  # (other-id's): none made for unit-id
        with pytest.raises(HostLockHeld) as held, one_per_host("unit-id", "s3://b/q"):
            pass
        assert held.value.path.parent == run
    assert len(list(run.iterdir())) == 1
