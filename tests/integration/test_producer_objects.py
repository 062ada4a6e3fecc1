"""What other producers put into wait/ on S3 (moto's server), as they put it there: the
objects the S3 console, the AWS CLI and the SDKs create, and how a worker, ``s3q status``
and a burst treat each."""

from __future__ import annotations

import logging
from uuid import uuid4

import pytest

from s3q import Queue, State
from s3q.cli.status import queue_status
from s3q.worker import Worker, WorkerOptions
from tests.s3server import MakeS3Store, S3Endpoint


def test_the_consoles_folder_marker_of_wait_itself_is_no_request_and_no_problem(
        s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
        caplog: pytest.LogCaptureFixture) -> None:
    """The S3 console's "Create folder" named ``wait`` under the queue's prefix leaves the
    zero-byte key ``PREFIX/wait/``: its name below wait/ is empty. Like ``wait/incoming/``
    it is a folder marker, no request: never claimed, not reported as a name to rename, and
    no problem for ``s3q status --check`` (which a deployment's ValidateService runs)."""
    prefix = f"t/{uuid4().hex}"
    client = s3_endpoint.client()
    for folder in ("wait/", "wait/incoming/"):
        client.put_object(Bucket=s3_endpoint.bucket, Key=f"{prefix}/{folder}", Body=b"")
    q = Queue(make_s3_store(prefix=prefix))
    q.submit("incoming/a_request.json", b"{}")

    with caplog.at_level(logging.WARNING, logger="s3q"):
        stats = Worker(q, lambda job: None,
                       WorkerOptions("w-folders", concurrency=1, burst=True)).run()
        status = queue_status(q)

    assert stats.completed == 1
    assert [i.key for i in q.ls(State.FINISH)] == ["incoming/a_request.json"]
    assert [r.getMessage() for r in caplog.records
            if getattr(r, "event", "") == "name_unusable"] == []
    assert status["problems"] == [] and status["healthy"]
    assert status["counts"]["wait"] == 0
    for folder in ("wait/", "wait/incoming/"):  # left alone
        head = client.head_object(Bucket=s3_endpoint.bucket, Key=f"{prefix}/{folder}")
        assert head["ContentLength"] == 0
