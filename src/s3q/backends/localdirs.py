"""The local store's directories (:mod:`s3q.backends.local`): created with their missing
ancestors (:func:`makedirs`), fsynced, and pruned once empty (:func:`prune`), under
concurrent deletes.

The directories that this process is writing a file into (an install or a put-back under
way) are :data:`FILLING`: a prune (the delete of a directory's last file removes the directory)
leaves them, and their ancestors, alone. Under load, the deletes of other threads pruned the
directory a write had just created, before its link, again and again, until the write gave
up ("its directory keeps disappearing")."""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FILLING", "Filling", "fsync_dir", "fsync_nearest", "makedirs", "prune"]


class Filling:
    """Directories being written into, with how many writes: one per process."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """(Also in a forked child: another thread may have held the lock at the fork.)"""
        self._lock = threading.Lock()
        self._dirs: dict[str, int] = {}

    @contextmanager
    def into(self, directory: str) -> Iterator[None]:
        """A write into ``directory`` is under way while the block runs."""
        with self._lock:
            self._dirs[directory] = self._dirs.get(directory, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                if self._dirs[directory] > 1:
                    self._dirs[directory] -= 1
                else:
                    del self._dirs[directory]

    @contextmanager
    def idle(self, directory: str) -> Iterator[bool]:
        """Whether no write is under way in ``directory`` or below it; none starts while
        the block runs (the block removes the directory when it is idle)."""
        inside = directory + os.sep
        with self._lock:
            yield not any(d == directory or d.startswith(inside) for d in self._dirs)


FILLING = Filling()
os.register_at_fork(after_in_child=FILLING.reset)


def makedirs(directory: str) -> None:
    """Create ``directory`` and missing ancestors, fsyncing each new entry's parent.
    Raises ``FileNotFoundError`` when a concurrent delete removes a directory meanwhile
    (the caller retries), ``NotADirectoryError`` when a file is in the way."""
    missing: list[str] = []
    d = directory
    while not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            try:  # one look (two, isdir then lexists, race a pruning writer: rmdir, mkdir)
                found = os.stat(d)
            except (FileNotFoundError, NotADirectoryError):
                raise FileNotFoundError(errno.ENOENT, "vanished while created", d) from None
            if stat.S_ISDIR(found.st_mode):
                continue  # made by a concurrent writer
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", d) from None
        fsync_dir(os.path.dirname(d))


def fsync_nearest(directory: str, root: str) -> None:
    """fsync ``directory``, or, when a concurrent delete already removed it, the nearest
    ancestor that still exists (where the removal is recorded)."""
    while True:
        try:
            fsync_dir(directory)
            return
        except FileNotFoundError:
            if len(directory) <= len(root):
                raise
            directory = os.path.dirname(directory)


def prune(directory: str, root: str) -> None:
    """Remove now-empty directories from ``directory`` up, best effort. The top-level
    directories (``wait/``, ``finish/``, …) stay, so ``cp x s3q-data/wait/`` works; so do
    those this process is writing a file into (and their ancestors)."""
    while os.path.dirname(directory) != root and len(directory) > len(root):
        with FILLING.idle(directory) as idle:
            if not idle:
                return
            try:
                os.rmdir(directory)
            except OSError:
                return
        directory = os.path.dirname(directory)


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
