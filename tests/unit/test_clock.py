"""Lease deadlines count the time the machine was suspended (:mod:`s3q.clock`).

Linux's ``CLOCK_MONOTONIC`` (``time.monotonic``) stops while the machine is suspended or
hibernated; ``CLOCK_BOOTTIME`` goes on. The suspend is simulated the way the kernel shows
it to a process: ``CLOCK_BOOTTIME`` jumps by the time asleep, ``CLOCK_MONOTONIC`` does not
(a machine cannot be hibernated here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate

import pytest

from s3q import Queue, QueueConfig, clock
from s3q.backends.memory import MemoryStore
from s3q.backends.s3wire import StoreClock
from s3q.errors import LeaseLost

pytestmark = pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="Linux only")


@pytest.fixture
def suspend(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    asleep = 0.0
    real = time.clock_gettime

    def clock_gettime(clk: int) -> float:
        return real(clk) + (asleep if clk == time.CLOCK_BOOTTIME else 0.0)

    def sleep_for(seconds: float) -> None:
        nonlocal asleep
        asleep += seconds

    monkeypatch.setattr(time, "clock_gettime", clock_gettime)
    return sleep_for


def test_the_deadline_clock_is_boottime() -> None:
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    now = clock.monotonic()
    assert before <= now <= time.clock_gettime(time.CLOCK_BOOTTIME)
    assert now >= time.monotonic() - 0.01  # (boottime = monotonic + the time suspended)


def test_a_job_whose_machine_was_hibernated_past_its_lease_acts_on_it_no_more(
        suspend: Callable[[float], None]) -> None:
    """A worker claims, and its instance is hibernated for 10 minutes (stop-hibernate, a
    warm pool's Hibernated state): its lease expired and was taken over meanwhile. Judged
    by time.monotonic, which stood still, its deadline had not passed on waking, and the
    writes it guards (c2, the view deletes) would have been sent after the lease's expiry."""
    q = Queue(MemoryStore("clock"), QueueConfig(lease_ttl=30.0))
    q.submit("a_request.json", b"{}")
    job = q.claim("w")
    assert job is not None
    job.check_deadline()  # (live)
    assert job.deadline.left() > 20.0
    suspend(600.0)
    with pytest.raises(LeaseLost):
        job.check_deadline()
    assert job.deadline.left() < -500.0


def test_the_store_clock_goes_on_while_the_machine_sleeps(
        suspend: Callable[[float], None]) -> None:
    """S3's clock is estimated from a Date header and the local clock since: after a
    hibernation it stood 10 minutes behind until the next answer, and expired leases
    looked live to the scan for that long."""
    store_clock = StoreClock()
    store_clock.observe(formatdate(time.time(), usegmt=True), clock.monotonic())
    before = store_clock.read()
    assert before is not None
    suspend(600.0)
    after = store_clock.read()
    assert after is not None and 599.0 < after - before < 601.0
