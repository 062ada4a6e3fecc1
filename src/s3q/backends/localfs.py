"""File-system primitives of the local store (:mod:`s3q.backends.local`): durable atomic
writes (a fsynced temp file renamed into place, stamped), files moved aside and put back,
and ``OSError`` translated into the store's errors. Directories created and pruned under
concurrent deletes are :mod:`s3q.backends.localdirs`; the walk of a tree is
:mod:`s3q.backends.localwalk`."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import NamedTuple

from s3q.backends import localdirs as dirs
from s3q.backends.localdirs import FILLING
from s3q.store import Body, InvalidKey, NotFound, ObjectInfo, StoreError, StoreUnavailable

#: The store's own directory under the root (temp and lock files); never a key.
RESERVED = ".s3qlocal"
#: Read/write chunk size when streaming bodies.
CHUNK = 1024**2
#: How often a write retries when a concurrent delete removes the directory it writes into.
INSTALL_ATTEMPTS = 100
#: Temp files (``*.tmp``) older than this (left by crashed writers) are removed when a store
#: opens; files a conditional delete moved aside (``*.del``) never are (see
#: :func:`remove_stale_temps`).
STALE_TEMP_SECONDS = 3600.0
#: The files this store installs have an mtime in whole microseconds and an atime exactly
#: this much later (31.415 ms, whole microseconds too, so that µs timestamps keep it).
STAMP_DELTA_NS = 31_415_000


class Temp(NamedTuple):
    """A fully written, fsynced temporary file, not yet in place."""

    path: str
    fd: int
    etag: str


def stamped(st: os.stat_result) -> bool:
    """Was this file installed by this store (see :data:`STAMP_DELTA_NS`)?"""
    return st.st_atime_ns - st.st_mtime_ns == STAMP_DELTA_NS and st.st_mtime_ns % 1000 == 0


# -- writing ---------------------------------------------------------------------------------

def write_temp(tmp_dir: str, body: Body) -> Temp:
    """Write ``body`` to a new fsynced temp file, hashing it on the way."""
    path = os.path.join(tmp_dir, f"{os.getpid()}.{uuid.uuid4().hex}.tmp")
    with errors("create a temporary file", path, writing=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    temp = Temp(path, fd, "")
    try:
        digest = md5()
        with errors("write", path, writing=True):
            if isinstance(body, bytes | bytearray | memoryview):
                digest.update(body)
                write_all(fd, memoryview(body))
            else:
                while chunk := body.read(CHUNK):
                    digest.update(chunk)
                    write_all(fd, memoryview(chunk))
            os.fsync(fd)
    except BaseException:
        discard(temp)
        raise
    return temp._replace(etag=etag(digest))


class Exists(Exception):
    """:func:`install` with ``exclusive``: something is at the path already."""


#: ``link`` errors of file systems without hard links (FAT, some FUSE ones).
_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV)


def keeps_stamps(tmp_dir: str) -> bool:
    """Does the file system keep :func:`install`'s stamp on a file that is read? Coarse
    timestamps (ext3, FAT, some network file systems) do not, nor does a ``strictatime``
    mount after the first read. Checked once when a store opens: where it does not, the
    store cannot tell its own fresh files from another program's."""
    try:
        fd, path = tempfile.mkstemp(dir=tmp_dir, suffix=".tmp")
    except OSError:
        return False
    try:
        os.write(fd, b"s3q")
        _stamp(fd)  # (again if placed late, as every write's: else a read may rewrite it)
        with open(path, "rb") as fh:
            fh.read()
        return stamped(os.stat(path))
    except OSError:
        return False
    finally:
        os.close(fd)
        with suppress(OSError):
            os.unlink(path)


def install(temp: Temp, path: str, conflict: Callable[[], StoreError], *,
            exclusive: bool = False) -> os.stat_result:
    """(Under the key's lock.) Stamp ``temp`` with the current time, move it onto
    ``path`` (creating directories; retrying if a concurrent delete removes one) and
    fsync the directory. Returns the installed file's stat. ``exclusive``: only if nothing
    is at ``path`` (else :class:`Exists`), checked and done in one step (a hard link), so
    that a file another program (a producer's ``mv``, which takes no lock) put there after
    the caller's own check is never replaced."""
    parent = os.path.dirname(path)
    with errors("write", path, writing=True), FILLING.into(parent):
        _stamp(temp.fd)  # (never in place without it)
        for _ in range(INSTALL_ATTEMPTS):
            try:
                if exclusive and _link(temp.path, path):
                    with suppress(OSError):
                        os.unlink(temp.path)  # (before the fstat: one link, as replaced)
                else:
                    os.replace(temp.path, path)
                break
            except FileExistsError as e:
                if os.path.isdir(path):
                    raise conflict() from e
                if os.path.exists(path):
                    raise Exists(path) from e
                os.replace(temp.path, path)  # a dangling symlink: no object, as before
                break
            except FileNotFoundError:
                pass  # the directory is missing: create it below
            except (IsADirectoryError, NotADirectoryError) as e:
                raise conflict() from e
            try:
                dirs.makedirs(parent)
            except FileNotFoundError:
                continue  # a concurrent delete removed an ancestor meanwhile: again
            except (NotADirectoryError, FileExistsError) as e:
                raise conflict() from e
        else:
            raise StoreError(f"cannot write {path}: its directory keeps disappearing")
        st = _stamp(temp.fd)  # again: placing it changed its ctime (see _stamp)
        dirs.fsync_dir(parent)
        return st


def _stamp(fd: int) -> os.stat_result:
    """Give the file at ``fd`` the store's stamp (:data:`STAMP_DELTA_NS`), and its stat.
    The stamped atime must stay later than the file's ctime, which every link, rename and
    utime sets to the current time: on a ``relatime`` mount a read rewrites an atime
    earlier than the ctime, and the stamp is gone. So stamp once the file is in place, and
    again when the call itself came more than the stamp's delta after its mtime (a thread
    descheduled on a loaded machine)."""
    for _ in range(10):
        mtime = time.time_ns() // 1000 * 1000  # whole µs: see STAMP_DELTA_NS
        os.utime(fd, ns=(mtime + STAMP_DELTA_NS, mtime))
        st = os.fstat(fd)
        if st.st_ctime_ns < st.st_atime_ns:
            break
    return st


def _link(src: str, dst: str) -> bool:
    """Hard-link ``src`` at ``dst`` (FileExistsError if taken); False where the file
    system has no hard links (then the caller replaces, after its own check)."""
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno in _NO_LINKS:
            return False
        raise


def take_aside(path: str, tmp_dir: str) -> str | None:
    """(Under the key's lock.) Move the file at ``path`` into ``tmp_dir`` in one step, so
    that what a conditional delete checks next is exactly what it removes: a file another
    program puts at ``path`` meanwhile stays. Returns where it went; None where it cannot
    be moved there (another file system: the caller unlinks in place). Raises
    FileNotFoundError when nothing is at ``path``."""
    aside = os.path.join(tmp_dir, f"{os.getpid()}.{uuid.uuid4().hex}.del")
    try:
        os.rename(path, aside)
    except OSError as e:
        if e.errno == errno.EXDEV:
            return None
        raise
    return aside


def moved_file(aside: str, path: str) -> str:
    """Where to look at the file :func:`take_aside` moved from ``path`` to ``aside``: there,
    unless it is a symlink with a relative target, which names a file relative to the
    directory of ``path`` (from ``aside`` it would name another file, or none)."""
    try:
        target = os.readlink(aside)
    except OSError as e:
        if e.errno == errno.EINVAL:  # not a symlink
            return aside
        raise
    return os.path.join(os.path.dirname(path), target)  # (an absolute target stays as is)


def put_back(aside: str, path: str) -> None:
    """Undo :func:`take_aside` (the file was not the one to delete), unless another file
    took its place meanwhile: that one is newer and stays (as after an overwrite). Raises
    :class:`~s3q.store.StoreError` when the file moved aside is not there any more (someone
    removed it from the store's tmp directory): a file that was not to be deleted is gone,
    which must not pass in silence."""
    with FILLING.into(os.path.dirname(path)):
        _put_back(aside, path)
    with suppress(OSError):
        os.unlink(aside)


def _put_back(aside: str, path: str) -> None:
    for _ in range(INSTALL_ATTEMPTS):
        try:
            os.link(aside, path)
            break
        except FileExistsError:
            break
        except FileNotFoundError:  # the file moved aside is gone, or its directory was pruned
            if not os.path.lexists(aside):
                raise _lost(aside, path) from None
            with suppress(FileNotFoundError):
                dirs.makedirs(os.path.dirname(path))
        except OSError as e:
            if e.errno not in _NO_LINKS:
                raise
            if not os.path.lexists(path):  # no hard links here: the best we can do
                try:
                    os.rename(aside, path)
                except FileNotFoundError:
                    if not os.path.lexists(aside):
                        raise _lost(aside, path) from None
                    raise
            break
    else:
        raise StoreError(f"cannot put {aside} back at {path}: its directory keeps disappearing")


def _lost(aside: str, path: str) -> StoreError:
    return StoreError(f"cannot put back {path}: the file a conditional delete moved aside to "
                      f"{aside} (not the one to delete) was removed meanwhile")


def discard(temp: Temp) -> None:
    with suppress(OSError):
        os.close(temp.fd)
    with suppress(OSError):
        os.unlink(temp.path)


def remove_stale_temps(tmp_dir: str) -> list[str]:
    """Delete the temp files (``*.tmp``, written by :func:`write_temp`) that crashed writers
    left behind: not written to for :data:`STALE_TEMP_SECONDS` (best effort). Files a
    conditional delete moved aside (``*.del``, :func:`take_aside`) are never deleted: their
    mtime is the moved file's own (a rename keeps it), so a producer's file prepared long
    ago and moved aside a moment ago looks old, and :func:`put_back` may still need it. One
    whose move aside is :data:`STALE_TEMP_SECONDS` old by its ctime (which the rename set)
    was left by a conditional delete that crashed midway: those are returned, for the
    caller to report (it may be a request a producer re-submitted)."""
    now = time.time()
    cutoff = now - STALE_TEMP_SECONDS
    left: list[str] = []
    with suppress(OSError), os.scandir(tmp_dir) as entries:
        for entry in entries:
            with suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if entry.name.endswith(".tmp") and st.st_mtime < cutoff:
                    os.unlink(entry.path)
                elif entry.name.endswith(".del") and st.st_ctime < cutoff:
                    left.append(entry.path)
    return sorted(left)


# -- helpers --------------------------------------------------------------------------------


def path_max(root: str) -> int:
    try:
        return os.pathconf(root, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096


#: The directories a queue keeps directly under the store's root.
QUEUE_DIRS = ("wait", "processing", "finish", "failed", ".s3q")


def holds_a_queue(root: str) -> bool:
    """Is ``root`` a directory that a queue has used (or that requests were put into)?"""
    return any(os.path.isdir(os.path.join(root, d)) for d in (*QUEUE_DIRS, RESERVED))


def linked_out(root: str, real_root: str) -> list[str]:
    """The queue's directories under ``root`` that are symbolic links leading out of it
    (``wait -> /mnt/incoming``), as "PATH -> TARGET": no key may lead out of the root, so
    nothing under them could ever be listed or read (the queue would look empty)."""
    found = []
    for d in QUEUE_DIRS:
        path = os.path.join(root, d)
        if os.path.islink(path):
            real = os.path.realpath(path)
            if real != real_root and not real.startswith(real_root + os.sep):
                found.append(f"{path} -> {real}")
    return found


def md5() -> hashlib._Hash:
    return hashlib.md5(usedforsecurity=False)


def etag(digest: hashlib._Hash) -> str:
    return '"' + digest.hexdigest() + '"'


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """The same file, unchanged (a rename changes only its ctime)."""
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (
        b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


def signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def info(key: str, etag: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(key, etag, st.st_size, st.st_mtime)


def write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


@contextmanager
def errors(doing: str, path: str, *, writing: bool = False) -> Iterator[None]:
    """Translate ``OSError`` into the store's errors (see :func:`translate`)."""
    try:
        yield
    except OSError as e:
        raise translate(e, doing, path, writing=writing) from e


def translate(e: OSError, doing: str, path: str, *, writing: bool = False) -> StoreError:
    """One ``OSError`` as a store error naming the path. Missing files (or a directory where
    a file was expected) on reads are :class:`NotFound`; a full device (or quota) is
    :class:`StoreUnavailable`: the store's failure, not the key's (a claim must not take it
    for a request of its own that it may not read)."""
    code = e.errno
    if not writing and code in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
        return NotFound(f"file://{path} not found")
    if code == errno.ENAMETOOLONG:
        return InvalidKey(f"cannot {doing} {path}: file name too long for this file system")
    if code in (errno.ENOSPC, errno.EDQUOT):  # the store's, not this key's: as S3's 507
        return StoreUnavailable(f"cannot {doing} {path}: no space left on the device (or "
                                "quota)")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"cannot {doing} {path}: permission denied ({e.strerror})")
    return StoreError(f"cannot {doing} {path}: {e.strerror or e} (errno {code})")
