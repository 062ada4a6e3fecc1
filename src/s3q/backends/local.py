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
  hand get the ETag S3 would give them (cached per process: :mod:`s3q.backends.localetags`).
* **Time**: ``last_modified`` is the file's mtime and ``now()`` is ``time.time()``; this
  machine's clock is the store's clock.
* **Files other programs write are listed once they are complete** (docs/OPERATIONS.md, "The
  local directory store"): a ``cp`` into wait/ creates the file, then writes it block by
  block, and a claim that read it midway would run the handler on part of the request. So
  such a file is listed only once nobody wrote to it for ``settle`` seconds
  (:data:`SETTLE_SECONDS`; a listing names it in :attr:`~s3q.store.Page.settling`, so that
  a burst waits for it), and a conditional delete under wait/ (a claim's c2) refuses it
  until then (:meth:`LocalStore._delete_checked`). This store's own files are complete
  when they appear (renamed into place) and are listed at once: it stamps them
  (:func:`~s3q.backends.localfs.stamped`), where the file system keeps the stamp (checked
  when the store opens). A writer that pauses for longer than ``settle`` cannot be told
  from a finished one: producers should write elsewhere and ``mv`` into wait/.
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
import logging
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from s3q.backends import localdirs as dirs
from s3q.backends import localfs as fs
from s3q.backends._common import (
    check_conditions,
    check_key,
    check_limit,
    check_prefix,
    etag_of,
)
from s3q.backends.localetags import Etags
from s3q.backends.locallist import Lister
from s3q.backends.locallocks import StripeLocks
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
    delete_each,
)

__all__ = ["PRODUCED", "SETTLE_SECONDS", "LocalStore"]

log = logging.getLogger(__name__)

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
        if out := fs.linked_out(self._root, self._real_root):
            raise StoreError(
                f"{'; '.join(out)}: a symbolic link leading out of the store's root, which "
                "it never reads through (no key may lead out of it): nothing under it would "
                "ever be listed or claimed. Move that directory into the root, or choose a "
                "root that holds its target (the link may then stay)")
        self._locks = StripeLocks(os.path.join(internal, "locks"))
        #: Keys live as paths under the root: the OS's path limit bounds them (each segment
        #: is further bounded by the file system's NAME_MAX, checked when written).
        self.max_key_bytes = fs.path_max(self._root) - len(self._root.encode()) - 1
        self._etags = Etags()
        self._lister = Lister(self._root, inside=self._inside, info_at=self._info_at,
                              settles=self._settles)
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
        etag = self._etags.cached(st) or self._etags.remember(st, etag_of(data))
        return data, fs.info(key, etag, st)

    def open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        path = self._path(key)
        with fs.errors("open", path):
            f = open(path, "rb")  # noqa: SIM115 - the caller closes it
        try:
            with fs.errors("read", path):
                st = os.fstat(f.fileno())
                etag = self._etags.of_file(f, st)
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
        return self._lister.page(prefix, start_after, limit)

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
                dirs.fsync_nearest(parent, self._root)
        dirs.prune(parent, self._root)

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
        found = self._etags.stat_etag(path)
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

    def _info_at(self, key: str, path: str) -> ObjectInfo | None:
        """The info of the regular file at ``path``, or None if there is none."""
        found = self._etags.stat_etag(path)
        return None if found is None else fs.info(key, found[1], found[0])

    def _settled(self, st: os.stat_result) -> bool:
        """Written by this store (its stamp), or left alone for ``settle`` seconds."""
        return fs.stamped(st) or abs(time.time() - st.st_mtime) >= self.settle

    def _settles(self, st: os.stat_result) -> float | None:
        """None if settled, else when it will be (the listings name it meanwhile)."""
        return None if self._settled(st) else max(st.st_mtime, time.time()) + self.settle

    def _unsettled(self, key: str, st: os.stat_result) -> str:
        return (f"{self.url}/{key}: another program wrote to it {time.time() - st.st_mtime:.3f}"
                f" s ago (less than {self.settle} s): not deleted while it may still be "
                "written")

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
        return fs.info(key, self._etags.remember(st, temp.etag), st)

    def _conflict(self, key: str, path: str) -> StoreError:
        return StoreError(
            f"cannot write {self.url}/{key}: {path} or one of its parent directories is in"
            " the way (a local store cannot hold both 'a' and 'a/b')"
        )

