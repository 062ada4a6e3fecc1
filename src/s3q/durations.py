"""Durations as people write them: ``30s``, ``5m``, ``1h30m``, ``7d``, or a plain number of
seconds. The one parser behind every duration setting (``lease_ttl``, ``grace``, …) and
every duration flag (``--older-than``, ``--max-age``, ``--watch``); the units themselves
are parsed by ``pytimeparse`` (weeks, days, hours, minutes, seconds, ``1:30`` clocks)."""

from __future__ import annotations

import math

from pytimeparse.timeparse import timeparse as _timeparse

__all__ = ["DURATION_HELP", "age", "parse_duration"]

#: How to write a duration, for error messages and help texts.
DURATION_HELP = "seconds, or a number with a unit: 30s, 5m, 1h, 7d, 1h30m"


def parse_duration(value: object) -> float:
    """Seconds in ``value``: an int or float (seconds), or text such as ``"90"``, ``"1.5"``,
    ``"30s"``, ``"5m"``, ``"1h30m"``, ``"7d"``. Raises ValueError for anything else,
    including negative, infinite and NaN values."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)  # a plain number: seconds, as before units existed
        except ValueError:
            parsed = _timeparse(text) if text and text[0] not in "+-" else None
            if parsed is None:
                raise ValueError(f"{value!r} is not a duration ({DURATION_HELP})") from None
            seconds = float(parsed)
    else:
        raise ValueError(f"{value!r} is not a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration ({DURATION_HELP}; not negative)")
    return seconds


def age(seconds: float | None) -> str:
    """A duration as an operator reads it (``45s``, ``3m05s``, ``2h10m``, ``4d03h``; ``-``
    for None): the CLI's tables and the dashboard's pages."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
