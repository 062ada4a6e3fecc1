"""The scanner role with real ``s3q worker`` processes: ten idle workers, one scanner; the
scanner killed, another takes the role over within the bound of docs/PROTOCOL.md §4."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import pytest

from tests.acceptance.conftest import Cli, kill_tree, wait_for
from tests.acceptance.eventing import log_events, seen
from tests.s3server import S3Endpoint


# ---------------------------------------------------------------------------- scanner role
def role(cli: Cli, s3_endpoint: S3Endpoint) -> dict[str, Any]:
    bucket, _, prefix = cli.queue.removeprefix("s3://").partition("/")
    try:
        body = s3_endpoint.client().get_object(Bucket=bucket, Key=f"{prefix}/.s3q/scanner")
    except Exception:
        return {}
    data: dict[str, Any] = json.loads(body["Body"].read())
    return data


@pytest.mark.slow
def test_ten_idle_workers_share_one_scanner_and_a_killed_one_hands_it_on(
        cli: Cli, procs: list[subprocess.Popen[str]], s3_endpoint: S3Endpoint) -> None:
    ttl = 20.0  # lease_ttl: scan every 10 s, the role's TTL 13.3 s
    scan, role_ttl = ttl / 2, ttl - ttl / 3
    before = set(cli.tmp.glob("worker-*.log"))
    workers = {f"w{i}": cli.worker("--worker-id", f"w{i}", "--lease-ttl", str(ttl),
                                   "--log-level", "debug") for i in range(10)}
    procs.extend(workers.values())
    logs = sorted(set(cli.tmp.glob("worker-*.log")) - before)
    wait_for(lambda: all(seen(lambda p=p: log_events(p), "worker_started")  # type: ignore[misc]
                         for p in logs), 60, "ten workers to start")

    def scans() -> dict[str, int]:
        counts: dict[str, int] = {}
        for path in logs:
            for e in log_events(path):
                if e.get("event") == "scanned":
                    counts[str(e["worker"])] = counts.get(str(e["worker"]), 0) + 1
        return counts

    wait_for(lambda: role(cli, s3_endpoint), 30, "a scanner")
    first = role(cli, s3_endpoint)
    at_start = scans()
    wait_for(lambda: scans().get(first["worker"], 0) >= at_start.get(first["worker"], 0) + 2,
             4 * scan, "two more scans")
    held = role(cli, s3_endpoint)
    assert (held["worker"], held["gen"]) == (first["worker"], first["gen"]), (first, held)
    assert set(scans()) == {first["worker"]}, scans()  # nobody else ever scanned

    kill_tree(workers[first["worker"]], signal.SIGKILL)
    wait_for(lambda: role(cli, s3_endpoint).get("worker") not in (None, first["worker"]),
             role_ttl + 2 + scan + 10, "another worker to take the scanner role")
    successor = role(cli, s3_endpoint)
    assert successor["gen"] == first["gen"] + 1 and successor["worker"] in workers
    wait_for(lambda: successor["worker"] in scans(), 2 * scan, "the successor to scan")
    assert set(scans()) == {first["worker"], successor["worker"]}
    assert all(p.poll() is None for w, p in workers.items() if w != first["worker"])
