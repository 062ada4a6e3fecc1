"""A one-job worker run as its own process by test_large_payload.py:

    python _large_worker.py '<store spec as JSON>'

It claims one request, streams its body in 1 MiB chunks through SHA-256, completes the job
with the hex digest as its result, and prints one JSON line: the digest, the byte count, the
timings and its peak RSS (``ru_maxrss``, KiB on Linux) before claiming and at the end, and
``VmHWM`` from /proc/self/status.
Standalone on purpose (only s3q is imported): it is run as a script, not as a module."""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from pathlib import Path

from s3q import Queue
from s3q.backends import S3Options
from s3q.backends.local import LocalStore
from s3q.backends.s3 import S3Store
from s3q.store import Store

CHUNK = 1024 * 1024


def _peak_rss_kib() -> int:
    """``ru_maxrss`` (KiB). On Linux it is kept across execve(), so it includes the peak of
    the process image that exec'd this one: the test starts this script through a small
    trampoline process so that the figure is this worker's own (see test_large_payload)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _vm_hwm_kib() -> int:
    """The peak RSS of this process image alone (``VmHWM``, reset by execve), KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    store: Store
    if spec["kind"] == "s3":
        store = S3Store(spec["bucket"], spec["prefix"], S3Options(**spec["options"]))
    else:
        store = LocalStore(Path(spec["root"]))
    with Queue(store) as queue:
        store.now()  # one request, so the HTTP machinery is loaded before the baseline
        baseline = _peak_rss_kib()
        deadline = time.monotonic() + 60
        while (job := queue.claim("large-worker")) is None:
            if time.monotonic() > deadline:
                raise SystemExit("nothing to claim")
            time.sleep(0.2)
        claimed = time.monotonic()
        digest, size = hashlib.sha256(), 0
        with job:  # the lease is renewed in the background while we read
            with job.open() as body:
                while chunk := body.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            read = time.monotonic()
            job.complete(digest.hexdigest().encode())
        done = time.monotonic()
    print(json.dumps({
        "name": job.name, "sha256": digest.hexdigest(), "size": size,
        "read_seconds": read - claimed, "complete_seconds": done - read,
        "baseline_rss_kib": baseline, "peak_rss_kib": _peak_rss_kib(),
        "vm_hwm_kib": _vm_hwm_kib(),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
