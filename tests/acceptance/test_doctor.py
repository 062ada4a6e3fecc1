"""``s3q doctor`` and the worker's start-up check of its store, through the real ``s3q``
executable: on moto, and on moto behind tests/storeproxy.py ignoring DeleteObject's
If-Match (as MinIO does)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from s3q.guarantees import ROWS
from tests.acceptance.conftest import Cli
from tests.s3server import S3Endpoint
from tests.storeproxy import Behaviour, StoreProxy

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def minio_like(s3_endpoint: S3Endpoint) -> Iterator[dict[str, str]]:
    """The environment of a store that ignores If-Match on DeleteObject."""
    if not s3_endpoint.is_moto or not s3_endpoint.endpoint_url:
        pytest.skip("needs a local S3 endpoint to put the proxy in front of")
    proxy = StoreProxy(s3_endpoint.endpoint_url, Behaviour(ignore_delete_if_match=True))
    yield {"AWS_ENDPOINT_URL": proxy.url}
    proxy.close()


def test_doctor_on_moto(cli: Cli) -> None:
    text = cli.run("doctor")
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"s3q doctor: {cli.queue} (s3q ")
    assert lines[-1] == "verdict: OK: every guarantee a worker needs holds"
    for name, row in ROWS.items():
        if row.required:
            assert re.search(rf"^OK +{re.escape(row.title)} +\S", text.stdout, re.M), name
    assert re.search(r"^MISSING +copy create-if-absent +CopyObject If-None-Match", text.stdout,
                     re.M)  # moto ignores it: reported, not required
    data = json.loads(cli.run("doctor", "--json").stdout)
    assert data["schema"] == "s3q.doctor/1" and data["ok"] is True
    assert data["store"] == cli.queue
    assert ISO.fullmatch(data["started_at"]) and ISO.fullmatch(data["finished_at"])
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["create_if_absent"]["status"] == "OK"
    assert checks["create_if_absent"]["required"] is True
    assert data["capabilities"]["etags"] == "md5"


def test_doctor_names_a_missing_guarantee_and_exits_1(cli: Cli,
                                                       minio_like: dict[str, str]) -> None:
    text = cli.run("doctor", env=minio_like, check=False)
    assert text.returncode == 1, text.stderr
    assert re.search(r"^MISSING +conditional delete +DELETE If-Match with a stale ETag "
                     r"deleted the object", text.stdout, re.M), text.stdout
    assert "to do: use a store that honours DeleteObject If-Match" in text.stdout
    assert text.stdout.splitlines()[-1] == ("verdict: NOT SAFE: 1 required not shown to "
                                            "hold: conditional delete (MISSING)")
    data = json.loads(cli.run("doctor", "--json", env=minio_like, check=False).stdout)
    assert data["ok"] is False
    assert [c["name"] for c in data["checks"] if c["status"] != "OK" and c["required"]] == [
        "conditional_delete"]


def test_a_worker_refuses_a_store_missing_a_guarantee(cli: Cli,
                                                      minio_like: dict[str, str]) -> None:
    names = cli.submit(2)
    run = cli.run("worker", "--exec", "true", "--burst", env=minio_like, check=False)
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("s3q: error:")]
    assert len(errors) == 1, run.stderr
    assert "conditional delete: DELETE If-Match with a stale ETag deleted the object" \
        in errors[0]
    assert "to do: use a store that honours DeleteObject If-Match" in errors[0]
    assert sorted(i for i in cli.run("ls", "wait").stdout.split() if i in names) == names


def test_a_worker_checks_its_store_once_and_then_reads_the_result(cli: Cli) -> None:
    cli.submit(1)
    first = cli.run("worker", "--exec", "true", "--burst")
    second = cli.run("worker", "--exec", "true", "--burst")
    again = cli.run("worker", "--exec", "true", "--burst", "--probe-max-age", "0")
    checked = [[json.loads(line) for line in run.stderr.splitlines()
                if '"store_checked"' in line] for run in (first, second, again)]
    assert [[e["cached"] for e in c] for c in checked] == [[False], [True], [False]]
    assert checked[0][0]["capabilities"]["create_if_absent"] is True
    assert checked[1][0]["capabilities"] == checked[0][0]["capabilities"]
    assert cli.counts()["finish"] == 1
