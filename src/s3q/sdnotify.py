"""systemd's service notification protocol (sd_notify(3)), for ``Type=notify`` units.

systemd passes ``NOTIFY_SOCKET`` (a datagram socket path, ``@`` = Linux's abstract
namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). A message
is one datagram of ``KEY=value`` lines: ``READY=1`` once started, ``STATUS=...`` for
``systemctl status``, ``STOPPING=1`` at a graceful stop, ``WATCHDOG=1`` at least every
``WATCHDOG_USEC``. Outside systemd every call is a no-op.

Written here rather than taken from a package: the protocol is one ``sendto`` (this module
is the whole of it); ``sdnotify`` (the pure-Python one) has not been released since 2017
and swallows every error, and ``systemd-python`` is a C extension that needs libsystemd's
headers to build.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

__all__ = ["Watchdog", "notify", "watchdog_interval"]

log = logging.getLogger("s3q.cli")


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (``"READY=1"``, ``"STATUS=..."`` …) to systemd; False when not
    run by systemd with a notify socket, or when sending failed (logged at debug)."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8", "replace"), address)
    except OSError as e:
        log.debug("sd_notify %r failed: %s", message, e)
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds within which systemd wants ``WATCHDOG=1`` (None: no watchdog for us)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID") or os.getpid())
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 and pid == os.getpid() else None


class Watchdog:
    """Sends ``WATCHDOG=1`` every half interval from a daemon thread while ``healthy()``
    says so. It catches a process that no longer runs Python code (a deadlock, the GIL
    held by a stuck extension, SIGSTOP): systemd then kills and restarts the worker, whose
    start re-queues what it held."""

    def __init__(self, interval: float, healthy: Callable[[], bool] = lambda: True) -> None:
        self.interval, self.healthy = interval, healthy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s3q-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            if self.healthy():
                notify("WATCHDOG=1")
            if self._stop.wait(self.interval / 2):
                return
