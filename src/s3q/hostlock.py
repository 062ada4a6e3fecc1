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

__all__ = ["one_per_host"]


@contextlib.contextmanager
def one_per_host(worker_id: str, queue_url: str) -> Iterator[None]:
    """Hold a host-wide lock on (queue, worker id): two live workers with one id on one
    queue would take each other's work back at start (own recovery); on two queues they do
    not meet. Lock files live in $S3Q_LOCK_DIR (default: the temporary directory)."""
    lock_dir = Path(os.environ.get("S3Q_LOCK_DIR") or tempfile.gettempdir())
    digest = hashlib.sha256(f"{queue_url}\n{worker_id}".encode()).hexdigest()[:16]
    path = lock_dir / f"s3q-worker-{digest}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"worker_id: another worker with id {worker_id!r} is running on this host "
                f"for {queue_url} (lock {path}); give each worker process its own "
                "--worker-id") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {worker_id} {queue_url}\n".encode())
        yield
    finally:
        os.close(fd)
