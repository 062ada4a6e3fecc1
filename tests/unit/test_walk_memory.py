"""The wait walk of a worker that runs for months (waitwalk.py): the names it found it may
not read and the names it refused (too long, no valid key) were kept for the life of the
process, though the request was claimed by a worker that may read it, deleted or renamed
long ago: one entry per distinct name ever met, never pruned. And a name refused once was
never said again, when a new object of that name came months later. A listing now forgets
the names its page shows gone (a page lists every key of its range)."""

from __future__ import annotations

import logging

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from tests.unit.harness import Denies, FakeClock

ROUNDS = 2000


def test_names_it_could_not_read_are_forgotten_once_gone_from_wait() -> None:
    clock = FakeClock()
    mem = MemoryStore("months", clock=clock)
    other = Queue(mem, QueueConfig())  # a worker that may read them
    denied = Denies(mem, [])
    q = Queue(denied, QueueConfig(page_size=10))
    for i in range(ROUNDS):
        name = f"r{i:05d}_request.json"
        other.submit(name, b"{}")
        denied.keys.add("wait/" + name)
        assert q.claim("w") is None  # unreadable here: skipped
        assert set(q._claimer.unreadable()) <= {name}  # only what is still in wait/
        job = other.claim("o")
        assert job is not None
        job.complete()
        clock.advance(30)
    assert q.claim("w") is None
    assert q._claimer.unreadable() == {}


def test_refused_names_are_forgotten_once_gone_and_said_again_when_back(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    mem = MemoryStore("months", clock=clock)
    q = Queue(mem, QueueConfig(page_size=10))
    walk = q._claimer._walk
    with caplog.at_level(logging.INFO, logger="s3q"):
        for i in range(ROUNDS):
            key = f"wait/{'x' * 990}{i:05d}_request.json"  # (too long for its other keys)
            mem.put(key, b"{}")
            assert q.claim("w") is None
            mem.delete(key)  # an operator renamed it
            assert len(walk._refused) <= 1
        assert q.claim("w") is None
        assert not walk._refused
        said = [r for r in caplog.records if getattr(r, "event", None) == "name_too_long"]
        assert len(said) == ROUNDS
        mem.put(f"wait/{'x' * 990}00000_request.json", b"{}")  # the same name, months later
        assert q.claim("w") is None
    said = [r for r in caplog.records if getattr(r, "event", None) == "name_too_long"]
    assert len(said) == ROUNDS + 1
