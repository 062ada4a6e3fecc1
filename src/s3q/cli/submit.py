"""``s3q submit``: files, directories, globs and standard input into wait/."""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import re
import sys
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import click

from s3q import layout
from s3q.cli.errors import EXIT_STORE, EXIT_USAGE, Failure
from s3q.cli.options import App, S3qCommand, json_option, setting_options
from s3q.cli.output import echo_json, progress
from s3q.queue import Queue
from s3q.store import InvalidKey, ObjectInfo, StoreError, validate_key


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    path: Path | None  # None: standard input


@click.command(cls=S3qCommand, examples=[
    "s3q submit ./incoming/                 # a directory, recursively",
    "s3q submit 'in/**/*request.json'       # a glob (named below its fixed part)",
    "producer | s3q submit - --name 2026/11/a_request.json"])
@click.argument("files", nargs=-1, required=True)
@click.option("--name", metavar="NAME", help="The request's name (for one file, or - for "
              "stdin, which needs it).")
@json_option
@setting_options("filter", "concurrency")
def submit(files: tuple[str, ...], name: str | None, as_json: bool) -> None:
    """Put files into wait/ as requests.

    FILES are files (named by their base name), directories (recursively, named by their
    path inside the directory), glob patterns (named by their path below the pattern's
    fixed part) and - for standard input (needs --name). Every name must match the filter,
    and fit the store's keys; otherwise nothing is submitted."""
    app = App()
    sources = collect_sources(files, name)
    check_names(sources, app.config.filter)
    queue = app.open_queue(create=True)
    check_lengths(queue, sources)
    infos = upload(queue, sources, app.config.concurrency)
    if as_json:
        echo_json("submit", {"queue": queue.store.url, "requests": [
            {"name": s.name, "size": i.size, "etag": i.etag}
            for s, i in zip(sources, infos, strict=True)]})
    else:
        click.echo(f"submitted {len(infos)} request(s) to {queue.store.url}/{layout.WAIT}")


def collect_sources(args: Sequence[str], name: str | None) -> list[Source]:
    if "-" in args:
        if name is None:
            raise click.UsageError("'-' (standard input) needs --name")
        if len(args) > 1:
            raise click.UsageError("'-' (standard input) cannot be combined with files")
        return [Source(validate_key(name), None)]
    if name is not None:
        if len(args) > 1 or not Path(args[0]).is_file():
            raise click.UsageError("--name names one file (or '-' for standard input)")
        return [Source(validate_key(name), Path(args[0]))]
    sources = [source for arg in args for source in _sources_of(arg)]
    seen: dict[str, Source] = {}
    for s in sources:
        validate_key(s.name)
        if s.name in seen:
            raise Failure(f"two files would be submitted as {s.name!r}: "
                          f"{seen[s.name].path} and {s.path}")
        seen[s.name] = s
    if not sources:
        raise Failure(f"nothing to submit in {' '.join(args)}")
    return sources


def _sources_of(arg: str) -> list[Source]:
    path = Path(arg)
    if path.is_dir():
        return _files_below(path, path)
    if path.is_file():
        return [Source(path.name, path)]
    if has_magic(arg):
        return _glob_sources(arg)
    raise Failure(f"{arg}: no such file or directory")


def has_magic(pattern: str) -> bool:
    return re.search(r"[*?[]", pattern) is not None


def _files_below(directory: Path, base: Path) -> list[Source]:
    """Every file in ``directory`` (recursively, sorted), named by its path below ``base``."""
    return [Source(p.relative_to(base).as_posix(), p)
            for p in sorted(p for p in directory.rglob("*") if p.is_file())]


def _glob_sources(pattern: str) -> list[Source]:
    """Matches of a glob the shell did not expand, named relative to its fixed part
    (``in/**/*.json`` → ``2026/a.json`` for ``in/2026/a.json``)."""
    parts = Path(pattern).parts
    fixed = next(i for i, p in enumerate(parts) if has_magic(p))
    base = Path(*parts[:fixed]) if fixed else Path()
    sources: list[Source] = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        if path.is_dir():
            sources += _files_below(path, base)
        elif path.is_file():
            sources.append(Source(path.relative_to(base).as_posix(), path))
    if not sources:
        raise Failure(f"{pattern}: no file matches")
    return sources


def check_names(sources: Sequence[Source], pattern: str) -> None:
    bad = [s.name for s in sources if not fnmatch.fnmatchcase(s.name, pattern)]
    if bad:
        raise Failure(f"{len(bad)} name(s) do not match the filter {pattern!r} (e.g. "
                      f"{bad[0]!r}), so no worker would pick them up; nothing was submitted "
                      "(submit only matching files, e.g. with a glob, or change --filter)")


def check_lengths(queue: Queue, sources: Sequence[Source]) -> None:
    """Every name fits the store's keys (``Queue.submit`` refuses one that does not): else
    nothing is submitted, rather than the files uploaded before it."""
    bad = [s.name for s in sources if not queue.ctx.fits(s.name)]
    if bad:
        most = layout.longest_name(queue.store.max_key_bytes)
        raise Failure(f"{len(bad)} name(s) too long for this store (e.g. {bad[0][:60]!r}…, "
                      f"{len(bad[0].encode())} bytes): s3q keeps a request under keys up to "
                      f"{layout.longest_key('')}NAME, so names of at most {most} bytes "
                      "(UTF-8) fit; nothing was submitted (shorten them, or use a queue "
                      "with a shorter prefix)")


def upload(queue: Queue, sources: Sequence[Source], threads: int) -> list[ObjectInfo]:
    """Submit all sources, ``threads`` at a time, with a progress bar on a terminal."""

    def put(source: Source) -> ObjectInfo:
        if source.path is None:
            return queue.submit(source.name, sys.stdin.buffer)
        return queue.submit(source.name, source.path)

    with contextlib.ExitStack() as stack:
        advance = stack.enter_context(progress("submitting", len(sources)))
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=threads))
        futures: list[Future[ObjectInfo]] = [pool.submit(put, s) for s in sources]
        pending: set[Future[ObjectInfo]] = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            advance(len(done))
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                pool.shutdown(cancel_futures=True)
                ok = sum(1 for f in futures if f.done() and not f.cancelled()
                         and f.exception() is None)
                name = sources[futures.index(failed)].name
                raise _upload_failure(name, failed.exception(), ok, len(sources))
        return [f.result() for f in futures]


def _upload_failure(name: str, error: BaseException | None, ok: int, total: int) -> Failure:
    if not isinstance(error, StoreError | OSError):
        raise error or AssertionError("no error")  # a bug: let it show
    code = EXIT_USAGE if isinstance(error, InvalidKey | OSError) else EXIT_STORE
    return Failure(f"{name}: {error} ({ok} of {total} submitted before the error)", code)
