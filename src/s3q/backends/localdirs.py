"""The local store's directories that this process is writing a file into (an install or a
put-back under way): a prune (the delete of a directory's last file removes the directory)
leaves them, and their ancestors, alone. Under load, the deletes of other threads pruned the
directory a write had just created, before its link, again and again, until the write gave
up ("its directory keeps disappearing")."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FILLING", "Filling"]


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
