"""``s3q workers``, ``pause``, ``resume``, ``status`` (workers, PAUSED), ``exporter`` and the
dashboard's refusal to listen beyond loopback without credentials, on the local store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from s3q.backends.local import LocalStore
from s3q.cli import cli
from s3q.registry import PREFIX, WorkerRecord
from tests.s3server import free_port

pytestmark = pytest.mark.usefixtures("isolated_cli")


def run(qdir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """``s3q ARGS --queue QDIR``; ``.stdout`` is the output alone (the log goes to stderr)."""
    return CliRunner().invoke(cli, [*args, "--queue", str(qdir)], env=env,
                              catch_exceptions=False)


def register(qdir: Path, worker_id: str, age: float) -> None:
    """A worker record whose last heartbeat was ``age`` seconds ago. (Backdating the file
    makes it one another program wrote: the local store lists it once ``age`` >= its settle
    time, 2 s.)"""
    store = LocalStore(qdir)
    record = WorkerRecord(id=worker_id, host="h1", pid=7, version="0.1.0", slots=4, busy=1,
                          paused=False, interval=60, started=time.time() - 600,
                          heartbeat=time.time() - age, counters={"completed": 12})
    store.put(PREFIX + worker_id, record.to_bytes())
    path = qdir / PREFIX / worker_id
    os.utime(path, (time.time() - age, time.time() - age))


def test_workers_lists_live_and_stale_and_prunes_the_stale(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    register(qdir, "ip-1/i-live", age=5)
    register(qdir, "ip-2/i-dead", age=600)
    out = run(qdir, "workers").output
    assert "ip-1/i-live" in out and "ip-2/i-dead" in out and "STALE" in out
    assert "1 live, 1 stale" in out and "1/4" in out
    data = json.loads(run(qdir, "workers", "--json").stdout)
    by_id = {w["id"]: w for w in data["workers"]}
    assert by_id["ip-2/i-dead"]["stale"] and not by_id["ip-1/i-live"]["stale"]
    assert by_id["ip-1/i-live"]["free"] == 3 and by_id["ip-1/i-live"]["counters"] == {
        "completed": 12}
    status = json.loads(run(qdir, "status", "--json").stdout)
    assert status["workers"] == {"live": ["ip-1/i-live"], "stale": ["ip-2/i-dead"]}
    assert "workers   1 live   1 stale (ip-2/i-dead)" in run(qdir, "status").output
    pruned = json.loads(run(qdir, "workers", "--prune", "--json").stdout)
    assert pruned["pruned"] == ["ip-2/i-dead"]
    assert [w["id"] for w in json.loads(run(qdir, "workers", "--json").stdout)["workers"]] == [
        "ip-1/i-live"]


def test_pause_and_resume_show_in_status(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    assert run(qdir, "pause").exit_code == 3  # no queue there: nothing is created
    LocalStore(qdir).put("wait/a_request.json", b"{}")
    assert "not paused" in run(qdir, "resume").output
    paused = json.loads(run(qdir, "pause", "--reason", "new handler", "--json").stdout)
    assert paused["paused"] and paused["reason"] == "new handler" and "@" in paused["by"]
    text = run(qdir, "status").output
    assert "PAUSED" in text and "new handler" in text
    assert json.loads(run(qdir, "status", "--json").stdout)["paused"]["reason"] == (
        "new handler")
    assert run(qdir, "status", "--check").exit_code == 0  # paused on purpose: healthy
    assert json.loads(run(qdir, "resume", "--json").stdout) == {
        "schema": "s3q.resume/1", "paused": False, "was_paused": True}
    assert "PAUSED" not in run(qdir, "status").output


def test_an_overdue_lease_is_no_problem_while_paused(tmp_path: Path) -> None:
    """Paused, no worker takes a dead worker's lease over (deliberately): status lists it as
    overdue but --check stays healthy; resumed, the same lease makes it unhealthy."""
    from s3q.records import Lease

    qdir = tmp_path / "q"
    store = LocalStore(qdir)
    lease = Lease(name="a_request.json", worker="dead-worker", claim="0" * 32, gen=1, seq=0,
                  attempt=1, body_b64=Lease.encode(b"{}"), size=2)
    store.put(".s3q/lease/a_request.json", lease.to_bytes())
    long_ago = time.time() - 3600  # far past lease_ttl + 2 s + two scan intervals
    os.utime(qdir / ".s3q" / "lease" / "a_request.json", (long_ago, long_ago))
    run(qdir, "pause", "--reason", "maintenance")
    paused = json.loads(run(qdir, "status", "--json").stdout)
    assert paused["overdue"] == ["a_request.json"] and paused["healthy"], paused["problems"]
    assert run(qdir, "status", "--check").exit_code == 0
    run(qdir, "resume")
    resumed = run(qdir, "status", "--check")
    assert resumed.exit_code != 0 and "not taken over in time" in resumed.output


def test_an_overdue_lease_is_reported_with_the_bound_it_was_judged_by(tmp_path: Path) -> None:
    """A lease written by a worker of lease_ttl 120 s is overdue only after 120 + 2 + two
    scan intervals of 60 s, whatever this shell's lease_ttl (30 s): the problem says those
    figures, not this shell's (which would tell the operator it waited 30 + 2 + 2 x 15 s)."""
    from s3q.records import Lease

    qdir = tmp_path / "q"
    store = LocalStore(qdir)
    lease = Lease(name="a_request.json", worker="dead-worker", claim="0" * 32, gen=1, seq=0,
                  attempt=1, body_b64=Lease.encode(b"{}"), size=2, ttl=120.0)
    store.put(".s3q/lease/a_request.json", lease.to_bytes())
    then = time.time() - (120 + 2 + 2 * 60 + 5)
    os.utime(qdir / ".s3q" / "lease" / "a_request.json", (then, then))
    out = run(qdir, "status", "--check")
    assert out.exit_code == 1 and "not taken over in time" in out.stderr
    assert "lease_ttl (120s) + 2s + two scan intervals of 60s" in out.stderr, out.stderr
    assert "30s" not in out.stderr.split("not taken over in time", 1)[1]


def test_the_dashboard_refuses_a_public_address_without_credentials(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dashboard", "--host", "0.0.0.0", "--queue",
                                      str(tmp_path / "q")])
    assert result.exit_code == 2
    assert "dashboard_token" in result.output and "never a flag" in result.output
    result = CliRunner().invoke(cli, ["dashboard", "--dashboard-token", "x"])
    assert result.exit_code == 2 and "No such option" in result.output  # secrets: no flag


def test_the_exporter_serves_the_queue_gauges(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    register(qdir, "ip-1/i-live", age=5)
    for i in range(3):
        LocalStore(qdir).put(f"wait/{i}_request.json", b"{}")
    port = free_port()
    script = Path(sys.executable).with_name("s3q")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("S3Q_")},
           "S3Q_IMDS": "off", "S3Q_QUEUE": str(qdir), "S3Q_METRICS_ADDR": f"127.0.0.1:{port}"}
    proc = subprocess.Popen([str(script), "exporter"], env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        text = ""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(100):
            try:
                with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                    text = answer.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert 's3q_queue_requests{state="wait"} 3.0' in text
        assert 's3q_workers{state="live"} 1.0' in text
        assert 's3q_worker_slots{worker="ip-1/i-live"} 4.0' in text
        assert "s3q_queue_backlog_per_worker 3.0" in text
        assert "s3q_queue_oldest_waiting_age_seconds" in text
        assert 's3q_store_requests_total{operation="LIST"}' in text
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
