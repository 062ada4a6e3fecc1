"""The ``s3q`` command line on the local-directory store: click's CliRunner in this process,
plus the real executable in a subprocess for a worker run and a SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from prometheus_client import generate_latest

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from s3q.cli import cli
from s3q.cli import output as cli_output
from s3q.cli.status import queue_status, render_status
from s3q.logs import HumanFormatter, JsonFormatter
from s3q.metrics import Metrics, StoreCollector
from s3q.store import Page
from tests.unit.test_operator_partial import failing

PY = shlex.quote(sys.executable)
#: An exec handler that upper-cases its request into its result.
UPPER = f"{PY} -c 'import sys; sys.stdout.write(open(sys.argv[1]).read().upper())' {{path}}"
FAIL = f"{PY} -c 'import sys; sys.stderr.write(\"boom\"); sys.exit(3)'"


pytestmark = pytest.mark.usefixtures("isolated_cli")


@pytest.fixture
def qdir(tmp_path: Path) -> Path:
    return tmp_path / "q"


def run(qdir: Path, *args: str, input: str | bytes | None = None) -> Result:
    """``s3q ARGS --queue QDIR``."""
    return CliRunner().invoke(cli, [*args, "--queue", str(qdir)], input=input,
                              catch_exceptions=False)


def queue(qdir: Path, **config: float) -> Queue:
    return Queue(str(qdir), QueueConfig(**config))  # type: ignore[arg-type]


def requests_dir(tmp_path: Path, n: int, sub: str = "") -> Path:
    src = tmp_path / "in"
    (src / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (src / sub / f"r{i}_request.json").write_text(json.dumps({"id": i}))
    return src


def one_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines()  # log lines are JSON here
             if line.strip() and not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("s3q: error: ") and "Traceback" not in result.output
    return lines[0]


def names(qdir: Path, state: str) -> list[str]:
    return sorted(i.key for i in queue(qdir).ls(state))


# ------------------------------------------------------------------------ submit

def test_submit_files_directories_globs_and_stdin(tmp_path: Path, qdir: Path) -> None:
    src = requests_dir(tmp_path, 2, sub="2026/11")
    (src / "top_request.json").write_text("{}")
    assert run(qdir, "submit", str(src)).exit_code == 0
    assert names(qdir, "wait") == ["2026/11/r0_request.json", "2026/11/r1_request.json",
                                   "top_request.json"]

    out = run(qdir, "submit", str(src / "top_request.json"), "--name", "renamed_request.json",
              "--json")
    assert out.exit_code == 0
    assert [r["name"] for r in json.loads(out.stdout)["requests"]] == ["renamed_request.json"]

    out = run(qdir, "submit", "-", "--name", "piped/x_request.json", input=b'{"in": 1}')
    assert out.exit_code == 0, out.output
    assert queue(qdir).store.get("wait/piped/x_request.json")[0] == b'{"in": 1}'

    # a pattern the shell did not expand: named below its fixed part
    out = run(qdir, "submit", str(src / "**" / "r1_*.json"), "--json")
    assert [r["name"] for r in json.loads(out.stdout)["requests"]] == ["2026/11/r1_request.json"]
    assert "submitted 1 request(s)" in run(qdir, "submit", str(src / "top_*")).stdout
    assert len(names(qdir, "wait")) == 5


def test_submit_refuses_names_outside_the_filter_before_submitting_any(
        tmp_path: Path, qdir: Path) -> None:
    src = requests_dir(tmp_path, 3)
    (src / "README.txt").write_text("not a request")
    out = run(qdir, "submit", str(src), "--filter", "*request.json")
    assert out.exit_code == 2
    line = one_error_line(out)
    assert "'*request.json'" in line and "README.txt" in line
    assert names(qdir, "wait") == []


@pytest.mark.parametrize(("args", "message"), [
    (["-"], "needs --name"),
    (["no-such-file.json"], "no such file"),
    (["nothing*.json"], "no file matches"),
    (["-", "--name", "../x"], "invalid key"),
])
def test_submit_usage_errors(qdir: Path, args: list[str], message: str) -> None:
    out = run(qdir, "submit", *args, input=b"x")
    assert out.exit_code == 2
    assert message in one_error_line(out)


# ------------------------------------------------------------------------ worker

def test_worker_burst_runs_the_program_on_everything(tmp_path: Path, qdir: Path) -> None:
    run(qdir, "submit", str(requests_dir(tmp_path, 6)))
    out = run(qdir, "worker", "--exec", UPPER, "--burst", "-c", "3", "--worker-id", "w1",
              "--log-json")
    assert out.exit_code == 0, out.output
    q = queue(qdir)
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 6, "failed": 0}
    assert q.result("r2_request.json") == b'{"ID": 2}'

    logs = [json.loads(line) for line in out.stderr.splitlines()]
    claimed = [r for r in logs if r.get("event") == "claimed"]
    assert len(claimed) == 6
    assert {"time", "level", "logger", "message", "request", "worker", "attempt"} <= set(
        claimed[0])
    assert claimed[0]["worker"] == "w1" and claimed[0]["level"] == "info"
    assert claimed[0]["time"].endswith("Z")
    assert Counter(r.get("event") for r in logs)["completed"] == 6
    [settings] = [r for r in logs if r.get("event") == "settings"]
    assert settings["settings"]["concurrency"] == "3"


@pytest.mark.parametrize("worker_id", ["s3q-recover", "s3q-recover-all", "s3q-requeue",
                                       "s3q-dashboard"])
def test_a_worker_may_not_take_the_id_of_s3qs_own_commands(qdir: Path, worker_id: str) -> None:
    """recover --all takes requests as s3q-recover-all, and an attempt interrupted under that
    id is not counted: a worker of that id would have its crashed attempts uncounted, and
    one of any of these ids would be taken for the operator's command. Refused at start,
    before anything is claimed."""
    run(qdir, "submit", "--name", "a_request.json", "-", input=b"{}")
    out = run(qdir, "worker", "--exec", UPPER, "--burst", "--worker-id", worker_id)
    assert out.exit_code == 2, out.output
    assert f"{worker_id!r} is the id s3q's own commands act as" in one_error_line(out)
    assert queue(qdir).counts()["wait"] == 1
    # refused with the config, before the queue is opened: a new one is not even created
    fresh = qdir.parent / "fresh"
    out = run(fresh, "worker", "--exec", UPPER, "--burst", "--worker-id", worker_id)
    assert out.exit_code == 2 and "(flag --worker-id)" in one_error_line(out)
    assert not fresh.exists()


def test_worker_python_handler_in_a_thread_and_in_a_process(
        tmp_path: Path, qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "myjobs.py").write_text(
        "def handle(req):\n    return req.read()[::-1] + str(req.attempt).encode()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(  # (this s3q in the child too)
        [str(tmp_path), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]))
    for pool in ("thread", "process"):
        run(qdir, "submit", "-", "--name", f"{pool}_request.json", input=b"abc")
        out = run(qdir, "worker", "--handler", "myjobs:handle", "--pool", pool, "--burst")
        assert out.exit_code == 0, out.output
        assert queue(qdir).result(f"{pool}_request.json") == b"cba1"


@pytest.mark.parametrize(("args", "message"), [
    ([], "exactly one of --exec"),
    (["--exec", "true", "--handler", "x:y"], "exactly one of --exec"),
    (["--handler", "no_such_module_s3q:f"], "cannot import"),
    (["--exec", "true", "--pool", "process"], "--pool applies to --handler"),
    (["--handler", "json:dumps", "--job-timeout", "5"], "--pool process"),
    (["--exec", "true", "--lease-ttl", "abc"], "lease_ttl"),
    (["--exec", "true", "--concurrency", "0"], "concurrency"),
])
def test_worker_usage_and_config_errors_are_one_line(qdir: Path, args: list[str],
                                                     message: str) -> None:
    out = run(qdir, "worker", "--burst", *args)
    assert out.exit_code == 2
    assert message in one_error_line(out)


def test_events_need_a_queue_on_s3(qdir: Path) -> None:
    out = run(qdir, "worker", "--exec", "true", "--events-queue", "s3q-events")
    assert out.exit_code == 2
    assert "S3 event notifications need a queue on S3" in one_error_line(out)
    out = run(qdir, "events", "setup", "--events-queue", "s3q-events")
    assert out.exit_code == 2 and "need a queue on S3" in one_error_line(out)
    out = run(qdir, "events", "setup")
    assert out.exit_code == 2 and "events_queue is not set" in one_error_line(out)


def test_an_unusable_store_exits_3(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for args in (["worker", "--exec", "true", "--burst"], ["status"]):
        out = run(blocker / "q", *args)
        assert out.exit_code == 3, out.output
        assert str(blocker) in one_error_line(out)


def test_metrics_are_served_while_the_worker_runs(qdir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scrape = ("import sys, urllib.request as u; o = u.build_opener(u.ProxyHandler({})); "
              f"sys.stdout.write(o.open('http://127.0.0.1:{port}/metrics').read().decode())")
    run(qdir, "submit", "-", "--name", "m_request.json", input=b"{}")
    out = run(qdir, "worker", "--burst", "--metrics-port", str(port), "--exec",
              shlex.join([sys.executable, "-c", scrape]))
    assert out.exit_code == 0, out.output
    text = (queue(qdir).result("m_request.json") or b"").decode()
    assert "s3q_jobs_claimed_total 1.0" in text
    assert "s3q_jobs_in_flight 1.0" in text


# ------------------------------------------------------------------------ status

def test_status_json_and_check(tmp_path: Path, qdir: Path) -> None:
    run(qdir, "submit", str(requests_dir(tmp_path, 3)))
    q = queue(qdir, max_attempts=1)
    job = q.claim("w-live")
    assert job is not None
    job.fail("bad request", retry=False)
    q.claim("w-live")  # held, not renewed, but not expired yet

    out = run(qdir, "status", "--json")
    assert out.exit_code == 0
    data = json.loads(out.stdout)
    assert data["counts"] == {"wait": 1, "processing": 1, "finish": 0, "failed": 1}
    assert data["oldest_waiting_age"] >= 0
    [held] = data["in_flight"]
    assert held["worker"] == "w-live" and held["intent"] == "held" and not held["expired"]
    assert data["in_flight_per_worker"] == {"w-live": 1}
    assert data["expired"] == [] and data["retrying"] == []
    assert data["throughput"]["window_seconds"] == 300

    assert run(qdir, "status", "--check").exit_code == 0
    out = run(qdir, "status", "--check", "--max-failed", "0")
    assert out.exit_code == 1 and "failed/" in out.stderr
    out = run(qdir, "status", "--check", "--max-age", "0")
    assert out.exit_code == 1 and "oldest waiting" in out.stderr
    assert run(qdir, "status", "--max-age", "5").exit_code == 2  # needs --check
    human = run(qdir, "status").stdout
    assert "wait 1" in human and "w-live" in human


def test_status_shows_retries(qdir: Path) -> None:
    run(qdir, "submit", "-", "--name", "r_request.json", input=b"{}")
    job = queue(qdir, retry_base_delay=60, retry_max_delay=60).claim("w")
    assert job is not None
    job.fail("flaky backend")
    data = json.loads(run(qdir, "status", "--json").stdout)
    [retry] = data["retrying"]
    assert retry["name"] == "r_request.json" and retry["attempts"] == 1
    assert retry["error"] == "flaky backend" and 25 <= retry["due_in"] <= 60
    assert data["in_flight"] == []


class _ListRecordingStore(MemoryStore):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__("listed", clock=clock)
        self.listed: list[str] = []

    def list_page(self, prefix: str, *, start_after: str | None = None,
                  limit: int = 1000) -> Page:
        self.listed.append(prefix)
        return super().list_page(prefix, start_after=start_after, limit=limit)


@pytest.mark.parametrize(("grace", "warned"), [("30", False), ("31", True)])
def test_a_worker_warns_when_grace_outgrows_the_units_stop_timeout(
        tmp_path: Path, qdir: Path, monkeypatch: pytest.MonkeyPatch, grace: str,
        warned: bool) -> None:
    """The unit `s3q deploy init --grace 30` writes stops the worker within TimeoutStopSec=90
    and tells it so (S3Q_UNIT_STOP_TIMEOUT): grace raised to 31 s in s3q.toml alone (which
    deployments keep) leaves less than 60 s to give jobs back, and the worker says so at
    its start, as systemd would SIGKILL it mid-drain."""
    from s3q.deploy import render_bundle, stop_timeout_problem

    unit = render_bundle(grace=30)["deploy/s3q-worker.service"][0]
    assert "Environment=S3Q_UNIT_STOP_TIMEOUT=90\n" in unit and "TimeoutStopSec=90\n" in unit
    monkeypatch.setenv("S3Q_UNIT_STOP_TIMEOUT", "90")
    run(qdir, "submit", str(requests_dir(tmp_path, 1)))
    out = run(qdir, "worker", "--exec", UPPER, "--burst", "--grace", grace, "--log-json")
    assert out.exit_code == 0, out.output
    found = [json.loads(line) for line in out.stderr.splitlines()
             if '"grace_exceeds_stop_timeout"' in line]
    assert [r["level"] for r in found] == (["warning"] if warned else [])
    if warned:
        assert "TimeoutStopSec=90s" in found[0]["message"]
        assert "s3q deploy init --grace 31" in found[0]["message"]
    assert stop_timeout_problem(600.0, {}) is None  # not under the unit: nothing to judge


def test_status_reads_the_registry_once_and_judges_each_worker_by_its_interval() -> None:
    """One LIST of .s3q/workers/ (its records read once, for both the fleet and the
    lease_ttl check), and each worker stale after 2.5 of its own heartbeat intervals, as
    `s3q workers` judges it, not the default's (60 s)."""
    from s3q.registry import PREFIX, WorkerRecord

    now = 1_764_000_000.0
    at = [now]
    store = _ListRecordingStore(clock=lambda: at[0])
    for worker, interval, age in (("fast-dead", 10.0, 40.0), ("slow-live", 300.0, 200.0),
                                  ("live", 60.0, 5.0)):
        at[0] = now - age
        record = WorkerRecord(id=worker, host="h", pid=1, version="x", slots=1, busy=0,
                              paused=False, interval=interval, started=at[0],
                              heartbeat=at[0], lease_ttl=30.0)
        store.put(PREFIX + worker, record.to_bytes())
    at[0] = now
    status = queue_status(Queue(store, QueueConfig()))
    assert status["workers"] == {"live": ["live", "slow-live"], "stale": ["fast-dead"]}
    assert store.listed.count(PREFIX) == 1, store.listed


def test_status_check_does_not_list_finish() -> None:
    """finish/ grows by one object per request forever (on_finish=move): a health check
    that pages through it would cost more every day."""
    store = _ListRecordingStore()
    q = Queue(store, QueueConfig())
    for name in ("a_request.json", "b_request.json"):
        q.submit(name, b"{}")
    job = q.claim("w")
    assert job is not None
    job.complete()
    store.listed.clear()
    checked = queue_status(q, history=False)
    assert checked["counts"] == {"wait": 1, "processing": 0, "finish": None, "failed": 0}
    assert checked["throughput"] is None
    assert store.listed and not any(p.startswith("finish/") for p in store.listed)
    assert "finish -" in render_status(checked)
    assert "not listed by --check" in render_status(checked)
    full = queue_status(q)
    assert full["counts"]["finish"] == 1 and full["throughput"]["finished"] == 1
    assert "finish/" in store.listed


def test_status_check_fails_only_on_a_lease_nobody_took_over(qdir: Path) -> None:
    """An expired lease is normal for a moment (a live worker takes it over within two scan
    intervals); --check fails once it is overdue. Time is moved by backdating the lease
    file (the local store's clock is mtime)."""
    run(qdir, "submit", "-", "--name", "x_request.json", input=b"{}")
    assert queue(qdir, lease_ttl=5).claim("dead") is not None  # never renewed
    lease = qdir / ".s3q" / "lease" / "x_request.json"

    def check() -> Result:
        return run(qdir, "status", "--check", "--lease-ttl", "5")

    def backdate(seconds: float) -> None:
        then = time.time() - seconds
        os.utime(lease, (then, then))

    assert check().exit_code == 0
    backdate(5 + 2 + 1)  # expired (ttl + clock margin): a takeover is due, not a problem
    out = check()
    assert out.exit_code == 0 and "EXPIRED" in out.stdout and "OVERDUE" not in out.stdout
    data = json.loads(run(qdir, "status", "--json", "--lease-ttl", "5").stdout)
    assert data["expired"] == ["x_request.json"] and data["overdue"] == []
    backdate(5 + 2 + 2 * 2.5 + 1)  # and two scan intervals (ttl/2) later: nobody scans
    out = check()
    assert out.exit_code == 1
    assert "not taken over in time" in out.stderr and "x_request.json (dead" in out.stderr
    assert "OVERDUE" in out.stdout
    data = json.loads(run(qdir, "status", "--json", "--lease-ttl", "5").stdout)
    assert data["overdue"] == ["x_request.json"] and data["healthy"] is False
    assert run(qdir, "recover", "--stale", "--lease-ttl", "5").exit_code == 0
    assert check().exit_code == 0
    assert names(qdir, "wait") == ["x_request.json"]


# ------------------------------------------------------------------------ ls, show, requeue

def test_ls_show_and_requeue(tmp_path: Path, qdir: Path) -> None:
    run(qdir, "submit", str(requests_dir(tmp_path, 3)))
    out = run(qdir, "worker", "--burst", "--max-attempts", "1", "--exec", FAIL)
    assert out.exit_code == 0, out.output
    assert names(qdir, "failed") == [f"r{i}_request.json" for i in range(3)]

    listed = json.loads(run(qdir, "ls", "failed", "--json", "--limit", "2").stdout)["requests"]
    assert [r["name"] for r in listed] == ["r0_request.json", "r1_request.json"]
    assert listed[0]["size"] == len('{"id": 0}')
    assert "boom" in listed[0]["error"]["message"] and listed[0]["error"]["attempts"] == 1
    assert "r2_request.json" in run(qdir, "ls", "failed").stdout
    assert run(qdir, "ls", "nowhere").exit_code == 2

    shown = json.loads(run(qdir, "show", "r0_request.json", "--json").stdout)
    assert [s["state"] for s in shown["states"]] == ["failed"]
    assert "boom" in shown["error"]["error"]["message"]
    assert "exit code 3" in shown["error"]["error"]["message"]
    human = run(qdir, "show", "r0_request.json").stdout
    assert "failed" in human and "boom" in human

    out = run(qdir, "requeue", "r0_request.json", "--json")
    assert json.loads(out.stdout) == {"schema": "s3q.requeue/1", "dry_run": False,
                                      "requeued": ["r0_request.json"], "skipped": [],
                                      "complete": True, "failed": [], "not_attempted": []}
    out = run(qdir, "requeue", "r0_request.json")  # not in failed/ any more
    assert out.exit_code == 1 and "not requeued" in out.stderr
    out = run(qdir, "requeue", "--glob", "r1*")  # not interactive: needs --yes
    assert out.exit_code == 2 and "refusing to requeue 1 failed request(s)" in out.stderr
    assert run(qdir, "requeue", "--glob", "r1*", "--yes").exit_code == 0
    assert names(qdir, "failed") == ["r2_request.json"]
    assert run(qdir, "requeue", "--all", "-y").exit_code == 0
    assert names(qdir, "failed") == []
    assert len(names(qdir, "wait")) == 3
    assert run(qdir, "requeue").exit_code == 2
    # the error record went with the requeue: a fresh start
    assert json.loads(run(qdir, "show", "r0_request.json", "--json").stdout)["error"] is None


def test_show_a_finished_request_and_an_unknown_one(qdir: Path) -> None:
    run(qdir, "submit", "-", "--name", "a_request.json", input=b"hello")
    run(qdir, "worker", "--burst", "--exec", UPPER)
    shown = json.loads(run(qdir, "show", "a_request.json", "--json").stdout)
    assert [s["state"] for s in shown["states"]] == ["finish"]
    assert shown["result"] == {"size": 5, "preview": "HELLO", "truncated": False}
    out = run(qdir, "show", "nothing_request.json")
    assert out.exit_code == 1 and "not in the queue" in out.stderr


# ------------------------------------------------------------------------ recover, purge

def test_recover_dry_run_refusal_confirmation_and_all(
        tmp_path: Path, qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(qdir, "submit", str(requests_dir(tmp_path, 3)))
    q = queue(qdir)
    held = [q.claim("w-live"), q.claim("w-live")]
    assert all(held)

    out = run(qdir, "recover", "--all", "--dry-run", "--json")
    assert out.exit_code == 0
    plan = json.loads(out.stdout)
    assert plan["dry_run"] and len(plan["requests"]) == 2
    assert all("w-live, live" in r["action"] for r in plan["requests"])
    assert len(names(qdir, "processing")) == 2  # nothing changed

    out = run(qdir, "recover", "--all")  # not interactive, live leases, no --yes
    assert out.exit_code == 2
    assert "--yes" in one_error_line(out) and "w-live" in out.stderr
    assert run(qdir, "recover", "--stale").stdout.strip() == "recovered 0 request(s)"

    monkeypatch.setattr(cli_output, "is_interactive", lambda: True)
    out = run(qdir, "recover", "--all", input="n\n")
    assert out.exit_code == 1 and len(names(qdir, "processing")) == 2
    out = run(qdir, "recover", "--all", "--include", "*request.json", input="y\n")
    assert out.exit_code == 0
    assert names(qdir, "processing") == [] and len(names(qdir, "wait")) == 3


def test_recover_all_yes_and_mine(tmp_path: Path, qdir: Path) -> None:
    run(qdir, "submit", str(requests_dir(tmp_path, 2)))
    q = queue(qdir)
    assert q.claim("me") and q.claim("other")
    mine = json.loads(run(qdir, "recover", "--mine", "--worker-id", "me", "--dry-run",
                          "--json").stdout)
    assert len(mine["requests"]) == 1
    out = run(qdir, "recover", "--mine", "--worker-id", "me", "--json")
    assert [r["action"] for r in json.loads(out.stdout)["requests"]] == ["released"]
    assert len(names(qdir, "processing")) == 1
    assert run(qdir, "recover", "--stale", "--include", "*").exit_code == 2
    out = run(qdir, "recover", "--all", "--include", "*request.json", "--yes")
    assert out.exit_code == 0 and "recovered 1 request(s)" in out.stdout
    assert len(names(qdir, "wait")) == 2


def test_purge(tmp_path: Path, qdir: Path) -> None:
    run(qdir, "submit", str(requests_dir(tmp_path, 4)))
    run(qdir, "worker", "--burst", "--exec", UPPER, "--max-jobs", "2")
    finished = names(qdir, "finish")
    assert len(finished) == 2 and queue(qdir).result(finished[0]) is not None

    out = run(qdir, "purge", "finish", "--json", "--yes")
    assert sorted(json.loads(out.stdout)["purged"]) == finished
    assert names(qdir, "finish") == [] and queue(qdir).result(finished[0]) is None

    out = run(qdir, "purge", "processing")
    assert out.exit_code == 2 and "recover" in one_error_line(out)
    out = run(qdir, "purge", "wait")  # not interactive, no --yes
    assert out.exit_code == 2 and len(names(qdir, "wait")) == 2
    waiting = names(qdir, "wait")
    out = run(qdir, "purge", "wait", "--include", waiting[0], "--yes")
    assert out.exit_code == 0 and names(qdir, "wait") == waiting[1:]


def test_purge_older_than(tmp_path: Path, qdir: Path) -> None:
    run(qdir, "submit", str(requests_dir(tmp_path, 3)))
    run(qdir, "worker", "--burst", "--exec", UPPER)
    old, *recent = names(qdir, "finish")
    then = time.time() - 2 * 86400  # the local store's clock is the file's mtime
    os.utime(qdir / ".s3q" / "result" / old, (then - 1, then - 1))  # (written before, d2)
    os.utime(qdir / "finish" / old, (then, then))
    out = run(qdir, "purge", "finish", "--older-than", "1d", "--json", "--yes")
    assert out.exit_code == 0 and json.loads(out.stdout)["purged"] == [old]
    assert names(qdir, "finish") == recent and queue(qdir).result(old) is None
    assert queue(qdir).result(recent[0]) is not None
    out = run(qdir, "purge", "finish", "--older-than", "7x")
    assert out.exit_code == 2 and "not a duration" in one_error_line(out)


def test_purge_removes_only_the_records_of_the_purged_state(qdir: Path) -> None:
    """failed/x and finish/x may both exist (x failed, then was submitted again and
    finished): each keeps its own record when the other is purged."""
    q = queue(qdir, max_attempts=1)

    def dead_letter() -> None:
        q.submit("x_request.json", b"{}")
        job = q.claim("w")
        assert job is not None
        job.fail("broken")

    dead_letter()
    q.submit("x_request.json", b"{}")
    job = q.claim("w")
    assert job is not None
    job.complete(b"the result")
    assert run(qdir, "purge", "failed", "--yes").exit_code == 0
    assert q.result("x_request.json") == b"the result"
    dead_letter()
    assert run(qdir, "purge", "finish", "--yes").exit_code == 0
    record = q.error_record("x_request.json")
    assert record is not None and "broken" in record.error["message"]
    assert names(qdir, "failed") == ["x_request.json"]


# ------------------------------------------------------------------------ config, errors

def test_config_show_masks_secrets_and_names_sources(qdir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3Q_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("S3Q_SECRET_ACCESS_KEY", "very-secret-value-123")
    for args in (["config", "show"], ["config", "show", "--json"]):
        out = run(qdir, *args, "--lease-ttl", "45")
        assert out.exit_code == 0
        assert "very-secret-value-123" not in out.output and "AKIAEXAMPLEKEY" not in out.output
    shown = json.loads(run(qdir, "config", "show", "--json").stdout)["settings"]
    assert shown["secret_access_key"] == {"value": "***",
                                          "source": "env S3Q_SECRET_ACCESS_KEY"}
    assert shown["queue"] == {"value": str(qdir), "source": "flag --queue"}
    out = run(qdir, "config", "show", "--lease-ttl", "45")
    assert any(line.split() == ["lease_ttl", "45", "flag", "--lease-ttl"]
               for line in out.stdout.splitlines())


def test_secrets_are_not_flags(qdir: Path) -> None:
    out = run(qdir, "config", "show", "--secret-access-key", "x")
    assert out.exit_code == 2 and "No such option" in one_error_line(out)


@pytest.mark.parametrize(("toml", "message"), [
    ("lease_tl = 10\n", "did you mean 'lease_ttl'"),
    ('max_attempts = "three"\n', "max_attempts"),
    ("lease_ttl = 1\n", "lease_ttl"),
    ("queue = [\n", "invalid TOML"),
])
def test_a_config_error_is_one_line_and_exit_2(tmp_path: Path, qdir: Path, toml: str,
                                               message: str) -> None:
    (tmp_path / "s3q.toml").write_text(toml)
    out = run(qdir, "status")
    assert out.exit_code == 2
    assert message in one_error_line(out)


def test_usage_errors_are_one_line(qdir: Path) -> None:
    for args in (["status", "--bogus"], ["nope"], ["status", "--config", "missing.toml"],
                 ["status", "--watch", "1", "--check"]):
        out = run(qdir, *args)
        assert out.exit_code == 2, args
        one_error_line(out)


def test_a_queue_named_after_a_folder_of_the_layout_is_warned_about(tmp_path: Path) -> None:
    """S3Q_QUEUE=s3://acme/requests/wait (the folder the console shows the files in): the
    workers polled requests/wait/wait/ while the requests waited in requests/wait/, nothing
    said. Every command's queue line is now a warning naming the queue probably meant."""
    out = run(tmp_path / "q" / "wait", "submit", str(requests_dir(tmp_path, 1)), "--log-json")
    assert out.exit_code == 0, out.output
    logs = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    [queue_line] = [r for r in logs if r.get("event") == "queue"]
    assert queue_line["level"] == "warning"
    assert f"if requests arrive in file://{tmp_path / 'q' / 'wait'}/, the queue is " \
        f"file://{tmp_path / 'q'}" in queue_line["message"]
    out = run(tmp_path / "q", "status", "--log-json")  # the queue itself: no warning
    assert '"level": "warning"' not in out.stderr, out.stderr


# ------------------------------------------------------------------------ logs and metrics

def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("s3q", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_log_formats() -> None:
    record = _record("%s %s", "claimed", "a b.json", event="claimed", request="a b.json",
                     worker="w1", attempt=2)
    human = HumanFormatter().format(record)
    assert human.split(" ", 1)[1] == "info    claimed a b.json worker=w1 attempt=2"
    data = json.loads(JsonFormatter().format(record))
    assert data["event"] == "claimed" and data["request"] == "a b.json"
    assert data["worker"] == "w1" and data["attempt"] == 2 and data["logger"] == "s3q"
    assert data["message"] == "claimed a b.json" and data["time"].endswith("Z")
    other = HumanFormatter().format(_record("worker started", event="worker_started",
                                            worker="w1"))
    assert other.endswith("worker_started worker=w1 - worker started")
    assert HumanFormatter().format(_record("plain %d", 1)).endswith("info    plain 1")


class _CountingStore:
    def snapshot_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        return {"PutObject": 7, "ListObjectsV2": 2}, {"PreconditionFailed": 1}


def test_metrics_counters_histogram_and_store_requests() -> None:
    metrics = Metrics()
    for event in ("claimed", "claimed", "completed", "retry_scheduled", "dead_lettered",
                  "took_over", "submitted", "renewed"):
        metrics.on_event(event, {})
    metrics.on_job_done(None, "completed", 0.3)  # type: ignore[arg-type]
    metrics.registry.register(StoreCollector(_CountingStore()))  # type: ignore[arg-type]
    text = generate_latest(metrics.registry).decode()
    assert "s3q_jobs_claimed_total 2.0" in text
    assert "s3q_jobs_failed_total 2.0" in text
    assert "s3q_jobs_retried_total 1.0" in text and "s3q_jobs_takeovers_total 1.0" in text
    assert "s3q_jobs_lease_renewals_total 1.0" in text
    assert 's3q_handler_duration_seconds_count{outcome="completed"} 1.0' in text
    assert 's3q_store_requests_total{operation="PutObject"} 7.0' in text
    assert 's3q_store_errors_total{code="PreconditionFailed"} 1.0' in text


# ------------------------------------------------------------------------ the real executable

def _env(qdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3Q_")}
    # the worker-id lock in this test's directory: other test runs on the host use the
    # same default worker id (the host name)
    return {**env, "S3Q_QUEUE": str(qdir), "S3Q_IMDS": "off",
            "S3Q_LOCK_DIR": str(qdir.parent)}


def test_the_executable_runs_a_burst(tmp_path: Path, qdir: Path) -> None:
    script = Path(sys.executable).with_name("s3q")  # the console script, when installed
    s3q = [str(script)] if script.exists() else [sys.executable, "-m", "s3q.cli"]
    env = _env(qdir)
    subprocess.run([*s3q, "submit", str(requests_dir(tmp_path, 5))], env=env, check=True,
                   capture_output=True, timeout=60)
    proc = subprocess.run([*s3q, "worker", "--exec", UPPER, "--burst", "--no-log-json"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "completed" in proc.stderr and "Traceback" not in proc.stderr
    status = subprocess.run([*s3q, "status", "--json"], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    assert json.loads(status.stdout)["counts"] == {"wait": 0, "processing": 0, "finish": 5,
                                                   "failed": 0}


def test_sigterm_gives_the_running_job_back_and_exits_0(qdir: Path) -> None:
    q = queue(qdir)
    q.submit("slow_request.json", b"{}")
    worker = subprocess.Popen(
        [sys.executable, "-m", "s3q.cli", "worker", "--grace", "0.5", "--exec", "sleep 60"],
        env=_env(qdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while q.counts()["processing"] == 0:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, stderr
    assert q.counts() == {"wait": 1, "processing": 0, "finish": 0, "failed": 0}
    assert '"event": "stopping"' in stderr and "Traceback" not in stderr
    # Not asserted: that the attempt is not counted (no retry lease left). Worker._give_back
    # kills the handler before it releases the job, so the handler's own failure may win
    # the race and count the attempt (a library race, see Worker._give_back / Job.__exit__).


def test_recover_all_takes_only_what_its_confirmation_listed(
        tmp_path: Path, qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`s3q recover --all` asks before fencing live workers, naming how many requests they
    hold. A worker that claims another request while the operator reads the question is
    not in it, and keeps that job."""
    run(qdir, "submit", str(requests_dir(tmp_path, 3)))
    q = queue(qdir)
    shown = q.claim("w-live")
    assert shown is not None
    later: list[str] = []

    def operator_reads_then_says_yes(question: str, **_: object) -> bool:
        assert "1 request(s) are held by live workers (w-live)" in question
        job = q.claim("w-other")  # the fleet goes on meanwhile
        assert job is not None
        later.append(job.name)
        return True

    monkeypatch.setattr(cli_output, "is_interactive", lambda: True)
    monkeypatch.setattr(click, "confirm", operator_reads_then_says_yes)
    out = run(qdir, "recover", "--all", "--json")
    assert out.exit_code == 0, out.stderr
    acted = {r["name"]: r["action"] for r in json.loads(out.stdout)["requests"]}
    assert acted[shown.name] == "released"
    assert acted.get(later[0], "") != "released"
    lease = q.lease(later[0])
    assert lease is not None and lease[0].worker == "w-other"  # not fenced
    assert names(qdir, "processing") == [later[0]]


def test_requeue_glob_requeues_only_the_dead_letters_it_listed(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`s3q requeue --all` says how many it will requeue and asks; a request of a listed
    name that is dead-lettered again while the operator reads the question (the listed
    one moves to .s3q/earlier/) is another dead letter, not the one confirmed: it stays
    in failed/, as the dashboard's confirmed requeue leaves it (by the ETag listed)."""
    q = queue(qdir, max_attempts=1)

    def dead_letter(body: bytes) -> None:
        q.submit("x_request.json", body)
        job = q.claim("w")
        assert job is not None
        job.fail("broken")

    dead_letter(b"listed")

    def fails_again_then_yes(question: str, **_: object) -> bool:
        assert "Requeue 1 failed request(s)" in question
        dead_letter(b"newer")
        return True

    monkeypatch.setattr(cli_output, "is_interactive", lambda: True)
    monkeypatch.setattr(click, "confirm", fails_again_then_yes)
    out = run(qdir, "requeue", "--all", "--json")
    # not all it listed was requeued: exit 1 (it was 0), as purge that skipped requests
    assert out.exit_code == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["skipped"] == ["x_request.json"] and doc["complete"] is False
    assert "not requeued: x_request.json" in out.stderr  # (named there too, as by recover)
    assert names(qdir, "failed") == ["x_request.json"] and names(qdir, "wait") == []


def test_recover_all_exits_1_when_it_left_a_listed_request_alone(
        tmp_path: Path, qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request `s3q recover --all` listed (held by a live worker) is given back and
    claimed by another worker while the operator reads the question: it is left alone
    (another claim than the one listed). The command said so and exited 0: a script could
    not tell it from a recovery that did all it listed."""
    run(qdir, "submit", str(requests_dir(tmp_path, 2)))
    q = queue(qdir)
    jobs = [q.claim("w-live"), q.claim("w-live")]
    assert jobs[0] is not None and jobs[1] is not None
    moved = jobs[1].name

    def claimed_again_then_yes(question: str, **_: object) -> bool:
        assert "2 request(s) are held by live workers (w-live)" in question
        assert jobs[1] is not None
        jobs[1].release()
        again = q.claim("w-other")
        assert again is not None and again.name == moved
        return True

    monkeypatch.setattr(cli_output, "is_interactive", lambda: True)
    monkeypatch.setattr(click, "confirm", claimed_again_then_yes)
    out = run(qdir, "recover", "--all", "--json")
    assert out.exit_code == 1, out.stderr
    doc = json.loads(out.stdout)
    acted = {r["name"]: r["action"] for r in doc["requests"]}
    assert acted == {jobs[0].name: "released", moved: "left alone (changed since listed)"}
    assert doc["complete"] is False
    lease = q.lease(moved)
    assert lease is not None and lease[0].worker == "w-other"  # not fenced
    human = run(qdir, "recover", "--all", "--dry-run")
    assert human.exit_code == 0  # (a dry run: nothing left alone)


def test_recover_all_does_not_count_a_takeover_its_owner_raced_as_recovered(
        tmp_path: Path, qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live owner of r1 renews its lease between recover --all's read of it and its
    fence (t1, conditional on the lease read): the fence loses ("raced"), and r1 stays
    with its worker. It was counted as recovered, and the command exited 0."""
    run(qdir, "submit", str(requests_dir(tmp_path, 3)))
    q = queue(qdir)
    jobs = {}
    for _ in range(3):
        job = q.claim("w-live")
        assert job is not None
        jobs[job.name] = job
    renewed: list[str] = []

    def renewed_by_its_worker(_: object) -> None:  # (once: the next run is not raced)
        if not renewed:
            jobs["r1_request.json"].renew()
            renewed.append("r1_request.json")

    failing(monkeypatch, "put", ".s3q/lease/r1_request.json", None,
            before=renewed_by_its_worker)
    out = run(qdir, "recover", "--all", "--yes", "--json")
    assert out.exit_code == 1, out.stderr
    doc = json.loads(out.stdout)
    acted = {r["name"]: r["action"] for r in doc["requests"]}
    assert acted["r1_request.json"] == "raced" and doc["complete"] is False
    lease = q.lease("r1_request.json")
    assert lease is not None and lease[0].worker == "w-live"
    assert names(qdir, "wait") == ["r0_request.json", "r2_request.json"]
    human = run(qdir, "recover", "--all", "--yes")  # r1, taken now: all done
    assert human.exit_code == 0 and "recovered 1 request(s)" in human.stdout, human.output


def test_recover_stale_does_not_report_a_live_longer_lease_as_recovered(
        tmp_path: Path, qdir: Path) -> None:
    """An operator's shell with a shorter lease_ttl than the fleet's: recover --stale reads
    the lease (it looks expired by the shell's own), finds it live by the lease_ttl it
    tells and leaves it ("alive"). That is no recovery: it said 'recovered 1 request(s)'."""
    run(qdir, "submit", str(requests_dir(tmp_path, 1)))
    job = queue(qdir, lease_ttl=120).claim("w-long")
    assert job is not None
    lease = next((qdir / ".s3q" / "lease").rglob("*request.json"))
    old = time.time() - 60  # expired by 30 s, not by its 120 s
    os.utime(lease, (old, old))
    out = run(qdir, "recover", "--stale", "--lease-ttl", "30")
    assert out.exit_code == 0
    assert out.stdout.strip() == "recovered 0 request(s)", out.stdout
    job.renew()  # still its holder's


def test_a_worker_command_line_checks_its_own_queue_as_status_check_does(
        tmp_path: Path, qdir: Path) -> None:
    """`s3q worker ... --check-queue` (the ValidateService hook's queue check) is `s3q status
    --check` with the worker's own flags: its --queue and --lease-ttl, not the environment's;
    it claims nothing and creates no queue."""
    run(qdir, "submit", "-", "--name", "x_request.json", input=b"{}")
    run(qdir, "submit", "-", "--name", "y_request.json", input=b"{}")
    assert queue(qdir, lease_ttl=5).claim("dead") is not None  # never renewed
    lease = next((qdir / ".s3q" / "lease").iterdir())
    then = time.time() - (5 + 2 + 2 * 2.5 + 1)  # overdue by a lease_ttl of 5 s
    os.utime(lease, (then, then))
    elsewhere = tmp_path / "elsewhere"
    Queue(str(elsewhere)).submit("z_request.json", b"{}")  # healthy

    def check(*flags: str) -> Result:
        return CliRunner(env={"S3Q_QUEUE": str(elsewhere)}).invoke(
            cli, ["worker", "--exec", "true", *flags, "--check-queue"], catch_exceptions=False)

    out = check("--queue", str(qdir), "--lease-ttl", "5")
    assert out.exit_code == 1, out.output
    assert "not taken over in time" in out.stderr and "OVERDUE" in out.stdout
    assert check().exit_code == 0  # the environment's queue
    assert Queue(str(qdir)).counts()["wait"] == 1  # nothing claimed
    missing = tmp_path / "missing"
    assert check("--queue", str(missing)).exit_code == 3 and not missing.exists()
