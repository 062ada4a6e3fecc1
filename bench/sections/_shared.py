"""What more than one section uses: :class:`Section` (one report section), :class:`Shared`
(what later sections reuse from earlier ones), PROTOCOL.md §5's request mixes and their
comparison, number formatting, and the helpers for ``python -m bench.child`` processes."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench import ceiling, seed
from bench.common import Context, request_body, request_name
from bench.runs import RunResult
from tests.s3server import S3Endpoint

#: PROTOCOL.md §5: a small request moved to finish/ by a worker, its job ending within
#: ``processing_view_after`` (no view), per job (LIST: 1/P, P = 100).
PROTOCOL_MIX = {"PutObject": 2, "GetObject": 1, "DeleteObject": 2, "ListObjectsV2": 0.01}
#: ... with on_finish = "delete", and with one failure that retries (base + the "+" row).
PROTOCOL_DELETE_MIX = {"PutObject": 1, "GetObject": 1, "DeleteObject": 2,
                       "ListObjectsV2": 0.01}
#: The "+" row of a failure that retries, added to the base mix (it was once written out
#: by hand here, and drifted from the table: 16 requests instead of 19).
PROTOCOL_RETRY_EXTRA = {"PutObject": 5, "GetObject": 2, "DeleteObject": 2}
PROTOCOL_RETRY_MIX = {op: PROTOCOL_MIX.get(op, 0) + PROTOCOL_RETRY_EXTRA.get(op, 0)
                      for op in PROTOCOL_MIX.keys() | PROTOCOL_RETRY_EXTRA.keys()}


def _compare_mix(label: str, counts: dict[str, int], jobs: int,
                 want: dict[str, float]) -> list[str]:
    """Differences of a measured mix from PROTOCOL.md §5 (LIST and fractions below 0.1
    ignored: they depend on page size and races)."""
    mix = {op: n / jobs for op, n in counts.items()}
    out = []
    for op in sorted(set(want) | set(mix)):
        if op == "ListObjectsV2":
            continue
        got, expect = mix.get(op, 0.0), want.get(op, 0.0)
        if abs(got - expect) >= 0.1:
            out.append(f"{label}: {op} measured {got:.2f}/job, PROTOCOL.md §5 gives "
                       f"{expect:g}")
    return out


@dataclass
class Section:
    key: str
    title: str
    data: dict[str, Any] = field(default_factory=dict)
    md: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    env: str = ""  # the environment line at the start of the section
    seconds: float = 0.0


@dataclass
class Shared:
    """What later sections reuse from earlier ones."""

    runs: dict[str, RunResult] = field(default_factory=dict)
    rates: dict[str, dict[str, ceiling.OpRate]] = field(default_factory=dict)
    seed: dict[str, seed.SeedResult] = field(default_factory=dict)
    seed_cli_counts: dict[str, int] = field(default_factory=dict)
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)


def _fmt(x: float | None, digits: int = 1) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 2)


def _check_run(ctx: Context, r: RunResult) -> None:
    if r.completed != r.jobs or r.finished != r.jobs or r.left_waiting:
        ctx.note(f"{r.label}: completed {r.completed}/{r.jobs}, finish/ holds {r.finished}, "
                 f"{r.left_waiting} left in wait/")


def _s3_spec(endpoint: S3Endpoint, prefix: str) -> dict[str, Any]:
    return {"endpoint": endpoint.endpoint_url, "bucket": endpoint.bucket, "prefix": prefix,
            "region": endpoint.region, "access_key": endpoint.access_key_id,
            "secret_key": endpoint.secret_access_key}


def _kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _fill_moto(endpoint: S3Endpoint, prefix: str, n: int, seconds: float,
               state: str = "wait") -> int:
    """PUT ``n`` requests into ``state``/ from 10 threads; stop after ``seconds``."""
    client = endpoint.client()
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    done = [0]

    def put(i: int) -> None:
        if time.monotonic() < deadline:
            client.put_object(Bucket=endpoint.bucket, Key=f"{prefix}/{state}/{request_name(i)}",
                              Body=request_body(i))
            with lock:
                done[0] += 1

    with ThreadPoolExecutor(10) as pool:  # the client's connection pool holds 10
        list(pool.map(put, range(n)))
    return done[0]
