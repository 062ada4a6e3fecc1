"""A request another program is still writing into a local queue's wait/ (a ``cp``) is not
listed until it has settled; a burst started meanwhile (``cp x q/wait/ && s3q worker
--burst``, the shape of a batch job) waits for it, instead of ending with it waiting."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import s3q.queue as queue_module
from s3q import Queue, QueueConfig
from s3q.backends.local import LocalStore
from s3q.job import Job
from s3q.worker import Worker, WorkerOptions


def test_a_burst_waits_for_a_file_still_being_copied_into_wait(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "q", settle=1.5)
    queue = Queue(store, QueueConfig(filter="*request.json"))
    (tmp_path / "q" / "wait").mkdir(parents=True, exist_ok=True)
    copied = tmp_path / "q" / "wait" / "a_request.json"
    copied.write_bytes(b'{"n": 1}')  # as cp writes it: no stamp of the store's, fresh mtime
    (tmp_path / "q" / "wait" / "notes.txt").write_bytes(b"not a request")  # (not waited for)
    assert store.list_page("wait/").items == []  # not listed yet
    handled: list[tuple[str, bytes]] = []

    def handler(job: Job) -> None:
        handled.append((job.name, job.read()))

    began = time.monotonic()
    stats = Worker(queue, handler, WorkerOptions("w1", burst=True, concurrency=2)).run()
    assert handled == [("a_request.json", b'{"n": 1}')]
    assert stats.completed == 1 and stats.error is None
    assert time.monotonic() - began < 30
    assert [i.key for i in store.list_page("finish/").items] == ["finish/a_request.json"]
    assert os.path.exists(tmp_path / "q" / "wait" / "notes.txt")


def test_what_is_settling_is_told_by_the_listing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "q", settle=60.0)
    store.put("wait/own_request.json", b"{}")  # the store's own: listed at once
    (tmp_path / "q" / "wait" / "cp_request.json").write_bytes(b"{}")
    before = time.time()
    page = store.list_page("wait/")
    assert [i.key for i in page.items] == ["wait/own_request.json"]
    [(key, at)] = page.settling
    assert key == "wait/cp_request.json" and before + 59 <= at <= time.time() + 61
    queue = Queue(store, QueueConfig())
    settling: dict[str, float] = {}
    assert [i.key for i in queue.ls("wait", settling=settling)] == ["own_request.json"]
    assert list(settling) == ["cp_request.json"]


def test_a_burst_leaves_a_file_that_is_still_written_after_settling_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file another program keeps writing (a log the filter matches) is waited for at
    most SETTLING_WAIT: then the burst leaves it and ends, rather than wait for ever."""
    monkeypatch.setattr(queue_module, "SETTLING_WAIT", 2.0)
    store = LocalStore(tmp_path / "q", settle=30.0)
    queue = Queue(store, QueueConfig())
    (tmp_path / "q" / "wait").mkdir(parents=True, exist_ok=True)
    log = tmp_path / "q" / "wait" / "app.log"
    log.write_bytes(b"line\n")  # (not settled for 30 s: as if written all along)
    first = queue.outlook()
    assert first.waiting == ["app.log"] and first.next_due is not None
    assert first.next_due > 20 and first.left == []
    time.sleep(2.5)
    later = queue.outlook(first)
    assert later.waiting == [] and later.next_due is None
    assert later.left == [("app.log", "still being written after 2 s")]
    began = time.monotonic()
    stats = Worker(queue, lambda job: None, WorkerOptions("w1", burst=True)).run()
    assert stats.completed == 0 and 2.0 <= time.monotonic() - began < 30
    assert log.exists()
