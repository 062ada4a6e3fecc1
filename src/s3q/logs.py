"""Logging for the ``s3q`` command (the library never configures logging itself).

Two formats on stderr:

* JSON lines (for journald, CloudWatch, Loki …): ``time`` (ISO 8601, UTC), ``level``,
  ``logger``, ``message``, and every ``extra`` field the library attaches (``event``,
  ``request``, ``worker``, ``attempt`` …; see ``Queue._emit``), plus ``exc`` for exceptions.
* Human: ``HH:MM:SS level event request key=value ...`` (the message follows when it says
  more than the event), local time.

``setup_logging(level, json=None)`` picks JSON when stderr is not a terminal. When stderr is
the journal (systemd sets ``JOURNAL_STREAM`` to its device and inode), every line starts
with its syslog priority, ``<3>`` error … ``<7>`` debug, which journald strips and keeps
as the entry's priority: ``journalctl -p warning`` works.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["FailureRun", "HumanFormatter", "JournalPriority", "JsonFormatter",
           "setup_logging", "stream_is_journal", "teardown_logging"]

#: Third-party loggers kept at WARNING whatever the level (chatty; botocore logs bodies).
NOISY = ("botocore", "boto3", "s3transfer", "urllib3")

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return jsonlib.dumps(data, default=str, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """``HH:MM:SS level event request key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        fields = extra_fields(record)
        event = fields.pop("event", None)
        request = fields.pop("request", None)
        parts = [time.strftime("%H:%M:%S", time.localtime(record.created)),
                 f"{record.levelname.lower():<7}"]
        if event is None:
            parts.append(message)
        else:
            parts += [str(event)] + ([str(request)] if request is not None else [])
            parts += [_pair(k, v) for k, v in _flatten(fields)]
            if message.strip() != f"{event} {request or ''}".strip():
                parts.append(f"- {message}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _flatten(fields: dict[str, Any]) -> list[tuple[str, Any]]:
    """Nested dicts (e.g. the settings logged at start) as their own key=value pairs."""
    pairs: list[tuple[str, Any]] = []
    for key, value in fields.items():
        if isinstance(value, dict):
            pairs += [(str(k), v) for k, v in value.items()]
        elif value is not None:
            pairs.append((key, value))
    return pairs


def _pair(key: str, value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if not text or any(c.isspace() for c in text) or '"' in text:
        text = jsonlib.dumps(text, ensure_ascii=False)
    return f"{key}={text}"


#: syslog priorities of the log levels (sd-daemon(3): "<N>" line prefixes).
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
              logging.DEBUG: 7}


class JournalPriority(logging.Formatter):
    """Another formatter's lines, each prefixed with the record's syslog priority."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        level = max((lv for lv in PRIORITIES if lv <= record.levelno), default=logging.DEBUG)
        prefix = f"<{PRIORITIES[level]}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def stream_is_journal(stream: object, env: dict[str, str] | None = None) -> bool:
    """Is ``stream`` connected to journald (``JOURNAL_STREAM=<device>:<inode>`` names it)?"""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(stream.fileno())  # type: ignore[attr-defined]
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (AttributeError, OSError, ValueError):
        return False


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler this module installs (so that it can be found and replaced)."""

    #: The root logger's level before :func:`setup_logging`, restored by teardown.
    previous_level = logging.WARNING


def setup_logging(level: str, json: bool | None = None, *,
                  quiet_library: bool = False) -> None:
    """Log to stderr at ``level`` ("debug", "info", "warning", "error"), as JSON lines when
    ``json`` is true, or when it is None and stderr is not a terminal; with syslog
    priorities when stderr is the journal. ``quiet_library``: the library's loggers log
    warnings and errors only (one-shot commands: no line per request touched), the
    command's own (``s3q.cli``) at ``level``. Calling it again replaces the handler it
    installed before."""
    teardown_logging()
    use_json = not sys.stderr.isatty() if json is None else json
    handler = _Handler(sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if use_json else HumanFormatter()
    if stream_is_journal(sys.stderr):
        formatter = JournalPriority(formatter)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    handler.previous_level = root.level
    root.addHandler(handler)
    numeric = getattr(logging, level.upper())
    root.setLevel(numeric)
    if quiet_library:
        logging.getLogger("s3q").setLevel(max(numeric, logging.WARNING))
        logging.getLogger("s3q.cli").setLevel(numeric)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def teardown_logging() -> None:
    """Remove the handler :func:`setup_logging` installed, if any."""
    root = logging.getLogger()
    for name in ("s3q", "s3q.cli"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
        root.setLevel(handler.previous_level)
        handler.close()


class FailureRun:
    """A run of failures in a row said once, and its end (a failure every 15 s would be
    said 5,760 times a day): the first at WARNING, the next ones at DEBUG with their count
    ("(3 scrapes in a row)"), and the first success after them at INFO. ``what``: the
    plural of what fails ("scrapes"); each line's ``event`` is ``failed_event`` or
    ``ended_event``, its ``failed`` how many failed. Thread-safe (the exporter answers
    scrapes on several threads)."""

    def __init__(self, logger: logging.Logger, what: str, *, failed_event: str,
                 ended_event: str) -> None:
        self.log, self.what = logger, what
        self.failed_event, self.ended_event = failed_event, ended_event
        self._lock = threading.Lock()
        self.count = 0  # failures in a row

    def failed(self, message: str) -> None:
        with self._lock:
            self.count += 1
            n = self.count
        self.log.log(logging.WARNING if n == 1 else logging.DEBUG, "%s%s", message,
                     "" if n == 1 else f" ({n} {self.what} in a row)",
                     extra={"event": self.failed_event, "failed": n})

    def ended(self, message: str) -> None:
        """A success: the end of a run of failures, if any, is said (``message`` holds one
        ``%d``, how many failed)."""
        with self._lock:
            n, self.count = self.count, 0
        if n:
            self.log.info(message, n, extra={"event": self.ended_event, "failed": n})
