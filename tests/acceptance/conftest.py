"""Acceptance layer: the real ``s3q`` executable, as subprocesses, against moto's S3 (and
SSM) server in its own process. Each test gets its own queue prefix and a record file where
the handler (tests/acceptance/record.py) logs every start and end of a run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import psutil
import pytest

from tests.s3server import S3Endpoint

S3Q = str(Path(sys.executable).parent / "s3q")
RECORD = str(Path(__file__).with_name("record.py"))
HANDLER = f"{sys.executable} {RECORD} {{path}}"


@dataclass
class Cli:
    """Runs ``s3q`` against one queue with one environment."""

    env: dict[str, str]
    queue: str
    log: Path
    tmp: Path

    def run(self, *args: str, check: bool = True, timeout: float = 120,
            env: dict[str, str] | None = None, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([S3Q, *args], env={**self.env, **(env or {})}, text=True,
                              capture_output=True, timeout=timeout, input=input,
                              check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"s3q {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        out = (self.tmp / f"worker-{uuid4().hex[:6]}.log").open("w")
        return subprocess.Popen([S3Q, *args], env={**self.env, **(env or {})}, text=True,
                                stdout=out, stderr=subprocess.STDOUT)

    def worker(self, *args: str, env: dict[str, str] | None = None,
               ) -> subprocess.Popen[str]:
        return self.spawn("worker", "--exec", HANDLER, *args, env=env)

    def submit(self, n: int, prefix: str = "r") -> list[str]:
        src = self.tmp / f"requests-{uuid4().hex[:6]}"
        src.mkdir()
        names = [f"{prefix}{i:03d}_request.json" for i in range(n)]
        for name in names:
            (src / name).write_text(json.dumps({"id": name}))
        self.run("submit", str(src))
        return names

    def status(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.run("status", "--json").stdout)
        return data

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.status()["counts"]  # type: ignore[assignment]
        return counts

    def events(self) -> list[tuple[str, str]]:
        if not self.log.exists():
            return []
        return [(e, n) for e, n, _pid in
                (line.split() for line in self.log.read_text().splitlines())]

    def runs(self, event: str) -> Counter[str]:
        return Counter(n for e, n in self.events() if e == event)


@pytest.fixture
def cli(s3_endpoint: S3Endpoint, tmp_path: Path) -> Cli:
    prefix = f"acc/{uuid4().hex}"
    log = tmp_path / "runs.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3Q_"))}
    env.update({
        "S3Q_QUEUE": f"s3://{s3_endpoint.bucket}/{prefix}",
        "S3Q_IMDS": "off",
        "S3Q_LOG_JSON": "true",
        "S3Q_TEST_LOG": str(log),
        # The worker-id locks of this test's workers, not the host's /tmp: other test runs
        # on the host (other checkouts) start workers with the same ids (the host name,
        # chaos-n7 ...), and a worker that finds its id locked refuses to start.
        "S3Q_LOCK_DIR": str(tmp_path),
        "AWS_DEFAULT_REGION": s3_endpoint.region,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    })
    if s3_endpoint.endpoint_url:
        env["AWS_ENDPOINT_URL"] = s3_endpoint.endpoint_url
    if s3_endpoint.access_key_id and s3_endpoint.secret_access_key:
        env["AWS_ACCESS_KEY_ID"] = s3_endpoint.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = s3_endpoint.secret_access_key
    return Cli(env=env, queue=env["S3Q_QUEUE"], log=log, tmp=tmp_path)


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Like ``cli``, on a local-directory queue (``tmp/q``) and run in an empty directory:
    no S3, no config file, no S3Q_* variable but the queue."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    log = tmp_path / "runs.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "S3Q_")) and k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM",
                                                                "WATCHDOG_USEC", "WATCHDOG_PID")}
    queue = str(tmp_path / "q")
    env.update({"S3Q_QUEUE": queue, "S3Q_IMDS": "off", "S3Q_LOG_JSON": "true",
                "S3Q_TEST_LOG": str(log), "S3Q_CONFIG": "", "HOME": str(tmp_path),
                # the host's other test runs must not hold this worker id's lock
                "S3Q_WORKER_ID": f"w-{uuid4().hex[:8]}", "S3Q_LOCK_DIR": str(tmp_path)})
    return Cli(env=env, queue=queue, log=log, tmp=tmp_path)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes to kill (with their whole tree) when the test ends, however it ends."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        kill_tree(p, signal.SIGKILL)


def kill_tree(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Signal a worker and every process it started (its handlers run in their own
    sessions): what happens to them all when a server dies."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for p in [psutil.Process(proc.pid) if proc.poll() is None else None, *children]:
        if p is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)
    if sig == signal.SIGKILL:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
