"""Renewing the lease of a claim under way (docs/PROTOCOL.md §4, c1): the copies of a large
request (c1b, the private copy; c3, the processing/ view) are server-side copies that may take
longer than the lease lives, and the job whose heartbeat renews leases exists only once the
claim is done. :func:`renewed_while` renews it meanwhile (used by :mod:`s3q.claim`)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from s3q import leases
from s3q.context import Context, Deadline
from s3q.leases import LeaseTaken
from s3q.records import Lease
from s3q.store import StoreError

__all__ = ["Held", "renewed_while"]

log = logging.getLogger("s3q")


class Held:
    """The lease of a claim under way and its ETag, as its renewals (:func:`renewed_while`)
    leave them."""

    __slots__ = ("etag", "lease")

    def __init__(self, lease: Lease, etag: str) -> None:
        self.lease, self.etag = lease, etag


@contextlib.contextmanager
def renewed_while(ctx: Context, held: Held, deadline: Deadline) -> Iterator[None]:
    """c1b of a large request is a server-side copy that may take longer than the lease
    lives (in parts over 5 GiB: tens of GiB take minutes): while it runs, the lease is
    renewed every ``renew_interval`` (``PUT=e``, ``seq`` + 1, as a job's heartbeat) and
    ``deadline`` moved with each renewal, so that the copy's parts, and c2 after it, are
    still sent in time. A renewal that finds the lease taken over stops renewing: the
    deadline then runs out and stops the copy (the taker makes the private copy itself);
    one that fails otherwise is tried again at the next interval."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ctx.config.renew_interval):
            sent = ctx.monotonic()
            try:
                held.lease, held.etag = leases.write(
                    ctx, held.lease.next(written_at=time.time()), held.etag)
            except LeaseTaken:
                return
            except StoreError as exc:
                log.warning("%s: the lease could not be renewed during its private copy: %s",
                            held.lease.name, exc,
                            extra={"event": "renew_failed", "request": held.lease.name})
                continue
            deadline.at = ctx.deadline(sent).at

    thread = threading.Thread(target=renew, name="s3q-claim-renew", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
