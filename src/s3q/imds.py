"""Watch the EC2 instance metadata service (IMDSv2) for an announced end of this instance.

* Spot interruption: ``/latest/meta-data/spot/instance-action`` answers 404 until EC2
  decides to stop, hibernate or terminate the instance, then 200 with
  ``{"action": "terminate", "time": "..."}``, about two minutes ahead.
* Auto Scaling scale-in: ``/latest/meta-data/autoscaling/target-lifecycle-state`` answers
  ``InService`` and becomes ``Terminated`` when the group is about to terminate the
  instance (give the group a termination lifecycle hook, so there is time to drain).

:class:`InterruptionWatcher` polls both every ``interval`` seconds in a daemon thread and
calls ``on_notice(reason)`` once, at the first notice; the worker's drain is
``on_notice=lambda reason: worker.stop()`` (stop claiming, let running jobs finish within
``grace``, give the rest back to wait/). Off EC2, or with the IMDS disabled, it stays silent
(debug logs only) and polls less and less often, up to ``max_backoff`` seconds apart.
Only the standard library's urllib is used; proxies are never used.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

__all__ = ["ASG_PATH", "SPOT_PATH", "TOKEN_PATH", "InterruptionWatcher", "instance_id"]

log = logging.getLogger("s3q.imds")

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
SPOT_PATH = "/latest/meta-data/spot/instance-action"
ASG_PATH = "/latest/meta-data/autoscaling/target-lifecycle-state"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_BODY = 4096


class _Unavailable(Exception):
    """The IMDS did not answer usably (not on EC2, IMDS off, hop limit, a timeout...)."""


class InterruptionWatcher:
    """Polls the IMDS for a Spot interruption or an Auto Scaling termination; see the
    module's docstring. ``start()`` starts the daemon thread, ``stop()`` ends it; ``notice``
    is the reason given to ``on_notice`` (None until then)."""

    def __init__(
        self,
        on_notice: Callable[[str], None],
        *,
        endpoint: str | None = None,
        interval: float = 5.0,
        timeout: float = 1.0,
        token_ttl: int = 21600,
        max_backoff: float = 60.0,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be positive")
        if not 1 <= token_ttl <= 21600:
            raise ValueError("token_ttl must be within 1..21600 seconds")
        self.on_notice = on_notice
        self.endpoint = (endpoint or os.environ.get("S3Q_IMDS_ENDPOINT")
                         or DEFAULT_ENDPOINT).rstrip("/")
        self._disabled = endpoint is None and \
            os.environ.get("S3Q_IMDS", "").strip().lower() == "off"
        self.interval, self.timeout = interval, timeout
        self.token_ttl = token_ttl
        self.max_backoff = max(max_backoff, interval)
        self.notice: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._token: str | None = None
        self._token_renew_at = 0.0  # monotonic
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> InterruptionWatcher:
        """Start polling (once; later calls do nothing). With ``S3Q_IMDS=off`` in the
        environment and no explicit endpoint, as for the worker id, nothing is polled."""
        if self._disabled:
            log.debug("IMDS disabled (S3Q_IMDS=off): not watching for interruptions")
            return self
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="s3q-imds-watcher",
                                                daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=3 * self.timeout + 1)

    def __enter__(self) -> InterruptionWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ polling
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                reason = self._check()
            except _Unavailable as e:
                failures += 1
                delay = min(self.max_backoff, self.interval * 2 ** min(failures, 16))
                log.debug("IMDS %s not available (%s); next try in %.0fs", self.endpoint, e,
                          delay)
            else:
                failures = 0
                delay = self.interval
                if reason is not None:
                    self._fire(reason)
                    return
            self._stop.wait(delay)

    def _check(self) -> str | None:
        """One poll: the reason of a notice, or None. Raises _Unavailable."""
        body = self._get(SPOT_PATH)
        if body is not None:
            return _spot_reason(body)
        state = self._get(ASG_PATH)
        if state is not None and state.strip() == "Terminated":
            return "Auto Scaling is terminating this instance (target lifecycle state " \
                   "Terminated)"
        return None

    def _fire(self, reason: str) -> None:
        with self._lock:
            if self.notice is not None:
                return
            self.notice = reason
        log.warning("interruption notice: %s; draining", reason,
                    extra={"event": "interruption_notice", "reason": reason})
        try:
            self.on_notice(reason)
        except Exception:
            log.exception("interruption notice handler failed")

    def _get(self, path: str) -> str | None:
        """The body of a 200, or None for a 404. A rejected token (401) is renewed once."""
        for attempt in (1, 2):
            request = urllib.request.Request(self.endpoint + path,
                                             headers={TOKEN_HEADER: self._current_token()})
            try:
                with self._opener.open(request, timeout=self.timeout) as answer:
                    return str(answer.read(MAX_BODY).decode("utf-8", "replace"))
            except urllib.error.HTTPError as e:
                e.close()
                if e.code == 404:
                    return None
                if e.code == 401 and attempt == 1:
                    self._token = None  # expired or revoked: ask for a new one
                    continue
                raise _Unavailable(f"GET {path}: HTTP {e.code}") from None
            except (OSError, ValueError, http.client.HTTPException) as e:
                raise _Unavailable(f"GET {path}: {e}") from None
        raise _Unavailable(f"GET {path}: token rejected")  # pragma: no cover

    def _current_token(self) -> str:
        now = time.monotonic()
        if self._token is None or now >= self._token_renew_at:
            request = urllib.request.Request(self.endpoint + TOKEN_PATH, method="PUT",
                                             headers={TTL_HEADER: str(self.token_ttl)})
            try:
                with self._opener.open(request, timeout=self.timeout) as answer:
                    token = answer.read(MAX_BODY).decode("ascii", "replace").strip()
            except urllib.error.HTTPError as e:
                e.close()
                raise _Unavailable(f"PUT {TOKEN_PATH}: HTTP {e.code}") from None
            except (OSError, ValueError, http.client.HTTPException) as e:
                raise _Unavailable(f"PUT {TOKEN_PATH}: {e}") from None
            if not token:
                raise _Unavailable(f"PUT {TOKEN_PATH}: empty token")
            self._token = token
            # renew well before it expires: at the latest a minute (or half its life) early
            self._token_renew_at = now + self.token_ttl - min(60.0, self.token_ttl / 2)
        return self._token


def _spot_reason(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("action"):
        when = f" at {data['time']}" if data.get("time") else ""
        return f"Spot interruption notice: {data['action']}{when}"
    return f"Spot interruption notice: {body.strip()[:200]}"


#: Where Linux shows the machine's DMI data: on EC2's Nitro instances the board's asset tag
#: is the instance id, and the system vendor says "Amazon EC2".
DMI_DIR = "/sys/devices/virtual/dmi/id"
#: The IMDS's timeouts for the instance id, one per try: one short try off EC2 (every
#: command that names a worker asks), more patient ones on an EC2 instance, where a slow
#: answer at boot would give the worker another id than at its last start (its own
#: recovery would then miss what it held: those requests would wait for their leases).
TRIES_OFF_EC2 = (0.3,)
TRIES_ON_EC2 = (0.3, 1.0, 2.0, 4.0)

_INSTANCE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _dmi(name: str) -> str:
    try:
        with open(os.path.join(DMI_DIR, name), encoding="ascii", errors="replace") as f:
            return f.read(200).strip()
    except OSError:
        return ""


@functools.lru_cache(maxsize=8)
def instance_id(endpoint: str = DEFAULT_ENDPOINT) -> str | None:
    """This EC2 instance's id, or None off EC2 (answers cached). From the DMI asset tag of
    a Nitro instance when the IMDS is the default one (no request), else by IMDSv2: one
    0.3 s try, or up to four (0.3 to 4 s) where DMI says this is an EC2 instance."""
    if endpoint == DEFAULT_ENDPOINT and re.fullmatch(r"i-[0-9a-f]{8,17}", tag := _dmi(
            "board_asset_tag")):
        return tag
    tries = TRIES_ON_EC2 if _dmi("sys_vendor") == "Amazon EC2" else TRIES_OFF_EC2
    for timeout in tries:
        instance = _ask_instance_id(endpoint, timeout)
        if instance is not None:
            return instance if _INSTANCE.fullmatch(instance) else None
    return None


def _ask_instance_id(endpoint: str, timeout: float) -> str | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    base = endpoint.rstrip("/")
    try:
        ask = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        with opener.open(ask, timeout=timeout) as answer:
            token = answer.read(1000).decode()
        ask = urllib.request.Request(f"{base}/latest/meta-data/instance-id",
                                     headers={"X-aws-ec2-metadata-token": token})
        with opener.open(ask, timeout=timeout) as answer:
            instance: str = answer.read(100).decode().strip()
    except (OSError, ValueError, http.client.HTTPException):
        return None
    return instance
