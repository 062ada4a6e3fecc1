"""Printing: versioned JSON, tables (rich: wide characters take their display width),
ages and times, progress bars on a terminal, and asking before doing something drastic."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from s3q.cli.errors import Failure
from s3q.store import ObjectInfo

#: The version of every ``--json`` document ("schema": "s3q.<kind>/<version>"); it changes
#: when a field changes meaning or goes away (new fields may appear within a version).
SCHEMA_VERSION = 1


def schema(kind: str) -> str:
    return f"s3q.{kind}/{SCHEMA_VERSION}"


def echo_json(kind: str, data: dict[str, object], *, compact: bool = False) -> None:
    """Print ``data`` as a JSON object of ``kind``, its ``"schema"`` first. Times in it must
    already be ISO 8601 UTC strings (:func:`iso`); durations are numbers of seconds."""
    doc = {"schema": schema(kind), **data}
    click.echo(json.dumps(doc, indent=None if compact else 2, ensure_ascii=False, default=str))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Aligned columns, two spaces apart, by display width (``日本`` takes four columns),
    never wrapped or cut (pipes to grep and awk see whole lines)."""
    grid = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0),
                 header_style="", show_header=True)
    for header in headers:
        grid.add_column(header, no_wrap=True, overflow="ignore")
    for row in rows:
        grid.add_row(*(Text(str(cell)) for cell in row))  # Text: no [markup] in names
    out = io.StringIO()
    Console(file=out, width=1_000_000, color_system=None, highlight=False, markup=False,
            emoji=False, soft_wrap=False).print(grid)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def iso(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC (``2026-11-02T10:15:00Z``), the form of every time in
    ``--json`` and in the tables."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


@contextlib.contextmanager
def progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """``advance(n)`` for a progress bar on stderr, drawn only when stderr is a terminal
    (``total`` None: a count and a spinner)."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    columns = [SpinnerColumn(), TextColumn(label), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()] + ([TimeRemainingColumn()] if total is not None else [])
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
