"""A worker in a child process, for the recovery and scale measurements:

    python -m bench.child '<json spec>'

The spec names the store (a local root, or an S3 endpoint + bucket + prefix), the worker
id, concurrency, lease_ttl, poll_interval, the handler (``sleep`` seconds: a slow handler;
0: no-op that reads the body) and ``max_jobs``. Events are appended as JSON lines to
``events``: ``started`` (before Worker.run), ``start``/``done`` per handler run (with the
request name and time.time()), and ``exit`` with ru_maxrss and VmHWM (KiB) and the stats.
The process is meant to be SIGKILLed in the middle (recovery) or to stop at ``max_jobs``
(scale)."""

from __future__ import annotations

import time

T_SPAWNED = time.time()

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from typing import Any  # noqa: E402

from s3q import Queue, QueueConfig, S3Options  # noqa: E402
from s3q.job import Job  # noqa: E402
from s3q.store import Store  # noqa: E402
from s3q.worker import Worker, WorkerOptions  # noqa: E402


def _maxrss() -> int:
    """ru_maxrss, KiB. Linux keeps it across execve(), so the parent that spawns this
    process must fork first (bench.sections.scale._spawn_forked) or it reports the
    parent's peak."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _vmhwm() -> int | None:
    """Peak RSS of this process's own address space (KiB), from /proc/self/status."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main(argv: list[str]) -> int:
    spec: dict[str, Any] = json.loads(argv[0])
    lock = threading.Lock()
    events = open(spec["events"], "a", buffering=1)  # noqa: SIM115 (lives as long as we do)

    def emit(kind: str, **fields: Any) -> None:
        with lock:
            events.write(json.dumps({"ev": kind, "t": time.time(), "pid": os.getpid(),
                                     "worker": spec["worker_id"], **fields}) + "\n")
            events.flush()

    store: Store
    if spec.get("root"):  # import only the backend in use (boto3 alone is ~40 MiB)
        from s3q.backends.local import LocalStore

        store = LocalStore(spec["root"])
    else:
        from s3q.backends.s3 import S3Store

        store = S3Store(spec["bucket"], spec["prefix"], S3Options(
            endpoint_url=spec["endpoint"], region=spec["region"],
            access_key_id=spec["access_key"], secret_access_key=spec["secret_key"]))
    config = QueueConfig(lease_ttl=spec.get("lease_ttl", 30.0))
    queue = Queue(store, config)
    sleep = float(spec.get("sleep", 0))

    def handler(job: Job) -> None:
        emit("start", name=job.name, attempt=job.attempt)
        job.read()
        if sleep:
            time.sleep(sleep)
        emit("done", name=job.name)

    settings = {k: spec[k] for k in ("concurrency", "max_jobs", "burst", "poll_interval")
                if k in spec}
    options = WorkerOptions(worker_id=spec["worker_id"], **settings)
    worker = Worker(queue, handler, options)
    emit("started", spawned=T_SPAWNED, ru_maxrss_kib=_maxrss())
    stats = worker.run()
    emit("exit", ru_maxrss_kib=_maxrss(), vmhwm_kib=_vmhwm(), completed=stats.completed,
         claimed=stats.claimed)
    queue.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
