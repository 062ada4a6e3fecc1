"""Pages of the local directory store (:meth:`s3q.backends.local.LocalStore.list_page`): the
smallest keys of the walk (:mod:`s3q.backends.localwalk`), each stat'ed and given its ETag,
less the files still being written by another program and those that cannot be read."""

from __future__ import annotations

import errno
import heapq
import logging
import os
import stat
from collections.abc import Callable

from s3q.backends import localfs as fs
from s3q.backends import localwalk
from s3q.store import LeftOut, ObjectInfo, Page, StoreError

__all__ = ["Lister"]

log = logging.getLogger("s3q.backends.local")


class Lister:
    """Lists one store's tree at ``root``. ``inside(path)``: does a path resolve inside the
    root; ``info_at(key, path)``: a regular file's info, or None; ``settles(st)``: None
    for a file that may be listed, else when it will be (another program may still be
    writing it)."""

    def __init__(self, root: str, *, inside: Callable[[str], bool],
                 info_at: Callable[[str, str], ObjectInfo | None],
                 settles: Callable[[os.stat_result], float | None]) -> None:
        self._root = root
        self._inside = inside
        self._info_at = info_at
        self._settles = settles
        self._unreadable: set[str] = set()  # reported already

    def page(self, prefix: str, start_after: str | None, limit: int) -> Page:
        """See :meth:`~s3q.backends.local.LocalStore.list_page` (arguments checked)."""
        left: dict[LeftOut, None] = {}  # (what this page's walks left out, in order, once)
        settling: list[tuple[str, float]] = []  # (files still being written: listed when)

        def report(key: str, e: OSError) -> None:
            left[self._report(key, e)] = None
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
            when = self._settles(st)
            if when is not None:
                settling.append((key, when))
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

    def _report(self, key: str, e: OSError) -> LeftOut:
        """Log what a listing leaves out (once per path), and say what it is."""
        event, why, details, fix = localwalk.left_out(e)
        path = os.path.join(self._root, key)
        if path not in self._unreadable:
            self._unreadable.add(path)
            log.warning("%s: not listed, %s%s: %s", path, why, details, fix,
                        extra={"event": event, "path": path})
        return LeftOut(key, why)
