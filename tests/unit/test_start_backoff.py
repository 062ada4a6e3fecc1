"""The start backoff of ``s3q worker`` (s3q.startbackoff): with ``Restart=on-failure`` and
``RestartSec=5`` alone, a fleet whose workers cannot start (a bad setting, SSM down) read
SSM Parameter Store every 5 s per server. The delay logic on a fake clock, then the real
``s3q worker`` under a stand-in of systemd's notify socket."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3q import Queue
from s3q import startbackoff as sb
from s3q.cli import cli
from s3q.startbackoff import CAP, FORGET_AFTER, HEALTHY_AFTER, StartBackoff, backoff_delay


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept = 0.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def backoff(path: Path, clock: FakeClock, draw: float = 0.5) -> StartBackoff:
    return StartBackoff(path, clock=clock.time, monotonic=clock.time, sleep=clock.sleep,
                        draw=lambda: draw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """systemd's side of sd_notify: the datagrams the worker sends."""
    address = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", str(address))
        yield sock


def messages(sock: socket.socket) -> list[str]:
    sock.settimeout(0)
    found = []
    try:
        while True:
            found.append(sock.recv(4096).decode())
    except BlockingIOError:
        return found


# --------------------------------------------------------------------------- the delays

def test_the_delay_doubles_with_jitter_up_to_the_cap() -> None:
    assert backoff_delay(0, 0.9) == 0.0
    for failures, ceiling in ((1, 5), (2, 10), (3, 20), (6, 160), (7, 300), (60, 300),
                              (10**6, 300)):
        low, high = backoff_delay(failures, 0.0), backoff_delay(failures, 0.999999)
        assert (low, round(high, 3)) == (ceiling / 2, ceiling), failures
        assert backoff_delay(failures, 0.5) == 0.75 * ceiling
    assert max(backoff_delay(n, random.random()) for n in range(200)) <= CAP


def test_failed_starts_in_a_row_wait_longer_and_a_healthy_run_or_a_stop_forgets_them(
        tmp_path: Path, clock: FakeClock) -> None:
    state = tmp_path / "s3q-worker.start-backoff"
    delays = []
    for _ in range(9):  # each start fails (nothing resets), systemd restarts it 5 s later
        b = backoff(state, clock)
        delay = b.begin()
        delays.append(delay)
        assert b.wait(delay, lambda: False)
        clock.now += 1 + 5  # the failing start, then RestartSec
    assert delays == [0, 3.75, 7.5, 15, 30, 60, 120, 225, 225]
    assert json.loads(state.read_text())["failures"] == 8

    b = backoff(state, clock)
    assert b.begin() == 225
    b.reset("healthy")  # e.g. READY + HEALTHY_AFTER
    assert not state.exists()
    assert backoff(state, clock).begin() == 0  # a fresh start: no wait


def test_an_old_failure_or_a_clock_set_back_is_no_loop(tmp_path: Path, clock: FakeClock) -> None:
    state = tmp_path / "state"
    backoff(state, clock).begin()
    clock.now += FORGET_AFTER + 1  # stopped in between, started by hand much later
    assert backoff(state, clock).begin() == 0
    clock.now -= 3600  # the record is "in the future"
    assert backoff(state, clock).begin() == 0


def test_a_broken_state_file_never_stops_a_start(tmp_path: Path, clock: FakeClock,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="s3q.cli"):
        assert backoff(state, clock).begin() == 0
        assert backoff(tmp_path / "no" / "such" / "dir", clock).begin() == 0
    assert [r.event for r in caplog.records] == ["start_backoff_error"] * 2  # type: ignore[attr-defined]
    assert "unreadable" in caplog.records[0].getMessage()
    assert "cannot write" in caplog.records[1].getMessage()


def test_the_wait_is_logged_shown_to_systemd_and_ends_at_a_stop(
        tmp_path: Path, clock: FakeClock, notify_socket: socket.socket,
        caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    backoff(state, clock).begin()
    b = backoff(state, clock)
    delay = b.begin()
    assert delay == 3.75
    with caplog.at_level(logging.INFO, logger="s3q.cli"):
        assert b.wait(delay, lambda: False)
    assert clock.slept == pytest.approx(delay)
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "start_backoff"]
    assert record.levelname == "WARNING"
    assert "the last 1 start of this worker failed" in record.getMessage()
    assert "waiting 4s before starting again" in record.getMessage()
    waiting, starting = messages(notify_socket)
    assert waiting.startswith("STATUS=waiting 4s before starting: the last 1 start")
    # the start may outlast TimeoutStartSec by the wait: systemd must not kill it meanwhile
    assert f"\nEXTEND_TIMEOUT_USEC={int((delay + 90) * 1e6)}" in waiting
    assert starting.startswith("STATUS=starting (after 4s")

    clock.slept = 0
    stop_at = clock.now + 1
    b = backoff(state, clock, draw=0.999)
    delay = b.begin()
    assert delay > 7
    assert not b.wait(delay, lambda: clock.now >= stop_at)  # SIGTERM: stop waiting at once
    assert clock.slept <= 1.5


def test_a_fleet_in_a_crash_loop_starts_at_most_every_150_s_per_server(
        tmp_path: Path) -> None:
    """300 servers whose starts all fail from the same moment (SSM down): without the
    backoff, 300 / 6 s = 50 starts (SSM reads) a second; with it, after a few minutes,
    each server starts at most once every CAP / 2 + 6 s, at moments spread by the jitter."""
    rng = random.Random(7)
    starts: list[float] = []
    for server in range(300):
        clock = FakeClock()
        b = StartBackoff(tmp_path / f"s{server}", clock=clock.time, draw=rng.random)
        t0 = clock.now
        while clock.now - t0 < 3600:
            clock.now += b.begin()
            starts.append(clock.now - t0)
            clock.now += 1 + 5  # fails in 1 s; RestartSec=5
    late = sorted(s for s in starts if s >= 1800)  # the second half hour
    assert len(late) / 1800 < 300 / (CAP / 2 + 6)  # < 2 starts a second, not 50
    busiest = max(sum(1 for s in late if m <= s < m + 10) for m in range(1800, 3600, 10))
    assert busiest < 45  # spread out: never the whole fleet in the same 10 s


# --------------------------------------------------------------------------- the worker

def _worker_env(tmp_path: Path, state: Path, notify: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3Q_")}
    return {**env, "S3Q_IMDS": "off", "S3Q_LOCK_DIR": str(tmp_path),
            "S3Q_START_BACKOFF": str(state), "NOTIFY_SOCKET": str(notify), **extra}


def test_the_worker_backs_off_after_a_failed_start_and_a_stop_forgets(
        tmp_path: Path, notify_socket: socket.socket) -> None:
    """The real `s3q worker` under the unit's variables: a config that fails (here, a
    missing config file) exits 2 at once the first time; the next start waits before it
    reads anything, saying so to systemd, and `systemctl restart` (SIGTERM) ends the wait
    and forgets the failure, so that the start after it does not wait."""
    state = tmp_path / "s3q-worker.start-backoff"
    env = _worker_env(tmp_path, state, Path(notify_socket.getsockname()),
                      S3Q_CONFIG=str(tmp_path / "missing.toml"))
    command = [sys.executable, "-m", "s3q.cli", "worker", "--exec", "true"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert first.returncode == 2 and "missing.toml (from env S3Q_CONFIG) does not exist" \
        in first.stderr
    assert json.loads(state.read_text())["failures"] == 0

    t0 = time.monotonic()
    second = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        status = notify_socket.recv(4096).decode()  # the wait began
        assert status.startswith("STATUS=waiting ") and "EXTEND_TIMEOUT_USEC=" in status
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=30)
    finally:
        second.kill()
    assert second.returncode == 0, stderr
    assert time.monotonic() - t0 < 2.5  # the shortest wait is 2.5 s: it was cut short
    [line] = [json.loads(ln) for ln in stderr.splitlines() if '"start_backoff"' in ln]
    assert line["level"] == "warning" and line["failures"] == 1
    assert 2.5 <= line["delay"] <= 5
    assert not state.exists()

    third = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert third.returncode == 2 and '"start_backoff"' not in third.stderr


@pytest.mark.usefixtures("isolated_cli")
def test_a_clean_exit_forgets_and_check_handler_leaves_the_backoff_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that ran and exited 0 forgets the failed starts before it. ValidateService
    runs `s3q worker ... --check-handler` with the worker's environment, backoff file
    included: that must neither wait nor count as a start."""
    monkeypatch.setattr(sb, "BASE", 0.02)  # waits of 10-20 ms
    state = tmp_path / "state"
    monkeypatch.setenv("S3Q_START_BACKOFF", str(state))
    qdir = tmp_path / "q"
    Queue(str(qdir)).submit("a_request.json", b"{}")
    state.write_text(json.dumps({"failures": 3, "started": time.time() - 10}) + "\n")
    before = state.read_text()
    out = CliRunner().invoke(cli, ["worker", "--exec", "true", "--check-handler",
                                   "--queue", str(qdir)], catch_exceptions=False)
    assert out.exit_code == 0 and state.read_text() == before
    out = CliRunner().invoke(cli, ["worker", "--exec", "true", "--burst", "--queue",
                                   str(qdir)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert '"start_backoff"' in out.stderr and '"failures": 4' in out.stderr
    assert not state.exists()
    assert Queue(str(qdir)).counts()["finish"] == 1
    assert HEALTHY_AFTER == CAP  # a run as long as the longest wait is no crash loop


@pytest.mark.usefixtures("isolated_cli")
def test_a_worker_that_stays_up_forgets_the_failed_starts_while_it_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once ready for HEALTHY_AFTER, the worker removes the record itself: a crash after
    that (no clean exit to forget it) is the first failed start again, not the ninth."""
    monkeypatch.setattr(sb, "BASE", 0.02)
    monkeypatch.setattr(sb, "HEALTHY_AFTER", 0.2)
    state = tmp_path / "state"
    monkeypatch.setenv("S3Q_START_BACKOFF", str(state))
    state.write_text(json.dumps({"failures": 8, "started": time.time() - 10}) + "\n")
    qdir = tmp_path / "q"
    Queue(str(qdir)).submit("a_request.json", b"{}")
    # the job succeeds only if the record is gone while the worker still runs it
    probe = f"sh -c 'sleep 1; test ! -e {state}'"
    out = CliRunner().invoke(cli, ["worker", "--exec", probe, "--max-jobs", "1",
                                   "--max-attempts", "1", "--queue", str(qdir)],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert Queue(str(qdir)).counts()["finish"] == 1, out.stderr
    assert '"start_backoff_reset"' in out.stderr and '"why": "healthy"' in out.stderr
