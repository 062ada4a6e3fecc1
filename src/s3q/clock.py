"""The clock of lease deadlines: monotonic, and counting the time the machine was
suspended.

``time.monotonic`` (``CLOCK_MONOTONIC``) stops while Linux is suspended or hibernated: an
EC2 instance hibernated (stop-hibernate, or a warm pool's ``Hibernated`` state) with jobs in
flight wakes up believing its leases were renewed a moment ago, though they expired and
were taken over long since, and would send the writes their deadline guards (docs/
PROTOCOL.md §3) after the lease's expiry, however long it slept. ``CLOCK_BOOTTIME`` is
``CLOCK_MONOTONIC`` plus the time suspended: after a resume every deadline has passed and
those writes are refused before they are sent. Elsewhere (no ``CLOCK_BOOTTIME``: macOS,
Windows) it is ``time.monotonic``.
"""

from __future__ import annotations

import time

__all__ = ["monotonic"]

if hasattr(time, "CLOCK_BOOTTIME"):
    _BOOTTIME = time.CLOCK_BOOTTIME

    def monotonic() -> float:
        """Seconds since boot, the time suspended included."""
        return time.clock_gettime(_BOOTTIME)
else:  # pragma: no cover (not Linux)
    monotonic = time.monotonic
