"""Shares of wait/: which requests of a listed page this worker tries first, so that the
workers of a fleet, each listing wait/ on its own, rarely race for the same request.

Each request has one *owner* among the live workers of the registry (``.s3q/workers/``:
records not stale), by a hash of its name: ``hash(name) mod n`` indexes the sorted worker
ids. A worker's walk of wait/ (:mod:`s3q.waitwalk`) hands out the requests of a page that
are its own share, from a random one; a page that holds none of its share hands out the
others' (a dead, busy, draining or slow worker's share is taken so: by whoever finds a page
with nothing of its own). A share is an order of preference, never a lock: every worker
may claim every request, and the claim's c1 is what decides (docs/PROTOCOL.md, "claim").
Workers whose views of the fleet differ (one started, one died, a registry read failed)
only race more, until they look again.

The fleet is looked at by the worker's registry thread (:class:`s3q.registry.Presence`):
at its start and :data:`AGAIN` later, at every heartbeat, and after a claim lost a race
for a request of its own share (:meth:`Shares.missed`: a peer may see another fleet), at
most once a :data:`SOON`. A process without a registry record (``Queue.claim`` called
directly) has no view: every request is its own, as in a fleet of one.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable

__all__ = ["AGAIN", "SOON", "Shares", "owner"]

#: Seconds after its first look at the fleet that a worker looks again (a fleet started
#: together: the records of those that started a moment later).
AGAIN = 1.0
#: Seconds between two looks at the fleet that lost races ask for (the tail of a backlog,
#: taken over by workers whose own share is done, loses a few races: not a fleet changed).
SOON = 10.0


def owner(name: str, n: int) -> int:
    """The index (among ``n`` sorted worker ids) of the worker whose share holds NAME."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


class Shares:
    """One process's view of the fleet, and what it makes of a page's names."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index, self._n = 0, 1
        self.ids: tuple[str, ...] = ()  # the fleet as last seen (sorted), this worker in it
        #: Set when a look at the fleet is wanted now (a lost race), and to wake the thread
        #: that looks (:class:`s3q.registry.Presence`) when it must stop.
        self.wake = threading.Event()

    def update(self, me: str, live: Iterable[str]) -> None:
        """The fleet as the registry lists it now: ``live`` worker ids (this one, ``me``,
        counts whether or not its record is there)."""
        ids = tuple(sorted({*live, me}))
        with self._lock:
            self.ids, self._index, self._n = ids, ids.index(me), len(ids)

    def mine(self, name: str) -> bool:
        """Is NAME in this worker's share?"""
        with self._lock:
            index, n = self._index, self._n
        return n == 1 or owner(name, n) == index

    def missed(self, name: str) -> None:
        """A claim found NAME taken (claimed, changed or gone) since it was listed. When NAME
        is in this worker's share, a peer sees another fleet, or this one does: look again
        (the registry thread, at most once a :data:`SOON`)."""
        if self.mine(name):
            self.wake.set()
