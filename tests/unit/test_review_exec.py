"""The exec handler's end of a program's process group (found in review)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from pathlib import Path

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from s3q.handlers import ExecHandler
from s3q.worker import Worker, WorkerOptions

PR_SET_CHILD_SUBREAPER = 36


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: prctl")
def test_a_child_that_exited_unreaped_is_no_leftover(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A program whose child exited before it (a zombie nobody reaped yet: its new parent,
    as the worker running as a container's PID 1 is, reaps nothing) left nothing running:
    no handler_leftovers warning, and no SIGTERM to a group that runs nothing."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    assert prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0  # orphans come to this process
    pidfile = tmp_path / "child.pid"
    program = tmp_path / "program.py"  # a child that exits at once, never waited for
    program.write_text("import subprocess, sys, time\n"
                       "p = subprocess.Popen(['true'])\n"
                       f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
                       "while open(f'/proc/{p.pid}/stat').read().rsplit(')', 1)[1].split()[0]"
                       " != 'Z':\n"
                       "    time.sleep(0.01)  # (until it exited: a zombie, not reaped)\n"
                       "p.returncode = 0  # (no wait at exit: it stays a zombie)\n"
                       "print('done', end='')\n")
    q = Queue(MemoryStore("exec-review"), QueueConfig(lease_ttl=6.0))
    q.submit("a_request.json", b"{}")
    try:
        with caplog.at_level(logging.WARNING, logger="s3q.handlers"):
            Worker(q, ExecHandler([sys.executable, str(program)]),
                   WorkerOptions("w", burst=True)).run()
    finally:
        prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        if pidfile.exists():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(pidfile.read_text()), 0)
    assert q.result("a_request.json") == b"done"
    leftovers = [r for r in caplog.records if getattr(r, "event", "") == "handler_leftovers"]
    assert leftovers == [], "a zombie reported as a process left running"


def test_a_stdout_too_large_to_be_the_result_is_said_so(
        caplog: pytest.LogCaptureFixture) -> None:
    """A program that exits 0 after writing more than MAX_RESULT to stdout completes its
    request without a result, and the worker says so (``result_dropped``, with the size):
    it dropped the output silently, and ``s3q result`` then said the handler 'returned
    nothing'."""
    from s3q.handlers import MAX_RESULT

    q = Queue(MemoryStore("exec-review-stdout"), QueueConfig(lease_ttl=6.0))
    q.submit("a_request.json", b"{}")
    script = f"import sys; sys.stdout.write('x' * {MAX_RESULT + 1})"
    with caplog.at_level(logging.WARNING, logger="s3q.handlers"):
        stats = Worker(q, ExecHandler([sys.executable, "-c", script]),
                       WorkerOptions("w", burst=True)).run()
    assert stats.completed == 1 and q.result("a_request.json") is None
    [dropped] = [r for r in caplog.records if getattr(r, "event", "") == "result_dropped"]
    assert dropped.getMessage().count(str(MAX_RESULT + 1)) == 1
    assert getattr(dropped, "request", None) == "a_request.json"


@pytest.mark.parametrize("code", [0, 3])
def test_a_process_left_holding_the_programs_pipes_keeps_neither_result_nor_stderr(
        tmp_path: Path, code: int) -> None:
    """A program that starts a process of its own session (setsid, as docs/OPERATIONS.md
    tells one meant to outlive its job to do) which inherits its stdout and stderr: its
    pipes see no end while that process runs. What the program wrote is still its result
    (exit 0) or its error's stderr tail (else). Each pipe was read 64 KiB at a time, so a
    smaller output waited for an end that came only after the worker stopped waiting: the
    result was dropped and the error said 'stderr: (empty)'."""
    pidfile = tmp_path / "daemon.pid"
    program = tmp_path / "program.py"
    program.write_text(
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
        "                     start_new_session=True)\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "print('the result', end='', flush=True)\n"
        "print('the reason', file=sys.stderr, flush=True)\n"
        f"sys.exit({code})\n")
    q = Queue(MemoryStore(f"exec-review-pipes-{code}"), QueueConfig(lease_ttl=6.0,
                                                                    max_attempts=1))
    q.submit("a_request.json", b"{}")
    try:
        Worker(q, ExecHandler([sys.executable, str(program)]),
               WorkerOptions("w", burst=True)).run()
    finally:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), 9)
    if code == 0:
        assert q.result("a_request.json") == b"the result"
    else:
        record = q.error_record("a_request.json")
        assert record is not None and "the reason" in record.error["message"]


def test_a_long_unicode_name_still_gets_its_file(tmp_path: Path) -> None:
    """The request file the program gets is named after the request's last segment, its
    last 100 characters: those of a name another S3 client gave it (90 kanji and ".json",
    275 UTF-8 bytes: S3 takes keys of 1,024) were more than a file name holds (255 bytes on
    Linux), so the file could not be created, every attempt failed with OSError (File name
    too long) without running the program, and the request ended in failed/. The file's
    name is cut to what a file name holds; the program runs and gets the bytes."""
    name = "2026/" + "報" * 90 + ".json"
    q = Queue(MemoryStore("exec-review-long-name"), QueueConfig(lease_ttl=6.0,
                                                                max_attempts=1))
    q.submit(name, "本文".encode())
    script = ("import os, sys; p = sys.argv[1]; "
              "sys.stdout.buffer.write(open(p, 'rb').read() + os.path.basename(p).encode())")
    stats = Worker(q, ExecHandler([sys.executable, "-c", script, "{path}"]),
                   WorkerOptions("w", burst=True)).run()
    assert stats.completed == 1, q.error_record(name)
    result = q.result(name)
    assert result is not None and result.startswith("本文".encode())
    basename = result[len("本文".encode()):]
    assert basename.endswith(b".json") and len(basename) <= 255
