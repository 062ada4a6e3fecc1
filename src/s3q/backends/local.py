"""The local-directory backend: :class:`LocalStore`, the embedded default store.

An object is a plain file: key ``wait/a/b.json`` is ``<root>/wait/a/b.json``, raw bytes, so
requests can be submitted with ``cp`` and inspected with ``ls``. The store gives the same
atomic guarantees as S3 across threads *and* processes on one machine:

* **Writes are atomic and durable**: the body goes to a temporary file under
  ``<root>/.s3qlocal/tmp`` (flushed and fsynced), which ``os.replace`` then moves onto the
  target; the directory is fsynced too. Readers take no lock and see the old or the new file.
* **Conditional operations are serialized** by a striped lock (:class:`_StripeLocks`): every
  mutation of a key holds its stripe while it checks the condition and renames/unlinks.
* **ETags** are the quoted MD5 of the content, as on S3 (single part) and in
  :class:`~s3q.backends.memory.MemoryStore`, so a copy keeps its ETag and files dropped in by
  hand get the ETag S3 would give them. They are computed by reading the file and cached
  per process by ``(dev, inode, size, mtime_ns, ctime_ns)``; every file this store writes is
  a new inode with a microsecond mtime of its own, so the signature changes with every write.
* **Time**: ``last_modified`` is the file's mtime and ``now()`` is ``time.time()``; this
  machine's clock is the store's clock.
* **Files other programs write are listed once they are complete**: a ``cp`` into wait/
  creates the file and then writes it block by block, and a claim that read it midway
  would run the handler on part of the request and delete the file under ``cp`` (which then
  writes into an unlinked inode: the request is gone). So a file is listed only once its
  mtime is at least ``settle`` seconds (:data:`SETTLE_SECONDS`) away from the current time:
  nobody wrote to it for that long. The files this store writes itself are complete when
  they appear (renamed into place) and are listed at once: it stamps them, an mtime in
  whole microseconds and an atime exactly :data:`STAMP_DELTA_NS` later, which no other
  writer gives a file by chance (where the file system cannot keep those timestamps, its
  own files too wait ``settle`` seconds before they are listed). ``get``/``head`` are not
  held back. Producers should still write elsewhere on the same file system and ``mv``
  into wait/: a writer that pauses for longer than ``settle`` cannot be told from a
  finished one.
* **Unreadable entries** (another user's file under umask 077, a directory without
  permission) are left out of listings and reported once (a warning naming the path): they
  never make a listing fail.

Keys are validated (:func:`~s3q.store.validate_key`); keys under ``.s3qlocal/`` (the store's
own files) and keys whose path resolves outside the root through a symlink are refused
with :class:`~s3q.store.InvalidKey`. A file system cannot hold both ``a`` and ``a/b``: writing
one while the other exists raises :class:`~s3q.store.StoreError`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import heapq
import io
import logging
import os
import stat
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, NamedTuple

from s3q.backends._common import (
    check_conditions,
    check_key,
    check_limit,
    check_prefix,
    etag_of,
)
from s3q.capabilities import NATIVE
from s3q.store import (
    Body,
    Guard,
    InvalidKey,
    NotFound,
    ObjectInfo,
    Page,
    PreconditionFailed,
    Store,
    StoreError,
)

__all__ = ["SETTLE_SECONDS", "LocalStore"]

log = logging.getLogger(__name__)

#: The store's own directory under the root (temp and lock files); never a key.
RESERVED = ".s3qlocal"
#: Number of lock stripes (lock files) keys are hashed onto.
STRIPES = 64
#: Read/write chunk size when streaming bodies.
CHUNK = 1024**2
#: How many ETags the per-process cache keeps (oldest evicted first).
ETAG_CACHE_SIZE = 200_000
#: How often a write retries when a concurrent delete removes the directory it writes into.
INSTALL_ATTEMPTS = 100
#: Temp files older than this (left by crashed writers) are removed when a store opens.
STALE_TEMP_SECONDS = 3600.0
#: A file this store did not write is listed only once nobody wrote to it for this long.
SETTLE_SECONDS = 2.0
#: The files this store installs have an mtime in whole microseconds and an atime exactly
#: this much later (31.415 ms, whole microseconds too, so that µs timestamps keep it).
STAMP_DELTA_NS = 31_415_000


class _Temp(NamedTuple):
    """A fully written, fsynced temporary file, not yet in place."""

    path: str
    fd: int
    etag: str


class LocalStore(Store):
    """A :class:`~s3q.store.Store` on a directory tree (see the module docstring)."""

    capabilities = NATIVE
    max_key_bytes: int = 0  # set per instance (the root path counts)

    def __init__(self, root: Path | str, *, create: bool = True,
                 settle: float = SETTLE_SECONDS) -> None:
        self.root = Path(os.path.abspath(root))
        #: Seconds a file another program wrote must be left alone before it is listed.
        self.settle = settle
        self.url = "file://" + str(self.root)
        self._root = str(self.root)
        if not create and not _holds_a_queue(self._root):  # read-only commands create nothing
            raise NotFound(f"no queue at {self._root}: the directory does not exist or has "
                           "none of wait/, processing/, finish/, failed/, .s3q/")
        internal = os.path.join(self._root, RESERVED)
        self._tmp_dir = os.path.join(internal, "tmp")
        try:
            os.makedirs(self._tmp_dir, exist_ok=True)
            os.makedirs(os.path.join(internal, "locks"), exist_ok=True)
            self._real_root = os.path.realpath(self._root)
        except OSError as e:
            raise _translate(e, "open the store at", self._root, writing=True) from e
        self._locks = _StripeLocks(os.path.join(internal, "locks"))
        #: Keys live as paths under the root: the OS's path limit bounds them (each segment
        #: is further bounded by the file system's NAME_MAX, checked when written).
        self.max_key_bytes = _path_max(self._root) - len(self._root.encode()) - 1
        self._etags: dict[tuple[int, ...], str] = {}
        self._etags_lock = threading.Lock()
        self._unreadable: set[str] = set()  # reported already
        self._remove_stale_temps()

    # -- reads (no locks: os.replace is atomic, an open file keeps its content) ----------

    def get(self, key: str) -> tuple[bytes, ObjectInfo]:
        path = self._path(key)
        with _errors("read", path), open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
        etag = self._cached(st) or self._remember(st, etag_of(data))
        return data, _info(key, etag, st)

    def open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        path = self._path(key)
        with _errors("open", path):
            f = open(path, "rb")  # noqa: SIM115 - the caller closes it
        try:
            with _errors("read", path):
                st = os.fstat(f.fileno())
                etag = self._etag_of_file(f, st)
                f.seek(0)
        except BaseException:
            f.close()
            raise
        return f, _info(key, etag, st)

    def head(self, key: str) -> ObjectInfo:
        info = self._info_at(key, self._path(key))
        if info is None:
            raise NotFound(f"{self.url}/{key} not found")
        return info

    def list_page(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> Page:
        """The ``limit`` smallest keys under ``prefix`` after ``start_after``, chosen with a
        bounded heap while walking the tree unsorted: memory stays O(limit) however many
        files wait (no directory is read into a list); then stat and ETag only those. Files
        still being written by another program, and unreadable ones, are left out (see the
        module docstring); a page they fill entirely is skipped for the next one."""
        check_prefix(prefix)
        check_limit(limit)
        if start_after is not None:
            check_prefix(start_after)
        after = start_after
        while True:
            keys = heapq.nsmallest(limit + 1, self._walk(prefix, after))
            items = [info for key in keys[:limit] if (info := self._listed(key)) is not None]
            truncated = len(keys) > limit
            if items or not truncated:
                return Page(items, truncated)
            after = keys[limit - 1]

    def now(self) -> float:
        return time.time()

    # -- writes (each holds the key's stripe lock while it checks and renames) -----------

    def put(
        self,
        key: str,
        body: Body,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        guard: Guard | None = None,
    ) -> ObjectInfo:
        check_conditions(if_none_match, if_match)
        path = self._path(key)
        temp = self._write_temp(body)
        try:
            with self._locks.hold(key):
                if guard is not None:
                    guard()
                if if_none_match and self._exists(path):
                    raise PreconditionFailed(f"{self.url}/{key}: exists (if_none_match)")
                if if_match is not None:
                    current = self._etag_at(key, path, "if_match")
                    if current != if_match:
                        raise PreconditionFailed(f"{self.url}/{key}: ETag is not {if_match}")
                return self._install(key, path, temp)
        finally:
            self._discard(temp)

    def copy(self, src: str, dst: str, *, if_source_match: str | None = None,
             if_none_match: bool = False, guard: Guard | None = None) -> ObjectInfo:
        """Copy the bytes of one open ``src`` file into a temp file (hashing them, so the
        ETag checked is the ETag of exactly what was copied), then install it at ``dst``."""
        src_path = self._path(src)
        dst_path = self._path(dst)
        with _errors("read", src_path), open(src_path, "rb") as f:
            temp = self._write_temp(f)
        try:
            if if_source_match is not None and temp.etag != if_source_match:
                raise PreconditionFailed(f"{self.url}/{src}: ETag is not {if_source_match}")
            with self._locks.hold(dst):
                if guard is not None:
                    guard()
                if if_none_match and self._exists(dst_path):
                    raise PreconditionFailed(f"{self.url}/{dst}: exists (if_none_match)")
                return self._install(dst, dst_path, temp)
        finally:
            self._discard(temp)

    def delete(self, key: str, *, if_match: str | None = None,
               guard: Guard | None = None) -> None:
        path = self._path(key)
        with self._locks.hold(key):
            if guard is not None:
                guard()
            if if_match is not None:
                current = self._etag_at(key, path, "conditional delete")
                if current != if_match:
                    raise PreconditionFailed(f"{self.url}/{key}: ETag is not {if_match}")
            try:
                os.unlink(path)
            except OSError as e:
                missing = e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR) or (
                    e.errno == errno.EPERM and os.path.isdir(path)  # macOS: unlink(dir)
                )
                if not missing:
                    raise _translate(e, "delete", path, writing=True) from e
                if if_match is not None:  # vanished under the lock: someone bypassed it
                    raise NotFound(f"{self.url}/{key} not found") from e
                return
            parent = os.path.dirname(path)
            with _errors("delete", path, writing=True):
                self._fsync_nearest(parent)
        self._prune(parent)

    def close(self) -> None:
        self._locks.close()

    def __repr__(self) -> str:
        return f"LocalStore({self._root!r})"

    # -- keys and paths -----------------------------------------------------------------

    def _path(self, key: str) -> str:
        """The file of ``key``, after checking it cannot escape the root."""
        check_key(key)
        if key == RESERVED or key.startswith(RESERVED + "/"):
            raise InvalidKey(f"invalid key {key!r}: {RESERVED}/ is reserved for the store")
        path = os.path.join(self._root, key)
        with _errors("resolve", path):
            real = os.path.realpath(path)
        if real != path and not real.startswith(self._real_root + os.sep):
            raise InvalidKey(
                f"invalid key {key!r}: {path} resolves to {real}, outside the store root"
                f" {self._real_root} (a symlink?)"
            )
        return path

    def _inside(self, path: str) -> bool:
        return os.path.realpath(path).startswith(self._real_root + os.sep)

    # -- ETags ---------------------------------------------------------------------------

    def _cached(self, st: os.stat_result) -> str | None:
        return self._etags.get(_signature(st))

    def _remember(self, st: os.stat_result, etag: str) -> str:
        with self._etags_lock:
            if len(self._etags) >= ETAG_CACHE_SIZE:
                del self._etags[next(iter(self._etags))]
            self._etags[_signature(st)] = etag
        return etag

    def _etag_of_file(self, f: io.BufferedReader, st: os.stat_result) -> str:
        """The ETag of open file ``f`` (whose fstat is ``st``): cached, or hashed."""
        cached = self._cached(st)
        if cached is not None:
            return cached
        return self._remember(st, _etag(hashlib.file_digest(f, _md5)))

    def _info_at(self, key: str, path: str) -> ObjectInfo | None:
        """The info of the regular file at ``path``, or None if there is none."""
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return None
            etag = self._cached(st)
            if etag is None:
                with open(path, "rb") as f:  # hash what we fstat, even if replaced meanwhile
                    st = os.fstat(f.fileno())
                    etag = self._etag_of_file(f, st)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
                return None
            raise _translate(e, "stat", path) from e
        return _info(key, etag, st)

    def _listed(self, key: str) -> ObjectInfo | None:
        """The info of a key a listing found, or None: deleted since the directory was read,
        not a regular file, still being written by another program, or unreadable."""
        path = os.path.join(self._root, key)
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode) or not self._settled(st):
                return None
            return self._info_at(key, path)
        except StoreError as e:
            if not isinstance(e.__cause__, PermissionError):
                raise
            self._report_unreadable(path, e.__cause__)
        except PermissionError as e:
            self._report_unreadable(path, e)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
                raise _translate(e, "stat", path) from e
        return None

    def _settled(self, st: os.stat_result) -> bool:
        """Written by this store (its stamp), or left alone for ``settle`` seconds."""
        if st.st_atime_ns - st.st_mtime_ns == STAMP_DELTA_NS and st.st_mtime_ns % 1000 == 0:
            return True
        return abs(time.time() - st.st_mtime) >= self.settle

    def _report_unreadable(self, path: str, e: OSError) -> None:
        if path not in self._unreadable:
            self._unreadable.add(path)
            log.warning("%s: not listed, permission denied (%s): make it readable by this "
                        "worker's user", path, e.strerror,
                        extra={"event": "unreadable", "path": path})

    def _etag_at(self, key: str, path: str, why: str) -> str:
        """The current ETag of ``key`` (under its lock), or NotFound."""
        info = self._info_at(key, path)
        if info is None:
            raise NotFound(f"{self.url}/{key} not found ({why})")
        return info.etag

    def _exists(self, path: str) -> bool:
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return False
            raise _translate(e, "stat", path) from e

    # -- writing -------------------------------------------------------------------------

    def _write_temp(self, body: Body) -> _Temp:
        """Write ``body`` to a new fsynced temp file, hashing it on the way."""
        path = os.path.join(self._tmp_dir, f"{os.getpid()}.{uuid.uuid4().hex}.tmp")
        with _errors("create a temporary file", path, writing=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        temp = _Temp(path, fd, "")
        try:
            digest = _md5()
            with _errors("write", path, writing=True):
                if isinstance(body, bytes | bytearray | memoryview):
                    digest.update(body)
                    _write_all(fd, memoryview(body))
                else:
                    while chunk := body.read(CHUNK):
                        digest.update(chunk)
                        _write_all(fd, memoryview(chunk))
                os.fsync(fd)
        except BaseException:
            self._discard(temp)
            raise
        return temp._replace(etag=_etag(digest))

    def _install(self, key: str, path: str, temp: _Temp) -> ObjectInfo:
        """(Under the key's lock.) Stamp ``temp`` with the current time, move it onto
        ``path`` (creating directories; retrying if a concurrent delete removes one) and
        fsync the directory."""
        parent = os.path.dirname(path)
        with _errors("write", path, writing=True):
            mtime = time.time_ns() // 1000 * 1000  # whole µs: see STAMP_DELTA_NS
            os.utime(temp.fd, ns=(mtime + STAMP_DELTA_NS, mtime))
            for _ in range(INSTALL_ATTEMPTS):
                try:
                    os.replace(temp.path, path)
                    break
                except FileNotFoundError:
                    pass  # the directory is missing: create it below
                except (IsADirectoryError, NotADirectoryError) as e:
                    raise self._conflict(key, path) from e
                try:
                    self._makedirs(parent)
                except FileNotFoundError:
                    continue  # a concurrent delete removed an ancestor meanwhile: again
                except (NotADirectoryError, FileExistsError) as e:
                    raise self._conflict(key, path) from e
            else:
                raise StoreError(f"cannot write {path}: its directory keeps disappearing")
            _fsync_dir(parent)
            st = os.fstat(temp.fd)
        return _info(key, self._remember(st, temp.etag), st)

    def _makedirs(self, directory: str) -> None:
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
                if os.path.isdir(d):
                    continue  # made by a concurrent writer
                if os.path.lexists(d):
                    raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", d) from None
                raise FileNotFoundError(errno.ENOENT, "vanished while created", d) from None
            _fsync_dir(os.path.dirname(d))

    def _conflict(self, key: str, path: str) -> StoreError:
        return StoreError(
            f"cannot write {self.url}/{key}: {path} or one of its parent directories is in"
            " the way (a local store cannot hold both 'a' and 'a/b')"
        )

    def _discard(self, temp: _Temp) -> None:
        with suppress(OSError):
            os.close(temp.fd)
        with suppress(OSError):
            os.unlink(temp.path)

    def _fsync_nearest(self, directory: str) -> None:
        """fsync ``directory``, or, when a concurrent delete already removed it, the nearest
        ancestor that still exists (where the removal is recorded)."""
        while True:
            try:
                _fsync_dir(directory)
                return
            except FileNotFoundError:
                if len(directory) <= len(self._root):
                    raise
                directory = os.path.dirname(directory)

    def _prune(self, directory: str) -> None:
        """Remove now-empty directories from ``directory`` up, best effort. The top-level
        directories (``wait/``, ``finish/``, …) stay, so ``cp x s3q-data/wait/`` works."""
        while os.path.dirname(directory) != self._root and len(directory) > len(self._root):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    def _remove_stale_temps(self) -> None:
        """Delete temp files that crashed writers left behind (best effort)."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        with suppress(OSError), os.scandir(self._tmp_dir) as entries:
            for entry in entries:
                with suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)

    # -- listing -------------------------------------------------------------------------

    def _walk(self, prefix: str, after: str | None) -> Iterator[str]:
        """Valid keys starting with ``prefix`` and greater than ``after``, in no order."""
        base, _, stem = prefix.rpartition("/")
        if base.split("/", 1)[0] == RESERVED:
            return
        base = base + "/" if base else ""
        if base and not self._inside(os.path.join(self._root, base)):
            return
        for key in self._walk_dir(base, stem, after):
            try:
                check_key(key)
            except InvalidKey:  # e.g. a file name with a newline, or not UTF-8
                continue
            yield key

    def _walk_dir(self, base: str, stem: str, after: str | None) -> Iterator[str]:
        """Keys in directory ``base`` ("" or ending in "/") whose name after ``base`` starts
        with ``stem`` and that are greater than ``after``. Subtrees wholly before ``after``
        are skipped without being read."""
        if after is not None and not after.startswith(base):
            if after > base:
                return  # every key here starts with base, so is below after
            after = None
        for name in self._entries(base):
            if not name.startswith(stem):
                continue
            key = base + name
            if name.endswith("/"):
                yield from self._walk_dir(key, "", after)
            elif after is None or key > after:
                yield key

    def _entries(self, base: str) -> Iterator[str]:
        """Entry names of directory ``base``, directories with a trailing "/", read
        lazily. Symlinks to directories are not followed; symlinks to files inside the root
        are listed."""
        path = os.path.join(self._root, base)
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        if base or entry.name != RESERVED:
                            yield entry.name + "/"
                    elif entry.is_file(follow_symlinks=False) or (
                        entry.is_symlink() and entry.is_file() and self._inside(entry.path)
                    ):
                        yield entry.name
        except PermissionError as e:
            self._report_unreadable(path, e)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return
            raise _translate(e, "list", path) from e


class _StripeLocks:
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
            with _errors("open the lock file", path, writing=True):
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            self._fds[stripe] = fd
        return fd

    def close(self) -> None:
        for stripe, fd in enumerate(self._fds):
            if fd is not None and self._pid == os.getpid():
                with self._threads[stripe], suppress(OSError):
                    os.close(fd)
                self._fds[stripe] = None


# -- helpers --------------------------------------------------------------------------------


def _path_max(root: str) -> int:
    try:
        return os.pathconf(root, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096


def _holds_a_queue(root: str) -> bool:
    """Is ``root`` a directory that a queue has used (or that requests were put into)?"""
    return any(os.path.isdir(os.path.join(root, d)) for d in
               ("wait", "processing", "finish", "failed", ".s3q", RESERVED))


def _md5() -> hashlib._Hash:
    return hashlib.md5(usedforsecurity=False)


def _etag(digest: hashlib._Hash) -> str:
    return '"' + digest.hexdigest() + '"'


def _signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _info(key: str, etag: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(key, etag, st.st_size, st.st_mtime)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _errors(doing: str, path: str, *, writing: bool = False) -> Iterator[None]:
    """Translate ``OSError`` into the store's errors (see :func:`_translate`)."""
    try:
        yield
    except OSError as e:
        raise _translate(e, doing, path, writing=writing) from e


def _translate(e: OSError, doing: str, path: str, *, writing: bool = False) -> StoreError:
    """One ``OSError`` as a store error naming the path. Missing files (or a directory where
    a file was expected) on reads are :class:`NotFound`."""
    code = e.errno
    if not writing and code in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
        return NotFound(f"file://{path} not found")
    if code == errno.ENAMETOOLONG:
        return InvalidKey(f"cannot {doing} {path}: file name too long for this file system")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"cannot {doing} {path}: no space left on the device (or quota)")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"cannot {doing} {path}: permission denied ({e.strerror})")
    return StoreError(f"cannot {doing} {path}: {e.strerror or e} (errno {code})")
