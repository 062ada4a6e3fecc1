"""``python -m s3q.runner module:function PATH NAME``: run a Python handler on a downloaded
request in this (child) process; its result goes to stdout. Used by ``--pool process``.
While the handler runs, what it writes to stdout (print(), a program it runs) goes to
stderr: stdout carries the result alone (written to its descriptor: a handler that
replaced ``sys.stdout`` to silence its prints loses no result). A handler raising
SystemExit (``sys.exit()``) fails its attempt, as in a thread: its code 0 would have been
taken for done. A process the handler forks does not inherit the result's pipe (kept on
another descriptor). With ``--say-returned`` first, :data:`s3q.handlers.RETURNED` follows
the result once the handler returned, and stdout ends there: a child ended without
returning (``os._exit(0)``) also exits 0, and must fail; one that returned is done, however
its process ends."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from s3q.handlers import RETURNED, LocalRequest, load_callable, result_bytes


def main(argv: list[str]) -> int:
    say_returned = argv[:1] == ["--say-returned"]
    if say_returned:
        argv = argv[1:]
    if len(argv) != 3:
        print("usage: python -m s3q.runner [--say-returned] module:function PATH NAME",
              file=sys.stderr)
        return 2
    spec, path, name = argv
    sys.stdout.flush()
    saved = os.dup(1)
    held = [saved]  # a process the handler forks does not keep the result's pipe open
    os.register_at_fork(after_in_child=lambda: _close(held))  # (a daemon would, unseen)
    os.dup2(2, 1)  # (file descriptor 1: programs the handler runs write there too)
    try:
        func = load_callable(spec)
        result = result_bytes(func(LocalRequest(name, Path(path),
                                                int(os.environ.get("S3Q_ATTEMPT", "1")))))
    except SystemExit as exc:  # sys.exit(0) would be exit 0, done: it fails, as in a thread
        raise RuntimeError(f"the handler raised SystemExit({exc.code!r})") from exc
    finally:
        for stream in {sys.stdout, sys.__stdout__}:  # (what it printed: to stderr)
            with contextlib.suppress(Exception):  # (one the handler put there, closed)
                stream.flush()  # type: ignore[union-attr]
        os.dup2(saved, 1)
        _close(held)
    # To the descriptor, not sys.stdout: the handler may have replaced it (os.devnull)
    view = memoryview((result or b"") + (RETURNED if say_returned else b""))
    while view:
        view = view[os.write(1, view):]
    if say_returned:  # ... and the end of stdout: its reader need not wait for the exit
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    return 0


def _close(fds: list[int]) -> None:
    while fds:
        os.close(fds.pop())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
