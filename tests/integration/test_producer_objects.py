"""What other producers put into wait/ on S3 (moto's server), as they put it there: the
objects the S3 console, the AWS CLI and the SDKs create, and how a worker, ``s3q status``
and a burst treat each."""

from __future__ import annotations

import logging
import os
from html import unescape
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from click.testing import CliRunner

from s3q import Queue, State, layout
from s3q.cli import cli
from s3q.cli.status import queue_status
from s3q.dashboard.app import create_app
from s3q.dashboard.security import Credentials
from s3q.dashboard.snapshot import take_snapshot
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


def test_the_dashboard_says_which_names_in_wait_are_never_claimed(
        s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store, tmp_path: Path) -> None:
    """A name another S3 client put into wait/ that no claim ever takes (one too long for
    the keys s3q derives from it; one that is no usable key, ``a//b_request.json``), or a
    local file no key can hold: ``s3q status`` names each as a problem; the dashboard's
    overview shows "the problems status --check reports", so it names them too, rather than
    showing a request waiting for ever (the too long one is counted in wait/) and nothing
    wrong."""
    prefix = f"t/{uuid4().hex}"
    client = s3_endpoint.client()
    q = Queue(make_s3_store(prefix=prefix))
    room = q.store.max_key_bytes - len(b"wait/")
    too_long = "d/" * 200 + "x" * (room - 400 - len("_request.json")) + "_request.json"
    assert not q.ctx.fits(too_long)
    for name in (too_long, "a//b_request.json"):
        client.put_object(Bucket=s3_endpoint.bucket, Key=f"{prefix}/wait/{name}", Body=b"{}")
    local = Queue(str(tmp_path / "root"))
    dropped = tmp_path / "root" / "wait" / "new\nline_request.json"
    dropped.parent.mkdir(parents=True)
    dropped.write_bytes(b"{}")

    for queue, expected in ((q, 2), (local, 1)):
        said = [p for p in queue_status(queue)["problems"] if "never claimed" in p]
        assert len(said) == expected, said
        snap = take_snapshot(queue)
        assert [p for p in snap.problems if "never claimed" in p] == said
        page = create_app(queue, Credentials(), refresh=1).test_client().get("/")
        assert all(p in unescape(page.get_data(as_text=True)) for p in said)


def test_local_links_and_special_files_in_wait_are_reported_not_hidden(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What a producer may leave in a local queue's wait/ that the store never lists (so
    that no claim reads through it): a symlink to a request file outside the store's root
    (``ln -s /data/in/x.json wait/``), one whose target is gone, a symlink to a directory
    (never followed: nothing below it is claimed), and a named pipe. Each was left out of
    every listing without a word, so ``s3q status`` said the queue was healthy with nothing
    waiting while the request sat there for ever; each is now reported as what the store
    cannot list (once per worker process), as an unreadable file is."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "x.json").write_bytes(b"{}")
    (outside / "dir" / "y_request.json").write_bytes(b"{}")
    wait = root / "wait"
    wait.mkdir(parents=True)
    (wait / "linked_request.json").symlink_to(outside / "x.json")
    (wait / "gone_request.json").symlink_to(outside / "missing.json")
    (wait / "linked_dir").symlink_to(outside / "dir", target_is_directory=True)
    os.mkfifo(wait / "pipe_request.json")
    (wait / "2026" / "12").mkdir(parents=True)  # a link into wait/ itself hides nothing:
    (wait / "2026" / "12" / "d_request.json").write_bytes(b"{}")  # (listed where it is)
    os.utime(wait / "2026" / "12" / "d_request.json", (1, 1))
    (wait / "today").symlink_to(wait / "2026" / "12", target_is_directory=True)
    q = Queue(str(root))
    q.submit("good_request.json", b"good")

    with caplog.at_level(logging.WARNING, logger="s3q"):
        status = queue_status(q)
    left = {"gone_request.json", "linked_dir/", "linked_request.json", "pipe_request.json"}
    warned = {r.getMessage().split(": ", 1)[0] for r in caplog.records
              if getattr(r, "event", "") == "unreadable"}
    stats = Worker(q, lambda job: None,
                   WorkerOptions("w-links", concurrency=1, burst=True)).run()
    assert stats.completed == 2  # (and nothing read through a link: see test_bad_input)
    assert warned == {str(wait / k).rstrip("/") + ("/" if k.endswith("/") else "")
                      for k in left}, warned
    [problem] = [p for p in status["problems"] if "cannot list" in p]
    assert problem.startswith("4 file(s) or folder(s) in wait/ the store cannot list")
    assert not status["healthy"]
    for name in ("linked_request.json", "gone_request.json", "linked_dir"):
        assert (wait / name).is_symlink()  # left where they were
    assert (outside / "x.json").read_bytes() == b"{}"


def test_submit_refuses_names_too_long_for_the_store_before_submitting_any(
        s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``s3q submit DIR`` checks every name against the filter before it submits any, but
    a name too long for the store's keys was refused only when its turn came: the files
    uploaded before it stayed in wait/ (submitted again, and perhaps run again, when the
    command is repeated once the name is fixed), and the message did not say what length
    would do. Now nothing is submitted, and the message says how long a name may be."""
    for name in [n for n in os.environ if n.startswith(("S3Q_", "AWS_"))]:
        monkeypatch.delenv(name)
    prefix = f"t/{uuid4().hex}"
    monkeypatch.setenv("S3Q_QUEUE", f"s3://{s3_endpoint.bucket}/{prefix}")
    monkeypatch.setenv("S3Q_IMDS", "off")
    monkeypatch.setenv("S3Q_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_endpoint.region)
    if s3_endpoint.endpoint_url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint.endpoint_url)
    if s3_endpoint.access_key_id and s3_endpoint.secret_access_key:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_endpoint.access_key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_endpoint.secret_access_key)
    monkeypatch.chdir(tmp_path)
    src = Path("in")
    deep = src / "/".join(["d" * 200] * 4) / ("x" * 150 + "_request.json")  # 967 bytes
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"{}")
    for i in range(20):
        (src / f"{i:02d}_request.json").write_bytes(b"{}")
    q = Queue(make_s3_store(prefix=prefix))
    most = q.store.max_key_bytes - len(layout.longest_key("").encode())

    out = CliRunner().invoke(cli, ["submit", str(src)], catch_exceptions=False)

    assert out.exit_code == 2, out.output
    assert "nothing was submitted" in out.output and f"at most {most} bytes" in out.output
    assert list(q.ls(State.WAIT)) == []
    q.store.put(f"wait/{deep.relative_to(src)}", b"{}")  # (put there by another client)
    [said] = [p for p in queue_status(q)["problems"] if "too long" in p]
    assert f"rename them (to at most {most} bytes)" in said


def test_a_local_queue_whose_wait_links_out_of_its_root_refuses_to_open(
        tmp_path: Path) -> None:
    """``ln -s /mnt/incoming QUEUE/wait``: the store never reads through a link leading
    out of its root, so the queue looked empty (status healthy, nothing waiting, a burst
    worker ending at once) while the requests sat there for ever. Every command now stops
    at once and says why; a link inside the root still works."""
    root, incoming = tmp_path / "q", tmp_path / "incoming"
    root.mkdir()
    incoming.mkdir()
    (incoming / "a_request.json").write_bytes(b"{}")
    os.utime(incoming / "a_request.json", (0, 0))  # (settled: not being written)
    (root / "wait").symlink_to(incoming, target_is_directory=True)
    for args in (["status"], ["worker", "--burst", "--handler", "json:loads"]):
        result = CliRunner().invoke(cli, [*args, "--queue", str(root)])
        assert result.exit_code != 0, result.output
        assert (f"{root / 'wait'} -> {incoming}: a symbolic link leading out of the store's "
                "root") in result.output
        assert "nothing under it would ever be listed or claimed" in result.output
    assert (incoming / "a_request.json").exists()
    (root / "wait").unlink()
    inside = root / "incoming"
    inside.mkdir()
    (incoming / "a_request.json").rename(inside / "a_request.json")
    (root / "wait").symlink_to("incoming", target_is_directory=True)
    assert [i.key for i in Queue(str(root)).ls(State.WAIT)] == ["a_request.json"]


def _claimed_twice(s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
                   caplog: pytest.LogCaptureFixture, objects: dict[str, bytes]
                   ) -> tuple[list[str], dict[str, Any]]:
    """``objects`` (keys below a fresh prefix) put by another client, then two claims and
    s3q status: (what the worker said of names it never claims, the status)."""
    prefix = f"t/{uuid4().hex}"
    client = s3_endpoint.client()
    for key, body in objects.items():
        client.put_object(Bucket=s3_endpoint.bucket, Key=f"{prefix}/{key}", Body=body)
    q = Queue(make_s3_store(prefix=prefix))
    with caplog.at_level(logging.WARNING, logger="s3q"):
        assert q.claim("w") is None
        assert q.claim("w") is None  # (said once)
        status = queue_status(q)
    return [r.getMessage() for r in caplog.records
            if getattr(r, "event", "") == "name_unusable"], status


def test_a_key_ending_in_a_slash_that_holds_bytes_is_reported_not_taken_for_a_folder(
        s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
        caplog: pytest.LogCaptureFixture) -> None:
    """A producer's bug: ``put_object(Key="wait/orders/", Body=...)`` (a file name lost
    from the key). Only an empty such key is a folder marker; this one holds a request's
    bytes. It was left out without a word, as a marker; it is now said once ("rename it")
    and named by ``s3q status``, the empty marker beside it still no problem."""
    said, status = _claimed_twice(s3_endpoint, make_s3_store, caplog,
                                  {"wait/orders/": b'{"a": 1}', "wait/empty/": b""})
    assert len(said) == 1 and "'orders/'" in said[0] and "rename it" in said[0], said
    [problem] = [p for p in status["problems"] if "not usable keys" in p]
    assert "'orders/'" in problem and "'empty/'" not in problem


def test_wait_itself_holding_bytes_is_reported_not_taken_for_a_folder(
        s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
        caplog: pytest.LogCaptureFixture) -> None:
    """The same producer's bug with the whole file name lost: ``put_object(Key=PREFIX +
    "/wait/" + name, Body=...)`` with an empty ``name`` leaves ``PREFIX/wait/`` holding a
    request's bytes. Only the empty such key is the marker of a folder named ``wait``; this
    one is said once ("rename it") and named by ``s3q status``."""
    said, status = _claimed_twice(s3_endpoint, make_s3_store, caplog,
                                  {"wait/": b'{"a": 1}'})
    assert len(said) == 1 and "wait/''" in said[0] and "rename it" in said[0], said
    assert [p for p in status["problems"] if "not usable keys" in p], status["problems"]
    assert not status["healthy"]
