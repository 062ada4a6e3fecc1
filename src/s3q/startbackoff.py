"""The start backoff of ``s3q worker`` under systemd: a worker whose starts keep failing (a
bad setting, SSM or S3 down) waits longer before each new one, so that a fleet in a crash
loop does not read SSM Parameter Store (and list S3) every ``RestartSec`` per server.
systemd's own growing restart delay (``RestartSteps=``, ``RestartMaxDelaySec=``) needs
systemd 254; Amazon Linux 2023 and Debian 12 ship 252.

The unit names a state file (``S3Q_START_BACKOFF``, in its runtime directory: a reboot
forgets it). Each start records itself there (:meth:`StartBackoff.begin`) before anything
else; what forgets the record (:meth:`StartBackoff.reset`) is a run that stayed ready for
:data:`HEALTHY_AFTER`, a stop (SIGTERM: ``systemctl stop`` or ``restart``, a deployment's
hooks), or a clean exit. A record still there at the next start is a start that failed:
after ``n`` of them in a row the next start first waits a delay drawn uniformly from
``[d/2, d]``, ``d = min(CAP, BASE * 2**(n-1))``: 2.5-5 s, 5-10 s, 10-20 s, ... at most
2.5-5 min. The wait is logged (``start_backoff``), shown by ``systemctl status`` (sd_notify
``STATUS=``), extends the unit's start timeout (``EXTEND_TIMEOUT_USEC=``, systemd 236) and
ends at once, forgetting the failures, on SIGTERM: ``systemctl restart`` never waits. A
record older than :data:`FORGET_AFTER` is no loop any more. Without ``S3Q_START_BACKOFF``
(a worker started by hand, in a container, in tests) there is no backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from s3q.sdnotify import notify

__all__ = ["BASE", "CAP", "ENV_VAR", "FORGET_AFTER", "HEALTHY_AFTER", "StartBackoff",
           "backoff_delay"]

log = logging.getLogger("s3q.cli")  # the worker command's own lines

#: The variable naming the state file (the unit sets it).
ENV_VAR = "S3Q_START_BACKOFF"
#: The longest delay after the first failed start, and the longest of all (seconds).
BASE, CAP = 5.0, 300.0
#: Seconds a worker stays ready before its failures are forgotten.
HEALTHY_AFTER = 300.0
#: Seconds after which the record of a failed start no longer counts (no loop: the unit
#: was stopped meanwhile).
FORGET_AFTER = 3600.0
#: How much longer than the wait the start may take (systemd's DefaultTimeoutStartSec).
START_MARGIN = 90.0
#: Seconds between two looks at the stop requests while waiting.
TICK = 0.5


def backoff_delay(failures: int, draw: float) -> float:
    """Seconds to wait before a start that follows ``failures`` failed starts in a row:
    0 for none, else ``d/2 + draw * d/2`` with ``d = min(CAP, BASE * 2**(failures-1))``
    (``draw`` uniform in [0, 1): the jitter that spreads a fleet that failed together)."""
    if failures <= 0:
        return 0.0
    ceiling = min(CAP, BASE * 2.0 ** min(failures - 1, 30))
    return ceiling / 2 + min(max(draw, 0.0), 1.0) * ceiling / 2


class StartBackoff:
    """The state file ``path`` of one worker (one unit); ``clock`` is the wall clock of the
    records, ``monotonic`` and ``sleep`` time the wait, ``draw`` gives the jitter."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 draw: Callable[[], float] = random.random) -> None:
        self.path = path
        self.clock, self.monotonic, self.sleep, self.draw = clock, monotonic, sleep, draw
        self.failures = 0
        self.last_start: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StartBackoff | None:
        value = (os.environ if env is None else env).get(ENV_VAR, "").strip()
        return cls(Path(value)) if value else None

    def begin(self) -> float:
        """Record this start; return the seconds to wait before it (0: at once)."""
        now = self.clock()
        previous = self._read()
        self.failures = 0
        if previous is not None:
            failures, started = previous
            if 0 <= now - started <= FORGET_AFTER:  # (a clock set back: no loop either)
                self.failures, self.last_start = min(failures + 1, 64), started
        self._write({"failures": self.failures, "started": now})
        return backoff_delay(self.failures, self.draw())

    def wait(self, delay: float, stopped: Callable[[], bool]) -> bool:
        """Wait ``delay`` seconds, saying so; False as soon as ``stopped()`` (SIGTERM)."""
        if delay <= 0:
            return not stopped()
        last = (datetime.fromtimestamp(self.last_start, UTC).strftime("%H:%M:%SZ")
                if self.last_start is not None else "?")
        why = (f"the last {self.failures} start{'s' if self.failures > 1 else ''} of this "
               f"worker failed (the last began at {last})")
        log.warning("%s: waiting %.0fs before starting again (at most %.0fs; a run that stays "
                    "up %.0f min, a stop or a reboot forgets the failures; `systemctl "
                    "restart` skips the wait; state: %s)", why, delay, CAP,
                    HEALTHY_AFTER / 60, self.path,
                    extra={"event": "start_backoff", "failures": self.failures,
                           "delay": round(delay, 1)})
        notify(f"STATUS=waiting {delay:.0f}s before starting: {why}; systemctl restart skips "
               f"the wait\nEXTEND_TIMEOUT_USEC={math.ceil((delay + START_MARGIN) * 1e6)}")
        deadline = self.monotonic() + delay
        while (left := deadline - self.monotonic()) > 0:
            if stopped():
                return False
            self.sleep(min(TICK, left))
        if stopped():
            return False
        notify(f"STATUS=starting (after {delay:.0f}s: {why})")
        return True

    def reset(self, why: str) -> None:
        """Forget the failed starts (``why``: healthy, stopped, exited)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("start backoff: cannot remove %s (%s): the next start may wait",
                        self.path, e.strerror, extra={"event": "start_backoff_error"})
            return
        if self.failures:
            log.info("start backoff: %d failed start(s) forgotten (%s)", self.failures, why,
                     extra={"event": "start_backoff_reset", "why": why})
        self.failures = 0

    def reset_when_healthy(self) -> Callable[[], None]:
        """Forget the failures once the worker stayed up HEALTHY_AFTER seconds from now
        (call when it is ready); returns what cancels that."""
        timer = threading.Timer(HEALTHY_AFTER, self.reset, args=("healthy",))
        timer.daemon = True
        timer.start()
        return timer.cancel

    def _read(self) -> tuple[int, float] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return int(data["failures"]), float(data["started"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("start backoff: %s is unreadable (%s): taken for no failed start",
                        self.path, getattr(e, "strerror", None) or type(e).__name__,
                        extra={"event": "start_backoff_error"})
            return None

    def _write(self, record: dict[str, float]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
            tmp.replace(self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.warning("start backoff: cannot write %s (%s): starts are not backed off",
                        self.path, e.strerror, extra={"event": "start_backoff_error"})
