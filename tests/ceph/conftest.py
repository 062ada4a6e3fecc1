"""radosgw, Ceph's S3 server, as a second real S3 implementation: one node started once per
session by ``rgw-up`` (a monitor, a memstore OSD and radosgw on loopback, about 15 s) and
stopped by ``rgw-down``. Skipped, with the reason, where Debian's ceph-mon, ceph-osd,
ceph-common and radosgw are not installed (``.ci/run`` installs them when it can)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3server import S3Endpoint, free_port

HERE = Path(__file__).resolve().parent
COMMANDS = ("ceph-mon", "ceph-osd", "ceph", "monmaptool", "radosgw", "radosgw-admin")
BUCKET = "s3q-probe"


@pytest.fixture(scope="session")
def radosgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    absent = [c for c in COMMANDS if shutil.which(c) is None]
    if absent:
        pytest.skip(f"radosgw is not installed ({', '.join(absent)} not found): apt-get "
                    "install ceph-mon ceph-osd ceph-common radosgw (as .ci/run does as root)")
    version = subprocess.run(["radosgw", "--version"], text=True, capture_output=True,
                             timeout=60, check=False).stdout
    if not version.startswith("ceph version 16."):
        pytest.skip(f"these tests state what radosgw 16 does, not {version.strip()!r}: run "
                    "'s3q doctor' on it and record what it finds in docs/OPERATIONS.md")
    where = tmp_path_factory.mktemp("radosgw")
    port = free_port()
    try:
        started = subprocess.run([str(HERE / "rgw-up"), str(where), str(port)], text=True,
                                 capture_output=True, timeout=300, check=False)
        if started.returncode != 0:
            pytest.fail(f"rgw-up failed (exit {started.returncode}):\n{started.stdout}\n"
                        f"{started.stderr[-4000:]}")
        endpoint = S3Endpoint(f"http://127.0.0.1:{port}", BUCKET, "us-east-1", "s3q-key",
                              "s3q-secret", is_moto=False)
        endpoint.client().create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        subprocess.run([str(HERE / "rgw-down"), str(where)], timeout=60, check=False)
