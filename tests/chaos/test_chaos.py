"""The chaos suite: real ``s3q worker`` processes on moto, killed at random, frozen, fed
store faults and bad input. Each test is bounded in time, fails on any violation, and writes
its figures (kills, faults, duplicates, lost = 0) to stdout and to $S3Q_CHAOS_REPORT_DIR
(default: the test's tmp dir)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest

from s3q.scanrole import ROLE_KEY
from tests.acceptance.conftest import Cli, kill_tree, wait_for
from tests.chaos.faultproxy import FaultProxy
from tests.s3server import S3Endpoint

ROOT = Path(__file__).resolve().parents[2]
HANDLER = "tests.chaos.handlers:record"
EXEC = f"{sys.executable} {ROOT / 'tests' / 'chaos' / 'exec_handler.py'} {{path}}"

pytestmark = pytest.mark.slow


@pytest.fixture
def chaos(cli: Cli) -> Cli:
    cli.env["S3Q_CHAOS_LOG"] = str(cli.tmp / "chaos.log")
    cli.env["PYTHONPATH"] = str(ROOT)
    cli.env["S3Q_LOG_LEVEL"] = "warning"
    cli.log = cli.tmp / "chaos.log"
    return cli


def submit(cli: Cli, bodies: dict[str, bytes]) -> None:
    src = cli.tmp / f"in-{len(bodies)}-{random.randrange(10**6)}"
    for name, body in bodies.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    cli.run("submit", str(src), timeout=300)


def runs(cli: Cli) -> list[tuple[str, str, int]]:
    if not cli.log.exists():
        return []
    return [(e, n.replace("%20", " "), int(p)) for e, n, p in
            (line.split() for line in cli.log.read_text().splitlines())]


def report(cli: Cli, name: str, figures: dict[str, Any]) -> None:
    text = json.dumps(figures, indent=2, sort_keys=True)
    print(f"\n== chaos figures: {name}\n{text}")
    out = Path(os.environ.get("S3Q_CHAOS_REPORT_DIR") or cli.tmp)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(text + "\n")


def drained(cli: Cli) -> bool:
    """Nothing waiting or in flight: one LIST each of wait/, processing/ and .s3q/lease/ (a
    short job in flight has a lease but no processing/ view yet). Not `s3q status`, whose
    process start and listing of all of finish/ would take a core of the 2-core machine
    away from the workers it waits for."""
    bucket, _, prefix = cli.queue.removeprefix("s3://").partition("/")
    return not any(_client(cli).list_objects_v2(
        Bucket=bucket, Prefix=f"{prefix.rstrip('/')}/{sub}", MaxKeys=1).get("KeyCount")
        for sub in ("wait/", "processing/", ".s3q/lease/"))


def test_kill_storm(chaos: Cli, procs: list[subprocess.Popen[str]]) -> None:
    """4 workers on 2,000 requests; a supervisor SIGKILLs a random one every ~1.5 s and
    restarts it (mostly with its id: own recovery; sometimes as a new id: the old one's
    leases must be taken over) — at least 30 kills."""
    n, rng = 2000, random.Random(20261129)
    names = [f"storm/{i:05d}_request.json" for i in range(n)]
    submit(chaos, {name: json.dumps({"sleep": 0.02}).encode() for name in names})
    args = ("--handler", HANDLER, "-c", "4", "--lease-ttl", "5", "--poll-interval", "1")

    def start(wid: str) -> subprocess.Popen[str]:
        p = chaos.spawn("worker", *args, "--worker-id", wid)
        procs.append(p)
        return p

    workers = {f"chaos-{i}": start(f"chaos-{i}") for i in range(4)}
    killed_pids: set[int] = set()
    kills = same_id = new_id = 0
    t0 = time.monotonic()
    while kills < 30 and time.monotonic() - t0 < 240:
        time.sleep(rng.uniform(0.8, 2.0))
        wid = rng.choice(sorted(workers))
        victim = workers.pop(wid)
        killed_pids.add(victim.pid)
        kill_tree(victim, signal.SIGKILL)
        kills += 1
        if rng.random() < 0.7:
            same_id += 1
            workers[wid] = start(wid)
        else:
            new_id += 1
            workers[f"chaos-n{kills}"] = start(f"chaos-n{kills}")
    kill_phase = time.monotonic() - t0
    wait_for(lambda: drained(chaos), 240, "the queue to drain after the kills")
    for p in workers.values():
        p.send_signal(signal.SIGTERM)
    assert [p.wait(60) for p in workers.values()] == [0] * len(workers)

    done = Counter(name for e, name, _ in runs(chaos) if e == "done")
    starts = [(name, pid) for e, name, pid in runs(chaos) if e == "start"]
    finished = {i.key for i in _list(chaos, "finish/")}
    lost = [name for name in names if name not in finished]
    duplicated = sorted(name for name, c in Counter(n for n, _ in starts).items() if c > 1)
    unexplained = [name for name in duplicated
                   if not any(pid in killed_pids for nm, pid in starts if nm == name)]
    report(chaos, "kill_storm", {
        "requests": n, "kills": kills, "restarted_same_id": same_id,
        "restarted_new_id": new_id, "kill_phase_s": round(kill_phase, 1),
        "total_s": round(time.monotonic() - t0, 1), "lost": len(lost),
        "processed_more_than_once": len(duplicated),
        "duplicates_not_explained_by_a_kill": len(unexplained),
        "handler_completions": sum(done.values()),
    })
    assert kills >= 30
    assert lost == []
    assert chaos.counts() == {"wait": 0, "processing": 0, "finish": n, "failed": 0}
    assert unexplained == []
    assert json.loads(chaos.run("status", "--json").stdout)["expired"] == []


def test_store_faults(chaos: Cli, procs: list[subprocess.Popen[str]],
                      s3_endpoint: S3Endpoint) -> None:
    """Workers behind a proxy that answers 503/500, resets connections (also after the
    store applied a write) and adds latency for ~8 % of requests."""
    if not s3_endpoint.is_moto or not s3_endpoint.endpoint_url:
        pytest.skip("needs a local S3 endpoint to put the proxy in front of")
    proxy = FaultProxy(s3_endpoint.endpoint_url, rate=0.08, seed=7)
    try:
        figures: dict[str, Any] = {}
        for phase, enabled in (("clean", False), ("faulty", True)):
            proxy.enabled = enabled
            proxy.counts.clear()  # the figures below are the faulty phase's
            names = [f"{phase}/{i:04d}_request.json" for i in range(300)]
            submit(chaos, {name: b'{"sleep": 0}' for name in names})
            t0 = time.monotonic()
            workers = [chaos.spawn("worker", "--handler", HANDLER, "-c", "4", "--burst",
                                   "--lease-ttl", "5", "--worker-id", f"{phase}-{i}",
                                   env={"AWS_ENDPOINT_URL": proxy.url})
                       for i in range(2)]
            procs.extend(workers)
            assert [w.wait(300) for w in workers] == [0, 0]
            # a burst may end while a request waits for a retry after a fault: finish it
            if not drained(chaos):
                again = chaos.spawn("worker", "--handler", HANDLER, "--lease-ttl", "5",
                                    "--worker-id", f"{phase}-x", env={
                                        "AWS_ENDPOINT_URL": proxy.url})
                procs.append(again)
                wait_for(lambda: drained(chaos), 120, "the retries")
                again.send_signal(signal.SIGTERM)
                assert again.wait(60) == 0
            figures[f"{phase}_jobs_per_s"] = round(len(names) / (time.monotonic() - t0), 1)
            finished = {i.key for i in _list(chaos, "finish/")}
            figures[f"{phase}_lost"] = len([n for n in names if n not in finished])
        done = Counter(name for e, name, _ in runs(chaos) if e == "done")
        figures.update({"faults": dict(proxy.counts),
                        "fault_share": round(sum(v for k, v in proxy.counts.items()
                                                 if k != "requests")
                                             / max(1, proxy.counts["requests"]), 3),
                        "processed_more_than_once": sum(1 for c in done.values() if c > 1),
                        "throughput_ratio_faulty_to_clean": round(
                            figures["faulty_jobs_per_s"] / figures["clean_jobs_per_s"], 2)})
        report(chaos, "store_faults", figures)
        assert figures["clean_lost"] == figures["faulty_lost"] == 0
        assert figures["fault_share"] >= 0.05
        assert chaos.counts() == {"wait": 0, "processing": 0, "finish": 600, "failed": 0}
    finally:
        proxy.close()


def test_frozen_worker_is_fenced(chaos: Cli, procs: list[subprocess.Popen[str]]) -> None:
    """SIGSTOP a worker past its lease TTL so another takes its job over, then SIGCONT it:
    its late renewal and completion are rejected and change nothing."""
    submit(chaos, {"frozen_request.json": b'{"sleep": 6}'})
    frozen = chaos.spawn("worker", "--handler", HANDLER, "-c", "1", "--lease-ttl", "5",
                         "--worker-id", "frozen", "--log-level", "info")
    procs.append(frozen)
    wait_for(lambda: any(e == "start" for e, _, _ in runs(chaos)), 30, "the job to start")
    frozen.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    thawed = chaos.spawn("worker", "--handler", HANDLER, "--lease-ttl", "5",
                         "--worker-id", "thawed", "--max-jobs", "1")
    procs.append(thawed)
    assert thawed.wait(90) == 0
    takeover_s = time.monotonic() - t0
    assert chaos.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    before = _snapshot(chaos)
    frozen.send_signal(signal.SIGCONT)
    time.sleep(8)  # it renews (rejected), its handler ends, it tries to complete (rejected)
    after = _snapshot(chaos)
    frozen.send_signal(signal.SIGTERM)
    assert frozen.wait(60) == 0
    logs = "".join(p.read_text() for p in chaos.tmp.glob("worker-*.log"))
    report(chaos, "frozen_worker", {"takeover_s": round(takeover_s, 1),
                                    "state_changed_by_the_fenced_worker": before != after,
                                    "lease_lost_logged": "lease_lost" in logs})
    assert before == after
    assert "lease_lost" in logs
    assert Counter(e for e, _, _ in runs(chaos)) == {"start": 2, "done": 2}


def test_bad_input_under_load(chaos: Cli, procs: list[subprocess.Popen[str]]) -> None:
    """Malformed files, empty files, odd names, crashing and hanging handlers mixed into a
    run of good requests: each ends in finish/ or failed/ with a clear error record, and
    the workers never die."""
    good = {f"load/{i:04d}_request.json": b'{"sleep": 0}' for i in range(150)}
    bad = {
        **{f"bad/malformed-{i}_request.json": b'{"sleep": 0,,' for i in range(5)},
        **{f"bad/empty-{i}_request.json": b"" for i in range(3)},
        **{f"bad/crash-{i}_request.json": b'{"crash": true}' for i in range(4)},
        **{f"bad/hang-{i}_request.json": b'{"hang": true}' for i in range(2)},
    }
    odd = {"odd/spaces and % and + and #_request.json": b'{"sleep": 0}',
           "odd/日本語/リクエスト_request.json": b'{"sleep": 0}',
           "/".join(["deep"] * 12) + "/x_request.json": b'{"sleep": 0}'}
    submit(chaos, {**good, **bad, **odd})
    # The circuit breaker is off: at the end only the 14 bad requests are left, failing in
    # a row, which is what a broken handler looks like; the breaker would (rightly) hold
    # them back instead of dead-lettering them (tests/unit/test_breaker.py). This test is
    # about each bad request ending in failed/ with its error.
    workers = [chaos.spawn("worker", "--exec", EXEC, "-c", "3", "--job-timeout", "3",
                           "--max-attempts", "2", "--retry-base-delay", "0",
                           "--retry-max-delay", "0", "--worker-id", f"bad-{i}",
                           "--breaker-threshold", "0")
               for i in range(2)]
    procs.extend(workers)
    wait_for(lambda: drained(chaos), 240, "every request to settle")
    assert all(w.poll() is None for w in workers), "a worker died"
    for w in workers:
        w.send_signal(signal.SIGTERM)
    assert [w.wait(60) for w in workers] == [0, 0]
    failed = {i.key for i in _list(chaos, "failed/")}
    finished = {i.key for i in _list(chaos, "finish/")}
    assert failed == set(bad)
    assert finished == {*good, *odd}
    messages = {}
    for name in bad:
        shown = json.loads(chaos.run("show", name, "--json").stdout)
        messages[name] = json.dumps(shown)
    for name, text in messages.items():
        if "malformed" in name or "empty" in name:
            assert "JSONDecodeError" in text or "Expecting" in text, (name, text)
        elif "crash" in name:
            assert "asked to crash" in text, (name, text)
        else:
            assert "timed out after 3s" in text, (name, text)
    report(chaos, "bad_input", {"good": len(good) + len(odd), "bad": len(bad),
                                "failed_with_error_record": len(failed),
                                "workers_alive_at_end": 2})


# ---------------------------------------------------------------------- helpers
class _Item:
    def __init__(self, key: str, etag: str) -> None:
        self.key, self.etag = key, etag


_CLIENTS: dict[tuple[str | None, ...], Any] = {}


def _client(cli: Cli) -> Any:
    """One boto3 client per endpoint and key (making one costs ~0.1 s of CPU)."""
    where = tuple(cli.env.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
                                           "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    if where not in _CLIENTS:
        _CLIENTS[where] = boto3.client("s3", endpoint_url=where[0], region_name=where[1],
                                       aws_access_key_id=where[2],
                                       aws_secret_access_key=where[3])
    return _CLIENTS[where]


def _list(cli: Cli, sub: str) -> list[_Item]:
    """Objects under ``sub`` of the queue, keys relative to it."""
    bucket, _, prefix = cli.queue.removeprefix("s3://").partition("/")
    root = prefix.rstrip("/") + "/" + sub
    items = []
    for page in _client(cli).get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=root):
        items += [_Item(o["Key"][len(root):], o["ETag"]) for o in page.get("Contents", [])]
    return items


def _snapshot(cli: Cli) -> dict[str, str]:
    """Every object of the queue but the scanner role (``.s3q/scanner``): a worker alive
    again takes the role when nobody holds it (someone must scan for the fleet), which is
    bookkeeping of the fleet, not a change of any request."""
    return {i.key: i.etag for i in _list(cli, "") if i.key != ROLE_KEY}
