"""What a worker runs for each request: a Python callable, or any program.

A handler is ``Callable[[Request], bytes | str | None]``; what it returns (if anything) is
kept as the request's result (another type of value fails the attempt). Raising fails the
attempt (retried with backoff until ``max_attempts``). A :class:`s3q.job.Job` is a
Request; so is :class:`LocalRequest`, which is what a handler gets when it runs in a child
process.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

from s3q.context import message_of
from s3q.handlercheck import check_callable, check_script, check_shebang
from s3q.job import Job

__all__ = ["RETURNED", "ExecHandler", "Handler", "HandlerError", "HandlerTimeout",
           "HandlerUnavailable", "LocalRequest", "Request", "load_callable", "process_handler",
           "result_bytes"]

log = logging.getLogger("s3q.handlers")

#: The most of a program's stdout kept as its result, and of its stderr kept in errors.
MAX_RESULT = 256 * 1024
STDERR_TAIL = 4000
#: What ``python -m s3q.runner --say-returned`` (``--pool process``) writes to stdout after
#: the result once its handler returned: a child that exits 0 without it never finished
#: (``os._exit(0)``, a C library's ``exit(0)``) and fails its attempt.
RETURNED = b"\0s3q: the handler returned\n"


class Request(Protocol):
    """What a handler is given."""

    @property
    def name(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    def open(self) -> BinaryIO: ...
    def read(self) -> bytes: ...


Handler = Callable[[Job], bytes | str | None]


class HandlerError(Exception):
    """A program handler failed (non-zero exit); the message holds its stderr tail."""


class HandlerTimeout(HandlerError):
    """A program handler ran longer than the job timeout and was killed."""


class HandlerUnavailable(HandlerError):
    """The program could not be started at all (missing, not executable): the worker's
    fault, never the request's (see :mod:`s3q.breaker`)."""


class LocalRequest:
    """A request already downloaded to a local file (for handlers in child processes)."""

    def __init__(self, name: str, path: Path, attempt: int) -> None:
        self.name, self.path, self.attempt = name, path, attempt

    def open(self) -> BinaryIO:
        return self.path.open("rb")

    def read(self) -> bytes:
        return self.path.read_bytes()


def result_bytes(result: object) -> bytes | None:
    """What a handler returned, as the request's result: bytes (or bytes-like), str (as
    UTF-8) or None. Any other value is the handler's mistake: TypeError, which fails the
    attempt (it must not fail the completion, which would leave the lease to expire)."""
    if result is None or isinstance(result, bytes):
        return result
    if isinstance(result, str):
        return result.encode()
    if isinstance(result, (bytearray, memoryview)):
        return bytes(result)
    raise TypeError(f"the handler returned a {type(result).__name__}: a handler returns "
                    "bytes, str or None (the request's result)")


def load_callable(spec: str) -> Callable[..., bytes | str | None]:
    """``package.module:function`` → the function (clear errors for bad specs)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"handler {spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"handler {spec!r}: cannot import {module_name!r}: {exc}") from exc
    except (Exception, SystemExit) as exc:  # its import raised: a SyntaxError, a KeyError
        # of a variable it needs, its own sys.exit(): a handler that cannot load as well
        raise ValueError(f"handler {spec!r}: cannot import {module_name!r}: "
                         f"{type(exc).__name__}: {message_of(exc)}") from exc
    target: object = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"handler {spec!r}: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    check_callable(spec, attr, target)
    return cast("Callable[..., bytes | str | None]", target)


class ExecHandler:
    """Run a program for each request: the request is streamed to a temporary file,
    ``{path}`` and ``{name}`` in the command are replaced (after splitting, so no shell is
    involved), and S3Q_REQUEST_NAME / S3Q_REQUEST_PATH / S3Q_ATTEMPT / S3Q_WORKER_ID are set.
    Exit code 0 = done (stdout, up to MAX_RESULT, is the result; a larger one is dropped,
    with a warning); anything else fails the attempt with the tail of stderr. The program
    runs in its own process group, killed as a whole on timeout, when the lease is lost, or
    when the worker gives the job back."""

    def __init__(self, command: str | list[str], timeout: float | None = None, *,
                 returned: bytes = b"") -> None:
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise ValueError("exec handler: empty command")
        self.timeout = timeout or None
        #: What the program's stdout ends with when it is done (not part of the result)
        self.returned = returned

    def check(self) -> str:
        """Can the program run at all? Its path (resolved on PATH, as exec would), else
        ValueError saying why: a worker refuses to start rather than fail every request.
        A script's ``#!`` interpreter is checked too, and so is the script or module an
        interpreter is given (``python process.py``: :func:`s3q.handlercheck.check_script`)."""
        program = self.argv[0]
        if "{path}" in program or "{name}" in program:
            return program  # known only per request
        if "/" in program:  # relative to the worker's directory, as the program runs there
            if not os.path.isfile(program):
                raise ValueError(f"--exec: cannot run {program!r}: no such file")
            if not os.access(program, os.X_OK):
                raise ValueError(f"--exec: cannot run {program!r}: not executable")
            found = program
        else:
            which = shutil.which(program)
            if which is None:
                raise ValueError(f"--exec: cannot run {program!r}: not found on PATH "
                                 f"({os.environ.get('PATH', '')})")
            found = which
        check_shebang(program, found)
        interpreter = _shebang(found)
        if interpreter is not None and not (os.path.isfile(interpreter)
                                            and os.access(interpreter, os.X_OK)):
            raise ValueError(f"--exec: cannot run {program!r}: its interpreter "
                             f"{interpreter!r} (#! line) does not exist or is not executable")
        check_script(self.argv, found)
        return found

    def __call__(self, job: Job) -> bytes | None:
        with tempfile.TemporaryDirectory(prefix="s3q-job-") as tmp:
            path = job.download(Path(tmp) / _safe_basename(job.name))
            argv = [a.replace("{path}", str(path)).replace("{name}", job.name)
                    for a in self.argv]
            env = {**os.environ, "S3Q_REQUEST_NAME": job.name, "S3Q_REQUEST_PATH": str(path),
                   "S3Q_ATTEMPT": str(job.attempt), "S3Q_WORKER_ID": job.worker_id}
            return self._run(job, argv, env)

    def _run(self, job: Job, argv: list[str], env: dict[str, str]) -> bytes | None:
        # The program runs in the worker's working directory (relative paths in the command
        # resolve as they would in a shell there); only the request file is in a temp dir.
        # Its own session and process group (killed as a whole), and it dies with the
        # worker even when the worker is SIGKILLed (PR_SET_PDEATHSIG). preexec_fn and
        # threads: the child runs only prctl (resolved in the parent) and getppid, which
        # take no lock another thread could hold at the fork.
        try:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True,
                                    preexec_fn=_die_with_worker(os.getpid()))  # noqa: PLW1509
        except OSError as exc:
            raise HandlerUnavailable(f"cannot start {argv[0]!r}: {exc}") from exc
        job.on_interrupt(lambda _job: _kill_group(proc))
        out: deque[bytes] = deque()
        err: deque[bytes] = deque()
        out_size = [0]
        readers = [_drain(proc.stdout, out, MAX_RESULT + len(self.returned), out_size),
                   _drain(proc.stderr, err, STDERR_TAIL, [0])]
        try:
            code = self._wait(proc, out, readers[0], job.name)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            raise HandlerTimeout(
                f"{argv[0]} timed out after {self.timeout:g}s and was killed; "
                f"stderr: {_tail(err)}") from None
        finally:
            if _end_group(proc.pid):
                log.warning("%s: %s left processes running in its process group when it "
                            "exited; stopped (SIGTERM, SIGKILL %gs later): a job's processes "
                            "end with it", job.name, argv[0], KILL_GRACE,
                            extra={"event": "handler_leftovers", "request": job.name})
            for reader in readers:
                reader.join(timeout=5)
        if code != 0:
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise HandlerError(f"{argv[0]} failed ({how}); stderr: {_tail(err)}")
        size = out_size[0] - len(self.returned)
        if self.returned and not b"".join(out).endswith(self.returned):
            raise HandlerError(f"{argv[0]} exited 0 without its handler returning (os._exit"
                               f"(0), or a library's exit(0)?); stderr: {_tail(err)}")
        if size > MAX_RESULT:  # (its output, not a result: kept in no memory)
            log.warning("%s: %s wrote %d bytes to stdout, more than a result may have (%d): "
                        "completed without a result", job.name, argv[0], size,
                        MAX_RESULT, extra={"event": "result_dropped", "request": job.name,
                                           "size": size})
            return None
        return b"".join(out)[:size] if size else None

    def _wait(self, proc: subprocess.Popen[bytes], out: deque[bytes],
              reader: threading.Thread, name: str) -> int:
        """The exit code. With ``returned``, once stdout ended with it (the handler returned,
        its result whole) the job is done: a child that then does not exit within KILL_GRACE
        (threads its handler left) is stopped, one that crashes at its exit counts as 0."""
        if not self.returned:
            return proc.wait(self.timeout)
        reader.join(self.timeout)  # (s3q.runner ends its stdout once it wrote RETURNED)
        done = b"".join(out).endswith(self.returned)
        try:
            code = proc.wait(KILL_GRACE if done else 0 if reader.is_alive() else self.timeout)
            how = f"then ended with exit code {code}"
        except subprocess.TimeoutExpired:
            if not done:
                raise
            _kill_group(proc)
            code = proc.wait()
            how = f"did not exit within {KILL_GRACE:g}s (threads it left running?): stopped"
        if done and code:
            log.warning("%s: the handler returned, but its process %s", name, how,
                        extra={"event": "handler_leftovers", "request": name})
        return 0 if done else code


def process_handler(spec: str, timeout: float | None = None) -> ExecHandler:
    """A Python callable run in a child process per request (for CPU-bound handlers):
    it receives a :class:`LocalRequest`."""
    load_callable(spec)  # fail at start, not per request
    return ExecHandler([sys.executable, "-m", "s3q.runner", "--say-returned", spec, "{path}",
                        "{name}"], timeout, returned=RETURNED)


def _shebang(path: str) -> str | None:
    """The interpreter a script's ``#!`` line names (None: not a script)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    return words[0] if words else None


#: prctl(2) option: the signal a process gets when its parent (thread) dies.
PR_SET_PDEATHSIG = 1
try:  # resolved once, in the parent: the child only calls it between fork and exec
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_worker(worker_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the handler's process when the worker
    dies (also by SIGKILL, which no cleanup of ours survives). Linux only; elsewhere the
    process group kill on stop and timeout is what there is. Note: the handler's own
    children are in its process group, not covered by this signal (systemd's cgroup is)."""
    prctl = _prctl
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != worker_pid:  # the worker died before the request took effect
            os._exit(1)

    return preexec


def _safe_basename(name: str) -> str:
    """The request file's name: the last segment of ``name``, its tail (the extension kept)
    of at most 100 UTF-8 bytes (a file name holds 255; a key's segment may hold 1,024)."""
    base = name.rsplit("/", 1)[-1]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in base)
    while len(safe.encode()) > 100:
        safe = safe[1:]
    return safe or "request"


#: Seconds between SIGTERM and SIGKILL when a handler's process group is stopped.
KILL_GRACE = 5.0


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the handler's whole process group, SIGKILL it KILL_GRACE seconds later."""
    def signal_group(sig: signal.Signals) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    signal_group(signal.SIGTERM)
    timer = threading.Timer(KILL_GRACE, signal_group, args=(signal.SIGKILL,))
    timer.daemon = True
    timer.start()


def _end_group(pgid: int) -> bool:
    """(Its program has exited and was reaped.) Stop what it left running in its process
    group: SIGTERM, then SIGKILL KILL_GRACE seconds later for what still runs, and wait
    (as long again at most) until it is gone. Returns whether anything was left. (A
    group's id names no other process while any member lives, so a signal to it reaches
    only what the program left. Members that exited but nobody reaped yet, such as a
    child that ended just before it, left nothing running: no signal, no warning.)"""
    if not _group_lives(pgid):  # (most often one failed kill(2): the group is gone)
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    deadline, killed = time.monotonic() + KILL_GRACE, False
    while _group_lives(pgid) and time.monotonic() < deadline + KILL_GRACE:
        if not killed and time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    return True


def _group_lives(pgid: int) -> bool:
    """Does a process of group ``pgid`` run (members that died but that no process reaped
    yet, such as an init that reaps nothing, do not count)?"""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return True  # (no /proc: a member answers, so count it as running)
    for pid in entries:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state, _ppid, pgrp = f.read().rsplit(b")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(pgrp) == pgid and state != b"Z":
            return True
    return False


def _drain(stream: IO[bytes] | None, into: deque[bytes], keep: int, total: list[int],
           ) -> threading.Thread:
    """Read a pipe to its end in a thread (so the program never blocks on a full pipe),
    keeping about its last ``keep`` bytes in ``into`` and its total size in ``total[0]``.
    Each read takes what is there (not 64 KiB or the end): a process the program left in
    a session of its own may hold the pipe open long after the program's exit."""
    def run() -> None:
        assert stream is not None
        size, fd = 0, stream.fileno()
        for chunk in iter(lambda: os.read(fd, 65536), b""):
            into.append(chunk)
            size += len(chunk)
            total[0] += len(chunk)
            while len(into) > 1 and size - len(into[0]) >= keep:
                size -= len(into.popleft())
        stream.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _tail(chunks: deque[bytes]) -> str:
    text = b"".join(chunks)[-STDERR_TAIL:].decode("utf-8", "replace").strip()
    return text or "(empty)"
