"""Awkward and hostile input, on moto's S3 server and on the local directory store: odd but
valid request names, files dropped into wait/ by something else than s3q, names outside the
queue's filter, invalid names, symlinks leading out of a local store, and a handler that
fails on one malformed request among good ones."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from s3q import InvalidKey, Job, NotFound, Queue, QueueConfig, State
from s3q.backends.local import LocalStore
from s3q.store import LeftOut, list_all
from s3q.worker import Worker, WorkerOptions
from tests.s3server import MakeS3Store, S3Endpoint


@dataclass
class Backend:
    """One queue location, reachable through s3q and behind its back."""

    kind: str
    #: A new Queue (with its own store) on the location.
    queue: Callable[[QueueConfig | None], Queue]
    #: Write ``wait/NAME`` without s3q (boto3 put_object / a plain file write).
    drop: Callable[[str, bytes], None]
    #: Read the object at a store-relative key without s3q (None if absent).
    raw: Callable[[str], bytes | None]


@pytest.fixture(params=["s3", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened: list[Queue] = []
    if request.param == "s3":
        endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
        make: MakeS3Store = request.getfixturevalue("make_s3_store")
        prefix = f"t/{uuid4().hex}"
        client = endpoint.client()

        def queue(config: QueueConfig | None) -> Queue:
            q = Queue(make(prefix=prefix), config)
            opened.append(q)
            return q

        def drop(name: str, data: bytes) -> None:
            client.put_object(Bucket=endpoint.bucket, Key=f"{prefix}/wait/{name}", Body=data)

        def raw(key: str) -> bytes | None:
            try:
                resp = client.get_object(Bucket=endpoint.bucket, Key=f"{prefix}/{key}")
            except client.exceptions.NoSuchKey:
                return None
            return resp["Body"].read()

        yield Backend("s3", queue, drop, raw)
    else:
        root = tmp_path / "root"

        def queue(config: QueueConfig | None) -> Queue:
            q = Queue(str(root), config)
            opened.append(q)
            return q

        def drop(name: str, data: bytes) -> None:
            """A file a producer finished writing (cp) a minute ago: the local store lists
            another program's files once nobody wrote to them for its settle time."""
            path = root / "wait" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            then = time.time_ns() - 60 * 10**9
            os.utime(path, ns=(then, then))

        def raw(key: str) -> bytes | None:
            path = root / key
            return path.read_bytes() if path.is_file() else None

        yield Backend("local", queue, drop, raw)
    for q in opened:
        q.close()


def _drain(q: Queue, worker_id: str = "w") -> dict[str, bytes]:
    """Claim and complete everything claimable; {name: body read}."""
    seen: dict[str, bytes] = {}
    while (job := q.claim(worker_id)) is not None:
        assert job.name not in seen, f"{job.name} claimed twice"
        seen[job.name] = job.read()
        job.complete()
    return seen


ODD_NAMES: dict[str, bytes] = {
    "with spaces  in it request.json": b'{"space": true}',
    "日本語/リクエスト request.json": "{\"text\": \"日本語\"}".encode(),
    "émoji 🚀/naïve request.json": bytes(range(256)) * 3,  # binary, not UTF-8
    "100% sure %41%2F request.json": b"%41 is not A",
    "a+b=c+d request.json": b"plus",
    "issue#12 #tag request.json": b"hash",
    "?query&amp=1;x=~'quoted'! request.json": b"query-like",
    "/".join(f"level{i}" for i in range(15)) + "/deep request.json": b"deep",
    "empty_request.json": b"",
}


def test_odd_names_round_trip(backend: Backend) -> None:
    q = backend.queue(None)
    for name, data in ODD_NAMES.items():
        info = q.submit(name, data)
        assert info.size == len(data)
    assert {i.key for i in q.ls(State.WAIT)} == set(ODD_NAMES)

    seen = _drain(q)

    assert seen == ODD_NAMES  # every name claimed once, read back byte-exact
    assert q.counts() == {"wait": 0, "processing": 0, "finish": len(ODD_NAMES), "failed": 0}
    assert {i.key: i.size for i in q.ls(State.FINISH)} == {
        n: len(d) for n, d in ODD_NAMES.items()}
    for name, data in ODD_NAMES.items():  # under the same name, seen without s3q
        assert backend.raw(f"finish/{name}") == data, name
        assert backend.raw(f"wait/{name}") is None
        assert backend.raw(f"processing/{name}") is None
    assert list(q.leases()) == []


def test_dropped_files_are_processed(backend: Backend) -> None:
    dropped = {
        "dropped_request.json": b'{"by": "aws s3 cp"}',
        "drop+plus #hash 100% ünï request.json": b"odd characters, dropped",
        "2026/11/nested dropped request.json": b'{"nested": 1}',
        "zero_request.json": b"",
    }
    for name, data in dropped.items():
        backend.drop(name, data)
    q = backend.queue(None)
    q.submit("submitted_request.json", b"{}")

    seen = _drain(q)

    assert seen == {**dropped, "submitted_request.json": b"{}"}
    for name, data in dropped.items():
        assert backend.raw(f"finish/{name}") == data
    assert q.counts() == {"wait": 0, "processing": 0, "finish": len(dropped) + 1, "failed": 0}


def test_names_outside_the_filter_are_never_touched(backend: Backend) -> None:
    q = backend.queue(QueueConfig(filter="*request.json"))
    others = {
        "notes.txt": b"not a request",
        "a_request.json.bak": b"backup",
        "sub/README.md": b"readme",
        "request.json.tmp": b"partial upload",
    }
    for name, data in others.items():
        backend.drop(name, data)
        with pytest.raises(InvalidKey, match="does not match the queue's filter"):
            q.submit(name, data)
    q.submit("good_request.json", b"good")
    before = {i.key: i for i in list_all(q.store, "wait/")}

    assert _drain(q) == {"good_request.json": b"good"}
    assert q.claim("w") is None

    after = {i.key: i for i in list_all(q.store, "wait/")}
    assert after == {k: v for k, v in before.items() if k != "wait/good_request.json"}
    for name, data in others.items():  # same bytes, same ETag, same Last-Modified
        assert backend.raw(f"wait/{name}") == data
        assert q.lease(name) is None
        for state in ("processing", "finish", "failed"):
            assert backend.raw(f"{state}/{name}") is None
    assert [i.key for i in q.ls(State.WAIT)] == []  # the queue does not count them
    assert q.counts()["finish"] == 1


INVALID_NAMES = [
    "../x_request.json", "a/../../x", "/abs_request.json", "a//b", "x\x00y", "",
    "./x", "a/./b", "dir/", "new\nline", "back\\slash", "tab\there", "a/\x7f",
]


@pytest.mark.parametrize("name", INVALID_NAMES, ids=repr)
def test_invalid_names_are_rejected(backend: Backend, name: str) -> None:
    q = backend.queue(None)
    with pytest.raises(InvalidKey):
        q.submit(name, b"data")
    assert list(list_all(q.store, "")) == []  # nothing written anywhere
    with pytest.raises(InvalidKey):
        q.store.head(f"wait/{name}")


#: Objects in wait/ that s3q could not name as requests: on S3, what the console's "Create
#: folder" leaves ("incoming/"), and keys with empty or ".." segments; on a file system, file
#: names no S3 key validation accepts.
UNUSABLE_DROPS = {
    "s3": ["incoming/", "a//b_request.json", "x/../y_request.json"],
    "local": ["new\nline_request.json", "back\\slash_request.json"],
}


def test_unusable_names_in_wait_do_not_stop_a_burst_worker(backend: Backend) -> None:
    # e.g. the folder marker the S3 console's "Create folder" leaves behind
    for name in UNUSABLE_DROPS[backend.kind]:
        backend.drop(name, b"")
    q = backend.queue(QueueConfig(page_size=1000))
    good = [f"r{i:02d}_request.json" for i in range(20)]
    for name in good:
        q.submit(name, b"{}")

    stats = Worker(q, lambda job: None,
                   WorkerOptions("w-unusable", concurrency=1, burst=True)).run()

    assert stats.completed == len(good)
    assert sorted(i.key for i in q.ls(State.FINISH)) == good
    assert q.counts()["wait"] == 0
    for name in UNUSABLE_DROPS[backend.kind]:  # left alone
        assert backend.raw(f"wait/{name}") == b""
        assert backend.raw(f"processing/{name}") is None


def test_unusable_names_in_wait_are_reported_not_hidden(
        backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    """A name that matches the filter but is no usable key is never claimed: the worker
    says so once per name (which name, why, "rename it"), and `s3q status` lists it as a
    problem (on S3 a key it lists; a file the local store's listing leaves out); a "folder"
    marker is no request and is not reported."""
    import logging

    from s3q.cli.status import queue_status

    for name in UNUSABLE_DROPS[backend.kind]:
        backend.drop(name, b"")
    q = backend.queue(QueueConfig(page_size=1000))
    with caplog.at_level(logging.WARNING, logger="s3q"):
        assert q.claim("w") is None
        assert q.claim("w") is None  # (reported once)
    reported = [r for r in caplog.records
                if getattr(r, "event", "") in ("name_unusable", "unusable_name")]
    texts = [r.getMessage() for r in reported]
    names = [n for n in UNUSABLE_DROPS[backend.kind] if not n.endswith("/")]
    assert len(reported) == len(names), texts
    for name in names:
        assert any(repr(name)[1:-1] in t and "rename it" in t for t in texts), (name, texts)
    unusable: list[str] = []
    left_out: list[LeftOut] = []
    assert list(q.ls(State.WAIT, unusable, left_out)) == []
    status = queue_status(q)
    if backend.kind == "s3":  # keys S3 lists, which s3q cannot use
        assert sorted(unusable) == sorted(names) and left_out == []
        assert any("not usable keys" in p and "a//b_request.json" in p
                   for p in status["problems"]), status["problems"]
    else:  # files the local store cannot list: the page says which
        assert unusable == [] and len(left_out) == len(names), left_out
        assert sorted(e.key for e in left_out) == sorted(
            "wait/" + repr(name)[1:-1] for name in names)
        assert [p for p in status["problems"] if "cannot list" in p] == [
            "2 file(s) or folder(s) in wait/ the store cannot list (unreadable, or a name no "
            "key can hold): never claimed; fix or rename them: "
            + "; ".join(f"{e.key}: its name is not a usable key" for e in left_out)]
    assert not status["healthy"]


def test_a_local_file_the_filter_refuses_is_no_problem_however_it_is_named(
        tmp_path: Path) -> None:
    """As on S3, a name in wait/ that no key can hold is a problem only when it matches
    the queue's filter: another program's ``notes\nold.txt`` there is none of s3q's
    business, and must not fail ``status --check``."""
    from s3q.cli.status import queue_status

    q = Queue(LocalStore(tmp_path / "q"), QueueConfig(filter="*request.json"))
    (tmp_path / "q" / "wait").mkdir(parents=True, exist_ok=True)
    for name in ("notes\nold.txt", "new\nline_request.json"):
        (tmp_path / "q" / "wait" / name).write_bytes(b"{}")
    status = queue_status(q)
    [problem] = [p for p in status["problems"] if "cannot list" in p]
    assert "new\\nline_request.json" in problem and "notes" not in problem, problem


def test_local_symlinks_cannot_escape_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret_request.json"
    secret.write_bytes(b"secret outside the root")
    (outside / "inner_request.json").write_bytes(b"also outside")
    secret_stat = secret.stat()
    q = Queue(LocalStore(root))
    wait = root / "wait"
    wait.mkdir(parents=True, exist_ok=True)
    (wait / "escape_request.json").symlink_to(secret)  # a file link leading out
    (wait / "linkdir").symlink_to(outside, target_is_directory=True)  # a directory link
    (wait / "dangling_request.json").symlink_to(outside / "missing_request.json")
    q.submit("good_request.json", b"good")

    # listing ignores them, so claiming never reads through them
    assert [i.key for i in q.ls(State.WAIT)] == ["good_request.json"]
    assert _drain(q) == {"good_request.json": b"good"}
    # direct access through them is refused, reading and writing
    for name in ("escape_request.json", "linkdir/inner_request.json",
                 "dangling_request.json"):
        with pytest.raises(InvalidKey, match="outside the store root"):
            q.store.head(f"wait/{name}")
        with pytest.raises(InvalidKey, match="outside the store root"):
            q.store.open(f"wait/{name}")
        with pytest.raises(InvalidKey, match="outside the store root"):
            q.submit(name, b"overwrite")
        with pytest.raises(InvalidKey, match="outside the store root"):
            q.store.copy(f"wait/{name}", f"processing/{name}")
    with pytest.raises(InvalidKey, match="outside the store root"):
        q.submit("linkdir/new_request.json", b"new file through the link")

    # the outside is untouched, and nothing came in from it
    assert sorted(p.name for p in outside.iterdir()) == ["inner_request.json",
                                                         "secret_request.json"]
    assert secret.read_bytes() == b"secret outside the root"
    assert secret.stat().st_mtime_ns == secret_stat.st_mtime_ns
    for state in ("processing", "finish", "failed"):
        found = [p for p in (root / state).rglob("*") if p.is_file()]
        assert found == ([root / "finish" / "good_request.json"] if state == "finish"
                         else []), state
    assert (wait / "escape_request.json").is_symlink()  # left where it was
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    q.close()


def test_local_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    """A link to a file *inside* the root is an ordinary request: the bytes it points to are
    copied to processing/, the link itself is what leaves wait/, the target stays."""
    root = tmp_path / "root"
    q = Queue(LocalStore(root))
    target = root / "inbox" / "real_request.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"inside")
    then = time.time_ns() - 60 * 10**9  # written a minute ago: settled (see LocalStore)
    os.utime(target, ns=(then, then))
    (root / "wait").mkdir(exist_ok=True)
    (root / "wait" / "linked_request.json").symlink_to(target)

    assert _drain(q) == {"linked_request.json": b"inside"}
    assert (root / "finish" / "linked_request.json").read_bytes() == b"inside"
    assert not (root / "finish" / "linked_request.json").is_symlink()
    assert not os.path.lexists(root / "wait" / "linked_request.json")
    assert target.read_bytes() == b"inside"
    q.close()


def test_handler_failure_on_one_malformed_request(backend: Backend) -> None:
    q = backend.queue(QueueConfig(max_attempts=2, retry_base_delay=0, retry_max_delay=0))
    good = {f"good{i}_request.json": json.dumps({"n": i}).encode() for i in range(6)}
    bad_name, bad_body = "bad_request.json", b'{"n": 1,, oops'
    for name, data in good.items():
        q.submit(name, data)
    q.submit(bad_name, bad_body)
    try:
        json.loads(bad_body)
    except json.JSONDecodeError as exc:
        expected_message = str(exc)

    handled: list[tuple[str, int]] = []

    def handler(job: Job) -> bytes:
        handled.append((job.name, job.attempt))
        parsed = json.loads(job.read())  # raises on the malformed one
        return json.dumps({"double": parsed["n"] * 2}).encode()

    worker = Worker(q, handler, WorkerOptions(worker_id="w-bad-input", concurrency=2,
                                              burst=True))
    bursts, completed, failed = 0, 0, 0
    while bursts < 5:
        stats = worker.run()  # returns (never raises) when nothing is left to claim
        bursts += 1
        completed, failed = completed + stats.completed, failed + stats.failed
        counts = q.counts()
        if counts["wait"] == 0 and counts["processing"] == 0:
            break
        # A fresh queue object, like a new worker process: this one remembers for a while
        # (lease_ttl/3) names it found held, e.g. the bad request mid-way to its retry.
        q = backend.queue(q.config)
        worker = Worker(q, handler, worker.options)

    assert q.counts() == {"wait": 0, "processing": 0, "finish": len(good), "failed": 1}
    assert (completed, failed) == (len(good), 2)
    assert [n for n, _ in handled].count(bad_name) == 2
    assert sorted(a for n, a in handled if n == bad_name) == [1, 2]
    assert all(a == 1 for n, a in handled if n != bad_name)
    record = q.error_record(bad_name)
    assert record is not None
    assert record.attempts == 2
    assert record.error["message"] == expected_message
    assert record.error["type"] == "JSONDecodeError"
    assert "json.loads(job.read())" in record.error["traceback"]
    assert backend.raw(f"failed/{bad_name}") == bad_body
    for name, data in good.items():
        assert backend.raw(f"finish/{name}") == data
        assert q.result(name) == json.dumps({"double": json.loads(data)["n"] * 2}).encode()
    assert list(q.leases()) == []
    with pytest.raises(NotFound):
        q.store.head(f"processing/{bad_name}")
    print(f"\n[bad input] {backend.kind}: malformed request dead-lettered after "
          f"{bursts} burst(s)")

