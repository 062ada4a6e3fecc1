"""The local-directory backend: :class:`LocalStore`, the embedded default store.

An object is a plain file: key ``wait/a/b.json`` is ``<root>/wait/a/b.json``, raw bytes, so
requests can be submitted with ``cp`` and inspected with ``ls``. The store gives the same
atomic guarantees as S3 across threads *and* processes on one machine:

* **Writes are atomic and durable**: the body goes to a temporary file under
  ``<root>/.s3qlocal/tmp`` (flushed and fsynced), which ``os.replace`` then moves onto the
  target; the directory is fsynced too. Readers take no lock and see the old or the new file.
* **Conditional operations are serialized** by a striped lock
  (:class:`~s3q.backends.locallocks.StripeLocks`): every mutation of a key holds its stripe
  while it checks the condition and renames/unlinks. Programs that take no lock (a
  producer's ``cp``/``mv`` into wait/) are met too: a create-if-absent installs with a hard
  link (which fails if the name is taken), and a conditional delete moves the file aside
  and removes it only if it is the one it checked.
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
  nobody wrote to it for that long (a listing names it in :attr:`~s3q.store.Page.settling`,
  so that a burst waits for it). The files this store writes itself are complete when
  they appear (renamed into place) and are listed at once: it stamps them, an mtime in
  whole microseconds and an atime exactly 31.415 ms later
  (:data:`~s3q.backends.localfs.STAMP_DELTA_NS`), which no other writer gives a file by
  chance (where the file system cannot keep those timestamps, its own files too wait
  ``settle`` seconds before they are listed). ``get``/``head`` are not
  held back, but a conditional delete under wait/ (a claim's c2, which takes the request)
  refuses a file that is not settled, so a claim whose read fell between two blocks of a
  ``cp`` over a waiting request (the same inode, truncated and rewritten) gives up instead
  of running part of it (where the file system keeps the stamp, checked when the store
  opens: elsewhere its own fresh views would be refused too, and nothing is). Producers
  should still write elsewhere on the same file system
  and ``mv`` into wait/: a writer that pauses for longer than ``settle`` cannot be told
  from a finished one.
* **Unreadable entries** (another user's file under umask 077, a directory without
  permission) are left out of listings and reported once (a warning naming the path): they
  never make a listing fail.

Keys are validated (:func:`~s3q.store.validate_key`); keys under ``.s3qlocal/`` (the store's
own files) and keys whose path resolves outside the root through a symlink are refused
with :class:`~s3q.store.InvalidKey`. A symlink (absolute or relative) to a file inside the
root is an object with that file's bytes; deleting it removes the link, not its target. A
file system cannot hold both ``a`` and ``a/b``: writing
one while the other exists raises :class:`~s3q.store.StoreError`.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import io
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from s3q.backends import localfs as fs
from s3q.backends import localwalk
from s3q.backends._common import (
    check_conditions,
    check_key,
    check_limit,
    check_prefix,
    etag_of,
)
from s3q.backends.locallocks import StripeLocks
from s3q.capabilities import NATIVE
from s3q.store import (
    Body,
    Guard,
    InvalidKey,
    LeftOut,
    NotFound,
    ObjectInfo,
    Page,
    PreconditionFailed,
    Store,
    StoreError,
    delete_each,
)

__all__ = ["PRODUCED", "SETTLE_SECONDS", "LocalStore"]

log = logging.getLogger(__name__)

#: How many ETags the per-process cache keeps (oldest evicted first).
ETAG_CACHE_SIZE = 200_000
#: A file this store did not write is listed only once nobody wrote to it for this long.
SETTLE_SECONDS = 2.0
#: Where programs that take no lock write (a producer's ``cp``/``mv``): a conditional delete
#: there refuses a file that is not settled, as a listing leaves it out.
PRODUCED = "wait/"


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
        if not create and not fs.holds_a_queue(self._root):  # read-only commands create nothing
            raise NotFound(f"no queue at {self._root}: the directory does not exist or has "
                           "none of wait/, processing/, finish/, failed/, .s3q/")
        internal = os.path.join(self._root, fs.RESERVED)
        self._tmp_dir = os.path.join(internal, "tmp")
        try:
            os.makedirs(self._tmp_dir, exist_ok=True)
            os.makedirs(os.path.join(internal, "locks"), exist_ok=True)
            self._real_root = os.path.realpath(self._root)
        except OSError as e:
            raise fs.translate(e, "open the store at", self._root, writing=True) from e
        self._locks = StripeLocks(os.path.join(internal, "locks"))
        #: Keys live as paths under the root: the OS's path limit bounds them (each segment
        #: is further bounded by the file system's NAME_MAX, checked when written).
        self.max_key_bytes = fs.path_max(self._root) - len(self._root.encode()) - 1
        self._etags: dict[tuple[int, ...], str] = {}
        self._etags_lock = threading.Lock()
        self._unreadable: set[str] = set()  # reported already
        #: Can this store tell its own fresh files from another program's (its stamp)?
        #: If not, its conditional deletes in wait/ cannot refuse a file being written.
        self._keeps_stamps = fs.keeps_stamps(self._tmp_dir)
        for left in fs.remove_stale_temps(self._tmp_dir):
            log.warning("%s: a file a conditional delete moved aside and never removed nor "
                        "put back (the process stopped midway); it may be a request a "
                        "producer re-submitted: look at it, then remove it", left,
                        extra={"event": "local_aside_left", "path": left})

    # -- reads (no locks: os.replace is atomic, an open file keeps its content) ----------

    def get(self, key: str) -> tuple[bytes, ObjectInfo]:
        path = self._path(key)
        with fs.errors("read", path), open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
        etag = self._cached(st) or self._remember(st, etag_of(data))
        return data, fs.info(key, etag, st)

    def open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        path = self._path(key)
        with fs.errors("open", path):
            f = open(path, "rb")  # noqa: SIM115 - the caller closes it
        try:
            with fs.errors("read", path):
                st = os.fstat(f.fileno())
                etag = self._etag_of_file(f, st)
                f.seek(0)
        except BaseException:
            f.close()
            raise
        return f, fs.info(key, etag, st)

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
        module docstring); a page they fill entirely is skipped for the next one. The
        unreadable ones, and files whose names no key can hold, are named in the page's
        ``left_out`` (and logged, once per path and process)."""
        check_prefix(prefix)
        check_limit(limit)
        if start_after is not None:
            check_prefix(start_after)
        left: dict[LeftOut, None] = {}  # (what this page's walks left out, in order, once)
        settling: list[tuple[str, float]] = []  # (files still being written: listed when)

        def report(key: str, e: OSError) -> None:
            left[self._report_unreadable(key, e)] = None
        after = start_after
        while True:
            keys = heapq.nsmallest(limit + 1, localwalk.walk(
                self._root, prefix, after, inside=self._inside, unreadable=report))
            items = [info for key in keys[:limit]
                     if (info := self._listed(key, report, settling))]
            truncated = len(keys) > limit
            if items or not truncated:
                return Page(items, truncated, tuple(left), tuple(settling))
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
        temp = fs.write_temp(self._tmp_dir, body)
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
                return self._install(key, path, temp, exclusive=if_none_match)
        finally:
            fs.discard(temp)

    def copy(self, src: str, dst: str, *, if_source_match: str | None = None,
             if_none_match: bool = False, guard: Guard | None = None) -> ObjectInfo:
        """Copy the bytes of one open ``src`` file into a temp file (hashing them, so the
        ETag checked is the ETag of exactly what was copied), then install it at ``dst``."""
        src_path = self._path(src)
        dst_path = self._path(dst)
        with fs.errors("read", src_path), open(src_path, "rb") as f:
            temp = fs.write_temp(self._tmp_dir, f)
        try:
            if if_source_match is not None and temp.etag != if_source_match:
                raise PreconditionFailed(f"{self.url}/{src}: ETag is not {if_source_match}")
            with self._locks.hold(dst):
                if guard is not None:
                    guard()
                if if_none_match and self._exists(dst_path):
                    raise PreconditionFailed(f"{self.url}/{dst}: exists (if_none_match)")
                return self._install(dst, dst_path, temp, exclusive=if_none_match)
        finally:
            fs.discard(temp)

    def delete(self, key: str, *, if_match: str | None = None,
               guard: Guard | None = None) -> None:
        path = self._path(key)
        with self._locks.hold(key):
            if guard is not None:
                guard()
            if if_match is None or not self._delete_checked(key, path, if_match):
                try:
                    os.unlink(path)
                except OSError as e:
                    missing = e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR) or (
                        e.errno == errno.EPERM and os.path.isdir(path)  # macOS: unlink(dir)
                    )
                    if not missing:
                        raise fs.translate(e, "delete", path, writing=True) from e
                    if if_match is not None:  # vanished under the lock: someone bypassed it
                        raise NotFound(f"{self.url}/{key} not found") from e
                    return
            parent = os.path.dirname(path)
            with fs.errors("delete", path, writing=True):
                fs.fsync_nearest(parent, self._root)
        fs.prune(parent, self._root)

    def delete_batch(self, items: Sequence[tuple[str, str]], *,
                     guard: Guard | None = None) -> list[StoreError | None]:
        # (a delete is a file operation: nothing to save)
        return delete_each(self, items, guard=guard)

    def _delete_checked(self, key: str, path: str, if_match: str) -> bool:
        """(Under the key's lock.) ``DEL=if_match``: check the ETag and remove the file
        that was checked. For a program that takes no lock (a producer's ``mv``
        re-submitting the request) a check and an unlink would be two steps, and a file
        it put there in between would be deleted by a condition naming the one it
        replaced; so the file is moved aside in one step and what was moved is the one
        removed if it is the one checked (else it is put back: PreconditionFailed). Under
        wait/ (:data:`PRODUCED`) the file removed must also be settled (:meth:`_settled`):
        a producer's ``cp`` over a waiting request truncates and rewrites *the same inode*
        with the file open, and the bytes a claim read between two of its blocks have an
        ETag of their own; deleting that file would let ``cp`` finish into an unlinked
        inode (the re-submission lost, the handler run on part of it). Such a file is
        refused (PreconditionFailed) and put back, as a replaced one is; it is claimed
        once it settled. The check is made on the file moved aside, which no program can
        open any more by its name. False when it checked out but cannot be moved aside (a
        key on another file system than the store's tmp directory): the caller unlinks it
        in place."""
        found = self._stat_etag(path)
        if found is None:
            raise NotFound(f"{self.url}/{key} not found (conditional delete)")
        st, current = found
        if current != if_match:
            raise PreconditionFailed(f"{self.url}/{key}: ETag is not {if_match}")
        # where programs that take no lock write (where the file system keeps no stamps,
        # s3q's own fresh views would be refused too: then nothing is)
        written = key.startswith(PRODUCED) and self._keeps_stamps
        if written and not self._settled(st):
            raise PreconditionFailed(self._unsettled(key, st))
        with fs.errors("delete", path, writing=True):
            try:
                aside = fs.take_aside(path, self._tmp_dir)
            except (FileNotFoundError, NotADirectoryError) as e:
                raise NotFound(f"{self.url}/{key} not found") from e  # bypassed the lock
            if aside is None:
                return False
            try:
                seen = fs.moved_file(aside, path)  # (a relative symlink: from where it was)
                moved = os.stat(seen)
                unchanged = fs.same_file(st, moved)
                same = unchanged or (
                    stat.S_ISREG(moved.st_mode) and self._etag_at(key, seen, "moved")
                    == if_match)
            except BaseException:
                fs.put_back(aside, path)
                raise
            if not same:  # replaced between the check and the move
                fs.put_back(aside, path)
                raise PreconditionFailed(f"{self.url}/{key}: ETag is not {if_match}")
            # a writer had it open (cp, O_TRUNC) and wrote between the check and the move
            # (a file unchanged since it was checked settled is settled: the move set its
            # ctime to now, and a read since may have cost it its stamp)
            if written and not unchanged and not self._settled(moved):
                fs.put_back(aside, path)
                raise PreconditionFailed(self._unsettled(key, moved))
            os.unlink(aside)
        return True

    def close(self) -> None:
        self._locks.close()

    def __repr__(self) -> str:
        return f"LocalStore({self._root!r})"

    # -- keys and paths -----------------------------------------------------------------

    def _path(self, key: str) -> str:
        """The file of ``key``, after checking it cannot escape the root."""
        check_key(key)
        if key == fs.RESERVED or key.startswith(fs.RESERVED + "/"):
            raise InvalidKey(f"invalid key {key!r}: {fs.RESERVED}/ is reserved for the store")
        path = os.path.join(self._root, key)
        with fs.errors("resolve", path):
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
        return self._etags.get(fs.signature(st))

    def _remember(self, st: os.stat_result, etag: str) -> str:
        with self._etags_lock:
            if len(self._etags) >= ETAG_CACHE_SIZE:
                del self._etags[next(iter(self._etags))]
            self._etags[fs.signature(st)] = etag
        return etag

    def _etag_of_file(self, f: io.BufferedReader, st: os.stat_result) -> str:
        """The ETag of open file ``f`` (whose fstat is ``st``): cached, or hashed."""
        cached = self._cached(st)
        if cached is not None:
            return cached
        return self._remember(st, fs.etag(hashlib.file_digest(f, fs.md5)))

    def _info_at(self, key: str, path: str) -> ObjectInfo | None:
        """The info of the regular file at ``path``, or None if there is none."""
        found = self._stat_etag(path)
        return None if found is None else fs.info(key, found[1], found[0])

    def _stat_etag(self, path: str) -> tuple[os.stat_result, str] | None:
        """The stat and the ETag of one regular file at ``path``, or None if there is
        none."""
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
            raise fs.translate(e, "stat", path) from e
        return st, etag

    def _listed(self, key: str, report: Callable[[str, OSError], None],
                settling: list[tuple[str, float]]) -> ObjectInfo | None:
        """The info of a key a listing found, or None: deleted since the directory was read,
        not a regular file, still being written by another program (then added to
        ``settling``, with when it will be listed), or unreadable (then told to ``report``,
        by its key)."""
        path = os.path.join(self._root, key)
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return None
            if not self._settled(st):
                settling.append((key, max(st.st_mtime, time.time()) + self.settle))
                return None
            return self._info_at(key, path)
        except StoreError as e:
            if not isinstance(e.__cause__, PermissionError):
                raise
            report(key, e.__cause__)
        except PermissionError as e:
            report(key, e)
        except OSError as e:
            if e.errno == errno.ELOOP:  # a symlink turned into a loop since the walk
                report(key, e)
            elif e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
                raise fs.translate(e, "stat", path) from e
        return None

    def _settled(self, st: os.stat_result) -> bool:
        """Written by this store (its stamp), or left alone for ``settle`` seconds."""
        return fs.stamped(st) or abs(time.time() - st.st_mtime) >= self.settle

    def _unsettled(self, key: str, st: os.stat_result) -> str:
        return (f"{self.url}/{key}: another program wrote to it {time.time() - st.st_mtime:.3f}"
                f" s ago (less than {self.settle} s): not deleted while it may still be "
                "written")

    def _report_unreadable(self, key: str, e: OSError) -> LeftOut:
        """Log what a listing leaves out (once per path), and say what it is."""
        event, why, details, fix = localwalk.left_out(e)
        path = os.path.join(self._root, key)
        if path not in self._unreadable:
            self._unreadable.add(path)
            log.warning("%s: not listed, %s%s: %s", path, why, details, fix,
                        extra={"event": event, "path": path})
        return LeftOut(key, why)

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
            raise fs.translate(e, "stat", path) from e

    # -- writing -------------------------------------------------------------------------

    def _install(self, key: str, path: str, temp: fs.Temp, *,
                 exclusive: bool = False) -> ObjectInfo:
        """(Under the key's lock.) ``temp`` in place at ``path``; its ETag remembered.
        ``exclusive``: only if nothing is there (checked again in the same step)."""
        try:
            st = fs.install(temp, path, lambda: self._conflict(key, path),
                            exclusive=exclusive)
        except fs.Exists:
            raise PreconditionFailed(f"{self.url}/{key}: exists (if_none_match)") from None
        return fs.info(key, self._remember(st, temp.etag), st)

    def _conflict(self, key: str, path: str) -> StoreError:
        return StoreError(
            f"cannot write {self.url}/{key}: {path} or one of its parent directories is in"
            " the way (a local store cannot hold both 'a' and 'a/b')"
        )

