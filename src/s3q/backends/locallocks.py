"""The local store's locks (:mod:`s3q.backends.local`): one per key, across threads and
processes."""

from __future__ import annotations

import fcntl
import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from s3q.backends.localfs import errors

__all__ = ["STRIPES", "StripeLocks"]

#: Number of lock stripes (lock files) keys are hashed onto.
STRIPES = 64


class StripeLocks:
    """Mutual exclusion per key across threads and processes: key → one of
    :data:`STRIPES` lock files, locked with ``flock``, plus a ``threading.Lock`` per stripe
    (``flock`` does not exclude threads sharing one open file description). The stripe is
    chosen by CRC-32 of the key, which (unlike ``hash``) is the same in every process."""

    def __init__(self, directory: str) -> None:
        self._dir = directory
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._mutex = threading.Lock()
        self._threads = [threading.Lock() for _ in range(STRIPES)]
        self._fds: list[int | None] = [None] * STRIPES

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        if os.getpid() != self._pid:
            # a forked child: the inherited descriptors share the parent's locks
            self._reset()
        stripe = zlib.crc32(key.encode("utf-8")) % STRIPES
        with self._threads[stripe]:
            fd = self._fd(stripe)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _fd(self, stripe: int) -> int:
        fd = self._fds[stripe]
        if fd is None:
            path = os.path.join(self._dir, f"{stripe:02d}")
            with errors("open the lock file", path, writing=True):
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            self._fds[stripe] = fd
        return fd

    def close(self) -> None:
        for stripe, fd in enumerate(self._fds):
            if fd is not None and self._pid == os.getpid():
                with self._threads[stripe], suppress(OSError):
                    os.close(fd)
                self._fds[stripe] = None
