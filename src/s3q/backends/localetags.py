"""ETags of the local directory store's files (:class:`Etags`): the quoted MD5 of the content,
as on S3, computed by reading the file and cached per process by the file's signature
``(dev, inode, size, mtime_ns, ctime_ns)`` (:func:`~s3q.backends.localfs.signature`). Every
file the store writes is a new inode with a microsecond mtime of its own, so the signature
changes with every write and a cached ETag is never stale."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import threading

from s3q.backends import localfs as fs

__all__ = ["ETAG_CACHE_SIZE", "Etags"]

#: How many ETags the per-process cache keeps (oldest evicted first).
ETAG_CACHE_SIZE = 200_000


class Etags:
    """The per-process ETag cache of one store (thread-safe)."""

    def __init__(self, size: int = ETAG_CACHE_SIZE) -> None:
        self._size = size
        self._etags: dict[tuple[int, ...], str] = {}
        self._lock = threading.Lock()

    def cached(self, st: os.stat_result) -> str | None:
        return self._etags.get(fs.signature(st))

    def remember(self, st: os.stat_result, etag: str) -> str:
        with self._lock:
            if len(self._etags) >= self._size:
                del self._etags[next(iter(self._etags))]
            self._etags[fs.signature(st)] = etag
        return etag

    def of_file(self, f: io.BufferedReader, st: os.stat_result) -> str:
        """The ETag of open file ``f`` (whose fstat is ``st``): cached, or hashed."""
        cached = self.cached(st)
        if cached is not None:
            return cached
        return self.remember(st, fs.etag(hashlib.file_digest(f, fs.md5)))

    def stat_etag(self, path: str) -> tuple[os.stat_result, str] | None:
        """The stat and the ETag of one regular file at ``path``, or None if there is
        none."""
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return None
            etag = self.cached(st)
            if etag is None:
                with open(path, "rb") as f:  # hash what we fstat, even if replaced meanwhile
                    st = os.fstat(f.fileno())
                    etag = self.of_file(f, st)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
                return None
            raise fs.translate(e, "stat", path) from e
        return st, etag
