"""The event source: a worker thread that long-polls the SQS queue ``events_queue``, which
receives the bucket's ``s3:ObjectCreated:*`` notifications for the queue's ``wait/``
prefix, hands the requests they name to the claimers (:meth:`Queue.offer`: claimed by name,
without a LIST) and wakes an idle slot at once (docs/OPERATIONS.md, "Waking on S3 events").

S3 notifications are at-least-once, unordered, sometimes late, and can be lost, so nothing
relies on one: the slots still list wait/, every ``events_list_interval`` instead of every
few seconds, and that listing finds whatever a lost or late notification missed. Deleting a
message too early costs latency, never a request.

A message's life, in one worker:

* it is received only while the worker has a free slot (at most one message per free
  slot; none while the queue is paused), invisible to other workers for
  :data:`VISIBILITY` seconds;
* an ``s3:TestEvent``, a record about another bucket, prefix or event, a name the queue's
  filter refuses: deleted. A **malformed** message (not an S3 notification, or a record
  without its fields) is logged and deleted: it can never become readable, re-delivering it
  would only cost every worker a receive and a log line until a redrive policy moves it (or
  for the queue's whole retention period without one), and the listing finds any request it
  was about;
* its names are offered and one slot per name is woken;
* it is deleted once each name is settled: claimed by this worker (the queue's ``claimed``
  event), or, checked :data:`CHECK_AFTER` seconds later (HEAD wait/NAME, then its lease),
  gone from wait/ (claimed, finished or purged elsewhere: duplicates and events for objects
  that no longer exist end here) or held by this worker's claim in progress;
* a name waiting for a retry's backoff hides the message until the retry is due, and a name
  in flight elsewhere (a re-submission waits behind it) hides it for ``lease_ttl``
  (ChangeMessageVisibility): SQS delivers it again when it may be claimable;
* a name still waiting unclaimed is offered again; after :data:`MAX_CHECKS` checks the
  message is made visible at once, for any worker; after :data:`MAX_RECEIVES` deliveries it
  is deleted and left to the listing.

A request the idle listing claims that no notification announced is logged
(``events_missed``, :meth:`EventSource.missed`): notifications that never reach the queue
must not go unnoticed. SQS errors are logged and retried with backoff (1 s, doubling to
60 s), never fatal; while they last the source is not :attr:`~EventSource.healthy` and
the slots list wait/ at the ordinary ``poll_interval``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from s3q import layout
from s3q.errors import ConfigError
from s3q.queue import Queue
from s3q.records import Intent
from s3q.s3events import parse_message
from s3q.sqs import Message, SqsError, SqsQueue
from s3q.store import NotFound, StoreError

__all__ = ["CHECK_AFTER", "MAX_CHECKS", "MAX_RECEIVES", "VISIBILITY", "EventSource",
           "s3_location"]

log = logging.getLogger("s3q.events")

#: Seconds a received message stays invisible to other workers.
VISIBILITY = 60
#: Seconds after an offer before a name no claim of this worker took is checked in the
#: store; the next checks come 2x, 4x later.
CHECK_AFTER = 5.0
#: Checks of a name still waiting unclaimed before the message is given back to SQS.
MAX_CHECKS = 3
#: Deliveries of one message (hidden again and again) before it is left to the listing.
MAX_RECEIVES = 50
#: The long poll (SQS's longest).
LONG_POLL = 20
#: SQS's longest visibility timeout (12 hours), counted from the message's receipt: SQS
#: refuses a hide that would end later than that.
MAX_HIDE = 43200
#: Seconds a hide stops short of MAX_HIDE after the receipt (its clock is not ours).
HIDE_MARGIN = 60
#: Seconds an offered name counts as "announced by an event" (:meth:`EventSource.offered`).
RECENT = 600.0
#: Seconds between two warnings that the safety-net listing claimed an unannounced request.
MISSED_EVERY = 600.0
#: Seconds a request must have waited in wait/ for the safety-net listing's claim of it,
#: unannounced, to count as missed (a notification is usually there within seconds; a
#: listing that comes first finds a fresh request now and then, which is no sign).
MISSED_AGE = 60.0

Outcome = Literal["settled", "again"] | int  # an int: hide the message for that many seconds


@dataclass
class _Held:
    """A received message this worker has not deleted or given back yet."""

    receipt: str
    names: set[str]  # not settled yet
    receives: int
    check_at: float  # monotonic
    received: float  # monotonic
    checks: int = 0
    hides: list[int] = field(default_factory=list)

    def hide_for(self, now: float) -> int:
        """The shortest of its hides, ending no later than SQS allows (MAX_HIDE after its
        receipt, less HIDE_MARGIN)."""
        latest = MAX_HIDE - HIDE_MARGIN - math.ceil(now - self.received)
        return max(0, min(*self.hides, latest))


def s3_location(queue: Queue) -> tuple[str, str]:
    """The bucket and the full key prefix of wait/ of a queue on S3. Raises ConfigError for
    a queue elsewhere (no S3 notifications there)."""
    bucket = getattr(queue.store, "bucket", None)
    if not isinstance(bucket, str):
        raise ConfigError(f"events_queue: S3 event notifications need a queue on S3 "
                          f"(s3://bucket/prefix), not {queue.store.url}")
    prefix = str(getattr(queue.store, "prefix", ""))
    return bucket, (f"{prefix}/" if prefix else "") + layout.WAIT


class EventSource:
    """The event source of one worker (see the module doc). :meth:`start` it with the
    worker's free-slot count and wake-up; :meth:`stop` it when the worker stops."""

    def __init__(self, queue: Queue, sqs: SqsQueue, worker_id: str, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.queue, self.sqs, self.worker_id = queue, sqs, worker_id
        self.bucket, self.wait_prefix = s3_location(queue)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}  # receipt handle -> message
        self._recent: dict[str, float] = {}  # name -> when offered
        self._stop = threading.Event()
        self._healthy = False
        self._failures = 0
        self._missed, self._missed_at = 0, -math.inf  # (monotonic) of the last warning
        self._outside, self._outside_at = 0, -math.inf  # (the same, of :meth:`outside`)
        self._thread: threading.Thread | None = None
        self._capacity: Callable[[], int] = lambda: 1
        self._wake: Callable[[int], None] = lambda n: None
        queue.listeners.append(self._on_queue_event)

    # ------------------------------------------------------------------ control
    @property
    def healthy(self) -> bool:
        """True while SQS answers: the slots may list wait/ rarely."""
        return self._healthy

    def offered(self, name: str) -> bool:
        """Was ``name`` announced by an event lately (a claim of it is not a backlog)?"""
        with self._lock:
            return name in self._recent

    def missed(self, name: str, waited: float) -> None:
        """The idle listing of wait/ (the safety net) claimed ``name``, a first attempt no
        notification announced, after it had waited ``waited`` seconds in wait/. Now and
        then a notification is lost or late; a worker that only ever finds its requests
        this way has a queue the bucket does not notify (its rule missing, the queue's
        access policy, another region): warn (once per :data:`MISSED_EVERY` seconds, with
        the count meanwhile). A request that waited less than :data:`MISSED_AGE` is no sign:
        its notification may be on its way."""
        now = self._monotonic()
        with self._lock:
            if not self._healthy or waited < MISSED_AGE:
                return
            self._missed += 1
            if now - self._missed_at < MISSED_EVERY:
                return
            count, self._missed, self._missed_at = self._missed, 0, now
        log.warning("events: the listing of wait/ found %s, which no notification of %s "
                    "announced (%d since the last such warning); if it keeps happening, the "
                    "bucket's notifications do not reach the queue: run 's3q events setup', "
                    "check the queue's access policy and region", name, self.sqs.ref.name,
                    count, extra={"event": "events_missed", "request": name, "count": count})

    def outside(self, about: list[str]) -> None:
        """A message named requests ``about`` of another queue (in a wait/ outside this
        queue's root, or in another bucket), which it deletes: notifications that queue's
        workers miss (they share events_queue: a server whose queue setting differs from
        its fleet's, say). Warn (once per :data:`MISSED_EVERY` seconds, with the count
        meanwhile)."""
        now = self._monotonic()
        with self._lock:
            self._outside += len(about)
            if now - self._outside_at < MISSED_EVERY:
                return
            count, self._outside, self._outside_at = self._outside, 0, now
        log.warning("events: %s notifies requests of another queue than this one "
                    "(s3://%s/%s), such as %s (%d since the last such warning), and this "
                    "worker deletes those notifications: that queue's workers, which share "
                    "events_queue, never receive them (is this server's queue setting the "
                    "fleet's?); give each queue its own events_queue",
                    self.sqs.ref.name, self.bucket, self.wait_prefix, about[0], count,
                    extra={"event": "events_outside", "about": about[0], "count": count})

    def start(self, *, capacity: Callable[[], int], wake: Callable[[int], None]) -> None:
        """Run in a thread of its own: ``capacity()`` is the number of messages the worker
        can take now (its free slots), ``wake(n)`` lets ``n`` idle slots claim at once."""
        self._capacity, self._wake = capacity, wake
        self._thread = threading.Thread(target=self._run, name="s3q-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop receiving; delete what is settled, give the rest back to SQS at once. A long
        poll in progress is not waited for (what it brings is delivered again after
        :data:`VISIBILITY` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        with self._lock:
            held, self._held = list(self._held.values()), {}
        try:
            self.sqs.delete([h.receipt for h in held if not h.names and not h.hides])
            self.sqs.hide([(h.receipt, 0) for h in held if h.names or h.hides])
        except SqsError as exc:
            log.warning("events: could not return messages at stop: %s", exc,
                        extra={"event": "events_failed"})

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except SqsError as exc:
                self._failed(str(exc))
            except Exception as exc:  # never let the event source die
                log.exception("events: unexpected error")
                self._failed(f"{type(exc).__name__}: {exc}")

    def _round(self) -> None:
        self._settle_held()
        room = self._capacity()
        if room <= 0:
            self._stop.wait(0.2)
            return
        with self._lock:
            due = min((h.check_at for h in self._held.values() if h.names), default=None)
        wait = LONG_POLL if due is None else max(1, min(LONG_POLL, math.ceil(
            due - self._monotonic())))
        messages = self.sqs.receive(room, wait=wait if self._healthy else 0,
                                    visibility=VISIBILITY)
        if self._stop.is_set():  # the worker stopped during the long poll
            self.sqs.hide([(m.receipt, 0) for m in messages])
            return
        if not self._healthy:
            log.info("events: listening on %s for %s/%s", self.sqs.ref.name, self.bucket,
                     self.wait_prefix, extra={"event": "events_listening",
                                              "queue": self.sqs.ref.name,
                                              "failures": self._failures})
            self._healthy, self._failures = True, 0
        for message in messages:
            self._accept(message)

    def _failed(self, why: str) -> None:
        self._failures += 1
        was_healthy, self._healthy = self._healthy, False
        delay = min(60.0, 2.0 ** min(self._failures - 1, 6))
        log.warning("events: %s; retrying in %gs (the slots list wait/ every poll_interval "
                    "meanwhile)", why, delay, extra={"event": "events_failed",
                                                    "failures": self._failures})
        if was_healthy:
            self._wake(1)  # a slot sleeping for events_list_interval re-plans its listing
        self._stop.wait(delay)

    # ------------------------------------------------------------------ one message
    def _accept(self, message: Message) -> None:
        notice = parse_message(message.body, bucket=self.bucket, wait_prefix=self.wait_prefix)
        names = [n for n in notice.names
                 if self.queue.is_request(n) and self.queue.ctx.fits(n)]
        if notice.kind == "malformed" or notice.problems:
            log.warning("events: malformed message%s (%s): %.300r",
                        "" if names else " deleted", "; ".join(notice.problems), message.body,
                        extra={"event": "events_malformed"})
        if notice.kind == "test":
            log.debug("events: s3:TestEvent", extra={"event": "events_test"})
        if notice.outside:
            self.outside(notice.outside)
        if not names or message.receives > MAX_RECEIVES:
            if names:
                log.info("events: message about %s delivered %d times; left to the listing",
                         names[0], message.receives, extra={"event": "events_given_up"})
            self.sqs.delete([message.receipt])
            return
        now = self._monotonic()
        with self._lock:
            self._held[message.receipt] = _Held(message.receipt, set(names), message.receives,
                                                now + CHECK_AFTER, received=now)
            self._recent = {n: t for n, t in self._recent.items() if t > now - RECENT}
            self._recent.update(dict.fromkeys(names, now))
        for name in names:
            log.debug("notified %s", name, extra={"event": "notified", "request": name})
        self.queue.offer(names)
        self._wake(len(names))

    def _on_queue_event(self, event: str, fields: dict[str, Any]) -> None:
        """The queue's listener: a claim by this worker settles the name."""
        if event != "claimed":
            return
        name = fields.get("request")
        with self._lock:
            for held in self._held.values():
                held.names.discard(str(name))

    # ------------------------------------------------------------------ settling
    def _settle_held(self) -> None:
        """Delete the messages whose names are all settled, hide those that wait for a
        retry or for a request in flight, check the names due for a check."""
        now = self._monotonic()
        with self._lock:
            due = [h for h in self._held.values() if h.names and h.check_at <= now]
        for held in due:
            self._check(held)
        with self._lock:
            done = [h for h in self._held.values() if not h.names]
            for h in done:
                del self._held[h.receipt]
        self.sqs.delete([h.receipt for h in done if not h.hides])
        now = self._monotonic()
        self.sqs.hide([(h.receipt, h.hide_for(now)) for h in done if h.hides])

    def _check(self, held: _Held) -> None:
        again = []
        for name in list(held.names):
            outcome = self._outcome(name)
            with self._lock:
                if outcome == "again":
                    again.append(name)
                    continue
                held.names.discard(name)
                if not isinstance(outcome, str):
                    held.hides.append(outcome)
        held.checks += 1
        if not again:
            return
        if held.checks >= MAX_CHECKS:  # not claimed here: let any worker have it
            with self._lock:
                held.names.clear()
                held.hides.append(0)
            return
        held.check_at = self._monotonic() + CHECK_AFTER * 2 ** held.checks
        self.queue.offer(again)
        self._wake(len(again))

    def _outcome(self, name: str) -> Outcome:
        """Where the request of a notification is now, from this worker's point of view."""
        ctx = self.queue.ctx
        try:
            waiting = ctx.store.head(layout.key(layout.WAIT, name))
        except NotFound:
            return "settled"  # claimed, finished or purged elsewhere (or never there)
        except StoreError:
            return "again"
        try:
            found = self.queue.lease(name)
        except StoreError:
            return "again"
        if found is None:
            return "again"  # waiting, unclaimed: not tried yet
        lease = found[0]
        if lease.intent is Intent.RETRY and lease.version == 2:
            due_in = lease.not_before - ctx.store.now()
            return "again" if due_in <= 1.0 else min(MAX_HIDE, math.ceil(due_in) + 1)
        if (lease.worker == self.worker_id and lease.intent is Intent.HELD
                and waiting.etag in (lease.src, lease.view)):
            return "settled"  # our own claim, between its lock (c1) and its delete (c2)
        return min(MAX_HIDE, math.ceil(ctx.config.lease_ttl))  # in flight elsewhere
