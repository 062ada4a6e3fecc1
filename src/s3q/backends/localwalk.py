"""The walk of the local store's tree (:mod:`s3q.backends.local`): the valid keys under a
prefix and after a key, read lazily, subtrees wholly before the key skipped, entries that
cannot be examined reported and left out."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

from s3q.backends._common import check_key
from s3q.backends.localfs import RESERVED, translate
from s3q.store import InvalidKey

__all__ = ["left_out", "walk"]


class _Tree(NamedTuple):
    root: str
    inside: Callable[[str], bool]
    unreadable: Callable[[str, OSError], None]


def walk(root: str, prefix: str, after: str | None, *, inside: Callable[[str], bool],
         unreadable: Callable[[str, OSError], None]) -> Iterator[str]:
    """Valid keys of the tree at ``root`` starting with ``prefix`` and greater than
    ``after``, in no order. ``inside(path)``: does a path resolve inside the root (symlinks);
    ``unreadable(key, error)``: told of each directory it may not read (its key ending in
    "/") and of each file whose name is no valid key (``EINVAL``; the key shown escaped),
    then skipped."""
    base, _, stem = prefix.rpartition("/")
    if base.split("/", 1)[0] == RESERVED:
        return
    base = base + "/" if base else ""
    if base and not inside(os.path.join(root, base)):
        return
    for key in _walk_dir(_Tree(root, inside, unreadable), base, stem, after):
        try:
            check_key(key)
        except InvalidKey as e:  # e.g. a file name with a newline, or not UTF-8
            shown = repr(os.fsencode(key))[2:-1]  # (printable, ASCII)
            why = str(e).encode("utf-8", "backslashreplace").decode()  # (lone surrogates)
            unreadable(shown, OSError(errno.EINVAL, why))
            continue
        yield key


def _walk_dir(tree: _Tree, base: str, stem: str, after: str | None) -> Iterator[str]:
    """Keys in directory ``base`` ("" or ending in "/") whose name after ``base`` starts
    with ``stem`` and that are greater than ``after``. Subtrees wholly before ``after``
    are skipped without being read."""
    if after is not None and not after.startswith(base):
        if after > base:
            return  # every key here starts with base, so is below after
        after = None
    for name in _entries(tree, base):
        if not name.startswith(stem):
            continue
        key = base + name
        if name.endswith("/"):
            yield from _walk_dir(tree, key, "", after)
        elif after is None or key > after:
            yield key


def _entries(tree: _Tree, base: str) -> Iterator[str]:
    """Entry names of directory ``base``, directories with a trailing "/", read
    lazily. Symlinks to directories are not followed; symlinks to files inside the root
    are listed."""
    path = os.path.join(tree.root, base)
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                name = _entry_name(tree, entry, base)
                if name is not None:
                    yield name
    except PermissionError as e:
        tree.unreadable(base, e)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return
        raise translate(e, "list", path) from e


def _entry_name(tree: _Tree, entry: os.DirEntry[str], base: str) -> str | None:
    """The name :func:`_entries` lists for ``entry``, or None. An entry that cannot be
    examined (a symlink into a directory this user may not read, a symlink loop, a
    symlink through a file) is reported and left out: it must not end the listing of the
    directory, whose other entries would never be listed (nor claimed) again. So is one
    that is never listed, lest a request a producer left there wait unseen for ever: a
    symlink leading out of the root or to nothing, one to a directory (never followed)
    other than its own state's (``wait/today`` -> ``wait/2026/12/04``: listed there), and
    what is neither a file nor a directory (a named pipe, a socket, a device)."""
    try:
        if entry.is_dir(follow_symlinks=False):
            return entry.name + "/" if base or entry.name != RESERVED else None
        if entry.is_file(follow_symlinks=False) or (
            entry.is_symlink() and entry.is_file() and tree.inside(entry.path)
        ):
            return entry.name
        if entry.is_symlink() and entry.is_dir():
            state = os.path.join(tree.root, base.partition("/")[0])
            if not (base and _within(entry.path, state)):
                tree.unreadable(base + entry.name + "/", OSError(
                    errno.ENOTSUP, "a symbolic link to a directory, never followed"))
        elif entry.is_symlink():
            tree.unreadable(base + entry.name, OSError(errno.EXDEV, (
                "a symbolic link to nothing" if not os.path.exists(entry.path) else
                "a symbolic link leading out of the store's root"
                if not tree.inside(entry.path) else "a symbolic link to no regular file")))
        else:
            tree.unreadable(base + entry.name, OSError(
                errno.ENOTSUP, "not a regular file (a named pipe, a socket, a device)"))
    except OSError as e:
        tree.unreadable(base + entry.name, e)
    return None


def _within(path: str, top: str) -> bool:
    """Does ``path`` resolve below the directory ``top``, a state's (its walk lists what is
    there: a link into it hides nothing)?"""
    top, real = os.path.realpath(top), os.path.realpath(path)
    return real == top or real.startswith(top + os.sep)


def left_out(e: OSError) -> tuple[str, str, str, str]:
    """Why the walk (or a stat after it) left an entry out, as it was told ``e``: the log
    event, the reason, its details and the fix."""
    if isinstance(e, PermissionError):
        return "unreadable", "permission denied", "", "make it readable by this worker's user"
    if e.errno == errno.EINVAL:  # (a name that is no valid key: see walk)
        return "unusable_name", "its name is not a usable key", f" ({e.strerror})", "rename it"
    return "unreadable", f"it cannot be read ({e.strerror})", "", "remove or fix it"
