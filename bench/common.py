"""Shared pieces of the benchmark suite: the run context (command, environment, output
folder, figure log), S3 pricing, request counting on stores that do not count themselves,
and small helpers (request bodies, percentiles, waiting for child-process events)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import psutil

from s3q.backends.delegating import DelegatingStore
from s3q.store import Store

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

#: S3 list prices (us-east-1, standard storage class), dollars per request.
PRICE_CLASS_A = 0.005 / 1000  # PUT, COPY, POST, LIST
PRICE_CLASS_B = 0.0004 / 1000  # GET, HEAD and every other request
CLASS_A = frozenset({
    "PutObject", "CopyObject", "UploadPartCopy", "UploadPart", "CreateMultipartUpload",
    "CompleteMultipartUpload", "PostObject", "ListObjectsV2", "ListObjects",
    "ListObjectVersions", "CreateBucket", "PutBucketVersioning",
})
FREE = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload", "DeleteBucket"})


def price_class(operation: str) -> str:
    """"A" (PUT/COPY/POST/LIST), "free" (DELETE) or "B" (GET, HEAD, everything else)."""
    if operation in CLASS_A:
        return "A"
    if operation in FREE:
        return "free"
    return "B"


def usd_per_million_jobs(counts: Mapping[str, float], jobs: int) -> float:
    """What ``counts`` requests for ``jobs`` jobs cost at S3 list prices, per million jobs."""
    if jobs <= 0:
        return float("nan")
    total = 0.0
    for op, n in counts.items():
        cls = price_class(op)
        total += n * (PRICE_CLASS_A if cls == "A" else PRICE_CLASS_B if cls == "B" else 0.0)
    return total / jobs * 1e6


def per_job(counts: Mapping[str, float], jobs: int) -> dict[str, float]:
    """Requests per job by operation (sorted by operation name)."""
    return {op: round(n / jobs, 3) for op, n in sorted(counts.items()) if n} if jobs else {}


def diff_counts(after: Mapping[str, int], before: Mapping[str, int]) -> Counter[str]:
    out: Counter[str] = Counter()
    for op, n in after.items():
        if n - before.get(op, 0):
            out[op] = n - before.get(op, 0)
    return out


def request_body(i: int, size: int = 1024) -> bytes:
    """A small JSON request of exactly ``size`` bytes."""
    head = f'{{"id": {i}, "kind": "bench", "pad": "'
    tail = '"}'
    return (head + "x" * max(0, size - len(head) - len(tail)) + tail).encode()


def request_name(i: int) -> str:
    return f"{i:07d}_request.json"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip() or "?"


@dataclass
class Env:
    """Where and how the figures were measured."""

    python: str
    platform: str
    cores: int
    cores_usable: int
    boto3: str
    botocore: str
    moto: str
    awscli: str
    matplotlib: str
    s3q_commit: str
    s3q_dirty: bool
    load_at_start: float
    memory_gib: float

    @classmethod
    def collect(cls) -> Env:
        try:
            pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pages = 0
        return cls(
            python=platform.python_version(),
            platform=platform.platform(),
            cores=os.cpu_count() or 0,
            cores_usable=len(os.sched_getaffinity(0)),
            boto3=_version("boto3"),
            botocore=_version("botocore"),
            moto=_version("moto"),
            awscli=_version("awscli"),
            matplotlib=_version("matplotlib"),
            s3q_commit=_git("rev-parse", "--short", "HEAD"),
            s3q_dirty=bool(_git("status", "--porcelain", "--", "src") not in ("", "?")),
            load_at_start=round(loadavg(), 2),
            memory_gib=round(pages / 1024**3, 1),
        )

    def tag(self) -> str:
        """One line naming the environment, printed with every figure."""
        return (f"python {self.python}, boto3 {self.boto3}, moto {self.moto}, "
                f"{self.cores_usable}/{self.cores} cores, s3q {self.s3q_commit}"
                f"{'+dirty' if self.s3q_dirty else ''}, load {loadavg():.2f}")


@dataclass
class Context:
    """One run of the suite: settings, output folder, and the figures logged so far."""

    quick: bool
    out: Path
    command: str
    env: Env
    #: Backlog sizes of the scale section on S3 (moto fills ~200 objects/s: 100k ≈ 8 min).
    s3_backlogs: tuple[int, ...] = (10, 10_000)
    #: Times the speed section runs each shape (the median and the range are reported).
    rounds: int = 3
    started: float = field(default_factory=time.time)
    figures: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def jobs(self) -> int:
        """Requests per throughput run: 2,000 (300 with --quick)."""
        return 300 if self.quick else 2000

    def figure(self, section: str, name: str, value: float, unit: str, **extra: Any) -> float:
        """Log one measured figure with the command and environment it was measured with."""
        record = {"section": section, "name": name, "value": value, "unit": unit,
                  "load": round(loadavg(), 2), "t": round(time.time() - self.started, 1),
                  **extra}
        self.figures.append(record)
        if isinstance(value, float) and abs(value) >= 100:
            shown = f"{value:,.0f}"
        elif isinstance(value, float):
            shown = f"{value:.3g}"
        else:
            shown = f"{value:,}"
        print(f"[{section}] {name}: {shown} {unit}   "
              f"(`{self.command}`; {self.env.tag()})", flush=True)
        return value

    def say(self, text: str) -> None:
        print(f"    {text}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"    note: {text}", flush=True)


def command_line(argv: list[str]) -> str:
    """The command as the user typed it (python -m bench ...)."""
    exe = sys.executable
    with contextlib.suppress(ValueError):
        exe = os.path.relpath(exe, Path.cwd())
    return " ".join([shlex.quote(exe), "-m", "bench", *map(shlex.quote, argv)])


def isolate_from_aws_config() -> None:
    """Like the test suite: ignore the developer's AWS profile, config, endpoint and proxies
    (everything here talks to a local moto server with its own credentials)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1",
                                                   "localhost"]))


class CountingStore(DelegatingStore):
    """A :class:`~s3q.store.Store` that counts the calls it forwards, named after the S3
    operation each would be (the local store sends no requests, but the mix per job is the
    same protocol and is what the store's ceiling has to be divided by)."""

    OPERATIONS: ClassVar[dict[str, str]] = {
                  "get": "GetObject", "open": "GetObject", "head": "HeadObject",
                  "put": "PutObject", "copy": "CopyObject", "delete": "DeleteObject",
                  "delete_batch": "DeleteObjects", "list": "ListObjectsV2"}

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.request_counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        with self._lock:
            self.request_counts[self.OPERATIONS[op]] += 1
        return fn()

    def snapshot_counts(self) -> tuple[Counter[str], Counter[str]]:
        with self._lock:
            return Counter(self.request_counts), Counter()


def read_events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a child process appended to ``path`` so far (a torn last line is
    skipped: the child may be writing it right now)."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            events.append(json.loads(line))
    return events


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the elapsed wall time in seconds."""
    box: list[float] = []
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - t0)


class CpuMeter:
    """CPU time the processes of one run spend between :meth:`start` and :meth:`stop`: this
    process (the clients: workers and their stores, or the seed's threads) and others by
    name (the S3 server, the latency proxy), in :attr:`spent` (seconds)."""

    def __init__(self, others: dict[str, int]) -> None:
        self._others = {name: psutil.Process(pid) for name, pid in others.items()}
        self._started: dict[str, float] = {}
        self.spent: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {"client": time.process_time()}
        for name, proc in self._others.items():
            times = proc.cpu_times()
            now[name] = times.user + times.system
        return now

    def start(self) -> None:
        self._started = self._now()

    def stop(self) -> None:
        end = self._now()
        self.spent = {name: end[name] - self._started[name] for name in end}
