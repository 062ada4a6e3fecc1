"""Presentation helpers of the dashboard: ages and times, the throughput chart (an SVG
drawn on the server), and a safe preview of a request's body."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from s3q.durations import age

__all__ = ["Bar", "Preview", "age", "chart", "preview", "when"]

PREVIEW_BYTES = 4096


def when(ts: float | None) -> str:
    """An epoch time as ISO 8601 UTC."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    label: str  # "HH:MM"


@dataclass(frozen=True, slots=True)
class Chart:
    bars: list[Bar]
    width: int
    height: int
    peak: int
    total: int
    ticks: list[tuple[float, str, str]]  # (x, "HH:MM", text-anchor) under the axis


def chart(per_minute: list[int], *, width: int = 720, height: int = 160,
          now: float | None = None) -> Chart:
    """Bars, one per minute (the last is the current minute), scaled to the peak."""
    now = time.time() if now is None else now
    n = max(1, len(per_minute))
    peak = max(per_minute, default=0)
    plot_h = height - 20
    step = width / n
    last = int(now // 60)
    bars, ticks = [], []
    for i, count in enumerate(per_minute):
        minute = last - (n - 1 - i)
        label = datetime.fromtimestamp(minute * 60, UTC).strftime("%H:%M")
        h = 0.0 if peak == 0 else max(1.0, plot_h * count / peak) if count else 0.0
        bars.append(Bar(round(i * step + 1, 1), round(plot_h - h, 1), round(step - 2, 1),
                        round(h, 1), count, label))
        if (n - 1 - i) % 15 == 0:
            anchor = "end" if i == n - 1 else "middle"
            ticks.append((round(i * step + (step if i == n - 1 else step / 2), 1), label,
                          anchor))
    return Chart(bars, width, height, peak, sum(per_minute), ticks)


@dataclass(frozen=True, slots=True)
class Preview:
    kind: str  # "json", "text", "binary" or "empty"
    text: str  # shown in a <pre>, escaped by the template
    truncated: bool
    size: int


def preview(head: bytes, size: int) -> Preview:
    """The first PREVIEW_BYTES of a body, as text (JSON pretty-printed when the whole body
    is there and parses), or as a hex dump when it is not text. Never interpreted as HTML:
    the template escapes it."""
    chunk = head[:PREVIEW_BYTES]
    truncated = size > len(chunk)
    if not chunk:
        return Preview("empty", "", False, size)
    try:
        text = chunk.decode("utf-8")
        binary = "\x00" in text
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the end of the chunk is still text
        binary = not (truncated and e.start >= len(chunk) - 3)
        text = chunk[: e.start].decode("utf-8") if not binary else ""
    if binary:
        lines = [f"{off:08x}  {chunk[off:off + 16].hex(' '):<47}  "
                 + "".join(chr(b) if 32 <= b < 127 else "." for b in chunk[off:off + 16])
                 for off in range(0, min(len(chunk), 512), 16)]
        return Preview("binary", "\n".join(lines), size > 512, size)
    if not truncated:
        try:
            return Preview("json", json.dumps(json.loads(text), indent=2, ensure_ascii=False),
                           False, size)
        except ValueError:
            pass
    printable = "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)
    return Preview("text", printable, truncated, size)
