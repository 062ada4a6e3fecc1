"""A 200 MiB request, end to end: submitted from a file (streamed, never held in memory),
processed by a worker in a separate process that streams it through SHA-256, completed with
the digest as its result. The worker's peak RSS must stay far below the payload size.

On moto the object lives in the server's memory (wait/ + processing/ + finish/ copies, about
600 MiB in all; the test deletes what it left there). The timings are printed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from s3q import Queue, State
from s3q.backends.local import LocalStore
from tests.s3server import MakeS3Store, S3Endpoint

SIZE = 200 * 1024 * 1024
CHUNK = 1024 * 1024
RSS_LIMIT_KIB = 100 * 1024
WORKER = Path(__file__).with_name("_large_worker.py")
NAME = "big/payload request.bin"
#: Runs its arguments as a command. Linux keeps ru_maxrss across execve(): a worker exec'd
#: straight from the test process would report at least the *test process's* peak RSS. This
#: small process has a fresh address space, so the worker it starts inherits only its ~10 MiB.
TRAMPOLINE = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def _write_payload(path: Path, size: int = SIZE) -> str:
    """Write ``size`` pseudo-random (incompressible) bytes, a chunk at a time; return their
    SHA-256."""
    rng, digest = random.Random(2026), hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size // CHUNK):
            chunk = rng.randbytes(CHUNK)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _run_worker(spec: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    command = [sys.executable, "-c", TRAMPOLINE, sys.executable, str(WORKER), json.dumps(spec)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, f"worker exited {proc.returncode}:\n{proc.stderr}"
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report, seconds


def _process_large(queue: Queue, spec: dict[str, Any], tmp_path: Path, label: str) -> None:
    source = tmp_path / "payload.bin"
    t0 = time.monotonic()
    expected = _write_payload(source)
    t1 = time.monotonic()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    info = queue.submit(NAME, source)
    t2 = time.monotonic()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert info.size == SIZE
    source.unlink()

    report, worker_seconds = _run_worker(spec)

    assert report["name"] == NAME
    assert report["size"] == SIZE
    assert report["sha256"] == expected
    assert queue.result(NAME) == expected.encode()
    assert queue.store.head(f"finish/{NAME}").size == SIZE
    assert queue.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    assert [i.key for i in queue.ls(State.FINISH)] == [NAME]
    assert list(queue.leases()) == []
    peak, baseline, hwm = (report["peak_rss_kib"], report["baseline_rss_kib"],
                           report["vm_hwm_kib"])
    print(f"\n[large] {label}: 200 MiB written in {t1 - t0:.1f} s, submitted in {t2 - t1:.1f} s"
          f" (test process peak RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB); "
          f"worker process {worker_seconds:.1f} s in all (stream + hash "
          f"{report['read_seconds']:.1f} s, complete {report['complete_seconds']:.1f} s); "
          f"worker peak RSS (ru_maxrss) {peak / 1024:.1f} MiB, VmHWM {hwm / 1024:.1f} MiB "
          f"(ru_maxrss before claiming {baseline / 1024:.1f} MiB); "
          f"total {time.monotonic() - t0:.1f} s")
    assert peak < RSS_LIMIT_KIB, f"worker peak RSS {peak / 1024:.0f} MiB"
    assert 0 < hwm < RSS_LIMIT_KIB, f"worker VmHWM {hwm / 1024:.0f} MiB"


@pytest.mark.slow
def test_large_request_s3(s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
                          tmp_path: Path) -> None:
    prefix = f"t/{uuid4().hex}"
    spec = {"kind": "s3", "bucket": s3_endpoint.bucket, "prefix": prefix,
            "options": dataclasses.asdict(s3_endpoint.options())}
    store = make_s3_store(prefix=prefix)
    queue = Queue(store)
    try:
        _process_large(queue, spec, tmp_path, "S3 (moto)")
    finally:  # moto keeps objects in memory for the whole session: free them
        for state in ("wait", "processing", "finish"):
            store.delete(f"{state}/{NAME}")


@pytest.mark.slow
def test_large_request_local(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Queue(LocalStore(root)) as queue:
        _process_large(queue, {"kind": "local", "root": str(root)}, tmp_path, "local")
