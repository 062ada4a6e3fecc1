"""The host-wide lock of a worker id on a queue (:func:`one_per_host`)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from s3q.errors import ConfigError

__all__ = ["RUN_DIR", "HostLockHeld", "lock_dirs", "one_per_host"]


class HostLockHeld(ConfigError):
    """Another process on this host holds the lock of (queue, worker id)."""

    def __init__(self, message: str, *, worker_id: str, queue_url: str, path: Path) -> None:
        super().__init__(message)
        self.worker_id = worker_id
        self.queue_url = queue_url
        self.path = path


#: The deployed unit's runtime directory (``RuntimeDirectory=s3q``, kept after it stops):
#: where it exists, every process of the host locks there, the unit's worker (whose /tmp is
#: private to it) and an operator's shell alike.
RUN_DIR = "/run/s3q"


def lock_dirs() -> list[Path]:
    """Where lock files are: $S3Q_LOCK_DIR; else :data:`RUN_DIR` if it exists, then the
    temporary directory (for a lock that cannot be made in the former: another user's)."""
    env = os.environ.get("S3Q_LOCK_DIR")
    if env:
        return [Path(env)]
    tmp = Path(tempfile.gettempdir())
    return [Path(RUN_DIR), tmp] if os.path.isdir(RUN_DIR) else [tmp]


def _open(name: str) -> tuple[int, Path]:
    """The lock file ``name`` in the first of :func:`lock_dirs` that has or takes it: one
    this user cannot write (the unit's, to an operator) is opened read-only (flock needs no
    write); where none is and none can be made (the unit's directory, to another user), the
    next directory."""
    dirs = lock_dirs()
    for i, lock_dir in enumerate(dirs):
        path = lock_dir / name
        last = i == len(dirs) - 1
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644), path
        except PermissionError:
            try:
                return os.open(path, os.O_RDONLY), path
            except OSError as e:
                if last:
                    raise ConfigError(f"worker_id: cannot open the lock file {path} "
                                      f"({e.strerror}); run as the worker's user, or set "
                                      "S3Q_LOCK_DIR") from None
        except OSError as e:
            if last:
                raise ConfigError(f"worker_id: cannot open the lock file {path} "
                                  f"({e.strerror}); set S3Q_LOCK_DIR to a writable "
                                  "directory") from None
    raise AssertionError("unreachable: lock_dirs() is never empty")


@contextlib.contextmanager
def one_per_host(worker_id: str, queue_url: str) -> Iterator[None]:
    """Hold a host-wide lock on (queue, worker id): two live workers with one id on one
    queue would take each other's work back at start (own recovery); on two queues they do
    not meet. Lock files live in :func:`lock_dirs`. Raises HostLockHeld (a ConfigError)
    when another process holds it. ``s3q recover --mine`` takes it too, so that it never
    takes the live jobs of a running worker with its id."""
    digest = hashlib.sha256(f"{queue_url}\n{worker_id}".encode()).hexdigest()[:16]
    fd, path = _open(f"s3q-worker-{digest}.lock")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HostLockHeld(
                f"worker_id: another worker with id {worker_id!r} is running on this host "
                f"for {queue_url} (lock {path}); give each worker process its own "
                "--worker-id", worker_id=worker_id, queue_url=queue_url, path=path) from None
        with contextlib.suppress(OSError):  # (read-only: the owner's note stays)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {worker_id} {queue_url}\n".encode())
        yield
    finally:
        os.close(fd)
