"""``s3q doctor`` and ``s3q worker`` on radosgw 16 (Debian 12's Ceph): a real S3 server
that answers 412 to ``If-None-Match: *`` on an existing key, but also to ``If-Match`` with
the current ETag (it compares the header with the unquoted ETag), and ignores ``If-Match``
on DeleteObject and both CopyObject conditions. s3q must refuse it, saying why."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from s3q.backends import s3multipart
from s3q.backends.s3 import S3Store
from tests.acceptance.conftest import Cli
from tests.s3server import S3Endpoint

pytestmark = pytest.mark.slow


@pytest.fixture
def rgw_cli(radosgw: S3Endpoint, tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3Q_"))}
    assert radosgw.endpoint_url and radosgw.access_key_id and radosgw.secret_access_key
    env.update({
        "S3Q_QUEUE": f"s3://{radosgw.bucket}/acc/{uuid4().hex}", "S3Q_IMDS": "off",
        "AWS_ENDPOINT_URL": radosgw.endpoint_url, "AWS_DEFAULT_REGION": radosgw.region,
        "AWS_ACCESS_KEY_ID": radosgw.access_key_id,
        "AWS_SECRET_ACCESS_KEY": radosgw.secret_access_key,
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "NO_PROXY": "127.0.0.1,localhost",
    })
    return Cli(env=env, queue=env["S3Q_QUEUE"], log=tmp_path / "runs.log", tmp=tmp_path)


def test_doctor_refuses_radosgw_naming_each_broken_guarantee(rgw_cli: Cli) -> None:
    text = rgw_cli.run("doctor", check=False)
    assert text.returncode == 1, text.stdout + text.stderr
    out = text.stdout
    for seen in (r"OK +create-if-absent +412 over an existing key; 8 concurrent writes",
                 r"MISSING +compare-and-swap +PUT If-Match with the current ETag \"\w+\" "
                 r"refused \(412\); the same ETag without its quotes \(\w+\) is accepted",
                 r"MISSING +conditional delete +DELETE If-Match with a stale ETag deleted the "
                 r"object \(If-Match ignored\)",
                 r"OK +listing order",
                 r"MISSING +copy source condition +CopyObject with a stale",
                 r"MISSING +copy create-if-absent +CopyObject If-None-Match: \* over an "
                 r"existing key copied anyway",
                 r"MISSING +multipart create-if-absent +CompleteMultipartUpload If-None-Match: "
                 r"\* over an existing key was accepted: the object was replaced"):
        assert re.search("^" + seen, out, re.M), (seen, out)
    assert out.splitlines()[-1] == ("verdict: NOT SAFE: 2 required not shown to hold: "
                                    "compare-and-swap (MISSING), conditional delete (MISSING)")
    data = json.loads(rgw_cli.run("doctor", "--json", check=False).stdout)
    assert data["ok"] is False
    assert {c["name"]: c["status"] for c in data["checks"] if c["status"] != "OK"} == {
        "compare_and_swap": "MISSING", "conditional_delete": "MISSING",
        "copy_source_if_match": "MISSING", "copy_if_none_match": "MISSING",
        "multipart_if_none_match": "MISSING", "batch_conditional_delete": "MISSING"}


def test_a_worker_refuses_to_start_on_radosgw(rgw_cli: Cli) -> None:
    names = rgw_cli.submit(1)
    run = rgw_cli.run("worker", "--exec", f"{sys.executable} -c pass", "--burst",
                      check=False)
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("s3q: error:")]
    assert len(errors) == 1, run.stderr
    assert "compare-and-swap: PUT If-Match with the current ETag" in errors[0]
    assert "conditional delete: DELETE If-Match with a stale ETag deleted the object" \
        in errors[0]
    assert [w for w in rgw_cli.run("ls", "wait").stdout.split() if w in names] == names


def test_etags_are_quoted_even_where_radosgw_leaves_them_off(radosgw: S3Endpoint) -> None:
    """radosgw 16 sends CopyObject's result ETag without quotes; S3Store quotes it, so the
    ETag of a copy is the one a HEAD of it gives."""
    store = S3Store(radosgw.bucket, f"etag/{uuid4().hex}", radosgw.options())
    store.put("a", b"bytes")
    copied = store.copy("a", "b")
    assert copied.etag.startswith('"') and copied.etag == store.head("b").etag


def test_the_etag_of_a_multipart_write_is_read_back_where_radosgw_leaves_it_empty(
        radosgw: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """radosgw 16 answers CompleteMultipartUpload with ``<ETag></ETag>``; S3Store reads the
    ETag back (from the object that carries its upload's token), so the ETag of a write in
    parts is the one a HEAD of it gives, not ``""`` (a view's delete names it). S3's limit
    on one request is lowered to 5 MiB, S3's least part, to write in parts here."""
    monkeypatch.setattr(s3multipart, "SINGLE_MAX", 5 * 1024**2)
    monkeypatch.setattr(s3multipart, "PART_SIZE", 5 * 1024**2)
    store = S3Store(radosgw.bucket, f"etag/{uuid4().hex}", radosgw.options())
    data = os.urandom(6 * 1024**2)
    put = store.put("a", data, if_none_match=True)
    copied = store.copy("a", "b", if_none_match=True)
    assert store.request_counts["CompleteMultipartUpload"] == 2
    assert put.etag == store.head("a").etag and put.etag.endswith('-2"')
    assert copied.etag == store.head("b").etag and copied.etag.endswith('-2"')
    assert store.get("b")[0] == data
