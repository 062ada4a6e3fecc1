"""Printing: JSON, aligned tables, ages and times, and asking before doing something
drastic."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import click

from s3q.cli.errors import Failure
from s3q.store import ObjectInfo


def echo_json(data: object, *, compact: bool = False) -> None:
    click.echo(json.dumps(data, indent=None if compact else 2, ensure_ascii=False, default=str))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Aligned columns, two spaces apart."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def age(seconds: float | None) -> str:
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


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def one_line(text: object, limit: int = 80) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def object_fields(info: ObjectInfo) -> dict[str, object]:
    """An object's size, Last-Modified and ETag, as ``--json`` shows them."""
    return {"size": info.size, "last_modified": iso(info.last_modified), "etag": info.etag}


def is_interactive() -> bool:
    return sys.stdin.isatty()


def confirm(question: str, *, refusal: str, yes: bool) -> None:
    """Go on with ``--yes``; else ask ``question`` on a terminal (no: exit 1, "aborted"),
    and elsewhere stop with ``refusal`` (exit 2)."""
    if yes:
        return
    if not is_interactive():
        raise Failure(refusal)
    click.confirm(question, abort=True, err=True)
