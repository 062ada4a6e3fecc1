"""A broken deploy does not dead-letter the queue, and the worker behaves under systemd:
the real ``s3q worker`` refusing a handler that cannot run, its circuit breaker (on moto's
S3 and on a local queue), journald priorities, sd_notify READY/WATCHDOG/STOPPING, and
``--exec`` children that die with a SIGKILLed worker."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from tests.acceptance.conftest import Cli, kill_tree, wait_for

PY = sys.executable
FAIL = f"{PY} -c 'import sys; sys.exit(\"downstream credentials expired\")'"


def breakers(cli: Cli) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cli.status()["breakers"]  # type: ignore[assignment]
    return found


def test_a_handler_that_cannot_run_stops_the_worker_at_start(local: Cli) -> None:
    local.run("submit", "-", "--name", "a_request.json", input="{}")
    script = local.tmp / "broken.sh"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    plain = local.tmp / "plain.txt"
    plain.write_text("")
    for args, message in (
            (["--exec", "/no/such/prog {path}"], "'/no/such/prog': no such file"),
            (["--exec", "no-such-prog-s3q {path}"], "'no-such-prog-s3q': not found on PATH"),
            (["--exec", f"{plain} {{path}}"], "not executable"),
            (["--exec", f"{script} {{path}}"], "'/no/such/interpreter' (#! line)"),
            (["--handler", "no_such_module_s3q:handle"], "cannot import"),
            (["--handler", "no_such_module_s3q:handle", "--pool", "process"], "cannot import")):
        out = local.run("worker", *args, "--burst", check=False)
        assert out.returncode == 2, (args, out.stderr)
        lines = [line for line in out.stderr.splitlines() if line.startswith("s3q:")]
        assert len(lines) == 1 and message in lines[0], out.stderr
    status = local.status()
    assert status["counts"] == {"wait": 1, "processing": 0, "finish": 0, "failed": 0}
    assert status["retrying"] == []  # never claimed: no attempt charged


def test_the_circuit_breaker_stops_a_broken_deploy_from_dead_lettering_the_queue(
        cli: Cli, procs: list[subprocess.Popen[str]]) -> None:
    names = cli.submit(8)
    worker = cli.spawn("worker", "--exec", FAIL, "--worker-id", "broken-1", "-c", "1",
                       "--breaker-threshold", "3", "--breaker-pause", "5m",
                       "--max-attempts", "2", "--retry-base-delay", "10m",
                       "--retry-max-delay", "10m")
    procs.append(worker)

    wait_for(lambda: any(b["open"] for b in breakers(cli)), 60, "the breaker to open")
    [breaker] = breakers(cli)
    assert breaker["worker"] == "broken-1" and breaker["trips"] == 1
    assert len(breaker["failed"]) == 3 and "credentials expired" in breaker["last_error"]
    check = cli.run("status", "--check", check=False)
    assert check.returncode == 1 and "circuit breaker open" in check.stderr
    time.sleep(2)  # it claims nothing while open
    assert cli.counts() == {"wait": 8, "processing": 0, "finish": 0, "failed": 0}
    # the two failures before the trip were charged an attempt; the third was given back
    # (it waits in its lease like any released request, with no attempt counted)
    attempts = {r["name"]: r["attempts"] for r in cli.status()["retrying"]}  # type: ignore
    assert set(attempts) == set(breaker["failed"])
    [held_back] = [name for name, n in attempts.items() if n == 0]
    assert sorted(attempts.values()) == [0, 1, 1] and held_back in names
    assert json.loads(cli.run("show", held_back, "--json").stdout)["lease"]["attempts"] == 0
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    assert breakers(cli) == []  # a stopped worker's record goes
    logged = (cli.tmp / next(p.name for p in cli.tmp.glob("worker-*.log"))).read_text()
    opened = [json.loads(line) for line in logged.splitlines()
              if '"breaker_open"' in line]
    assert opened and opened[0]["level"] == "error"


def test_the_breaker_closes_at_the_first_success_and_the_queue_drains(local: Cli) -> None:
    flag = local.tmp / "fixed"
    handler = local.tmp / "handler.py"
    handler.write_text(f"import os, sys\nsys.exit(0 if os.path.exists({str(flag)!r}) else 1)\n")
    for i in range(4):
        local.run("submit", "-", "--name", f"r{i}_request.json", input="{}")
    worker = subprocess.Popen(
        [str(Path(PY).parent / "s3q"), "worker", "--exec", f"{PY} {handler} {{path}}",
         "-c", "1", "--breaker-threshold", "2", "--breaker-pause", "1s", "--max-attempts",
         "3", "--retry-base-delay", "0", "--retry-max-delay", "0", "--burst"],
        env=local.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: breakers(local), 60, "the breaker to open")
        flag.write_text("the deploy is fixed")
        _, stderr = worker.communicate(timeout=120)
    finally:
        kill_tree(worker, signal.SIGKILL)
    assert worker.returncode == 0, stderr
    assert local.counts() == {"wait": 0, "processing": 0, "finish": 4, "failed": 0}
    assert breakers(local) == []
    assert '"breaker_closed"' in stderr


def test_logs_carry_syslog_priorities_when_stderr_is_the_journal(local: Cli) -> None:
    local.run("submit", "-", "--name", "a_request.json", input="{}")
    path = local.tmp / "journal"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        env = {**local.env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        subprocess.run([str(Path(PY).parent / "s3q"), "worker", "--exec", "false", "--burst",
                        "--max-attempts", "1"], env=env, stderr=stream, check=True, timeout=60)
    lines = path.read_text().splitlines()
    assert lines and all(re.match(r"<[0-7]>\{", line) for line in lines), lines[:3]
    by_event = {json.loads(line[3:]).get("event"): line[:3] for line in lines}
    assert by_event["worker_started"] == "<6>" and by_event["handler_failed"] == "<4>"
    out = local.run("status")  # not the journal: no prefix
    assert not any(line.startswith("<") for line in out.stderr.splitlines())


def test_the_worker_tells_systemd_ready_watchdog_and_stopping(local: Cli) -> None:
    address = local.tmp / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.settimeout(60)
        env = {**local.env, "NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "1000000"}
        worker = subprocess.Popen([str(Path(PY).parent / "s3q"), "worker", "--exec", "true"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            messages = [sock.recv(4096).decode() for _ in range(3)]
            assert messages[0].startswith("READY=1\nSTATUS=worker ")
            assert "WATCHDOG=1" in messages[1:]  # every half second
            worker.send_signal(signal.SIGTERM)
            seen = messages
            while "STOPPING=1" not in seen:
                seen.append(sock.recv(4096).decode())
            assert worker.wait(60) == 0
        finally:
            worker.kill()


def test_exec_children_die_with_a_sigkilled_worker(local: Cli, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    sleeper = f"{PY} -c 'import os, sys, time; open(sys.argv[1], \"w\").write(str(os.getpid())); time.sleep(300)' {pid_file}"  # noqa: E501
    local.run("submit", "-", "--name", "a_request.json", input="{}")
    worker = subprocess.Popen([str(Path(PY).parent / "s3q"), "worker", "--exec", sleeper],
                              env=local.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the handler to start")
        child = psutil.Process(int(pid_file.read_text()))
        assert child.ppid() == worker.pid
        worker.send_signal(signal.SIGKILL)  # the worker only, as the OOM killer would
        worker.wait(30)
        gone, alive = psutil.wait_procs([child], timeout=30)
        assert gone and not alive, "the handler outlived its worker"
    finally:
        worker.kill()
