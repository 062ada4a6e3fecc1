"""The wait walk of a worker that runs for months (waitwalk.py): the names it found it may
not read and the names it refused (too long, no valid key) were kept for the life of the
process, though the request was claimed by a worker that may read it, deleted or renamed
long ago: one entry per distinct name ever met, never pruned. And a name refused once was
never said again, when a new object of that name came months later. A listing now forgets
the names its page shows gone (a page lists every key of its range)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ClassVar

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


class Moment(float):
    """A store time that, compared as ``until > now`` with the ``until`` of ``hook`` (the
    walk pruning its skips), lets another claiming thread make a skip at that instant."""

    hook: ClassVar[list[tuple[float, Callable[[], None]]]] = []

    def __lt__(self, other: object) -> bool:  # (``until > now`` asks this first)
        if Moment.hook and other == Moment.hook[0][0]:
            Moment.hook.pop()[1]()
        return float.__lt__(self, other)  # type: ignore[operator]


def test_a_skip_made_while_a_listing_prunes_the_skips_breaks_no_claim() -> None:
    """The claiming threads of a process make skips (a request held by another worker, a
    retry not due, one it may not read) outside the walk's lock, while one of them prunes
    them after its LIST: the prune iterated the dict itself, so a skip made meanwhile failed
    that claim ('dictionary changed size during iteration': claim_failed, a traceback, the
    page listed left untried). The prune now goes over a copy, and keeps the new skip."""
    clock = FakeClock()
    mem = MemoryStore("skips", clock=lambda: Moment(clock()))
    q = Queue(mem, QueueConfig())
    q.submit("a_request.json", b"{}")
    walk = q._claimer._walk
    until = clock() + 60
    walk.skip("old_request.json", '"e0"', until)  # (a skip to prune: 1 s left)
    clock.advance(59)
    Moment.hook.append((until, lambda: walk.skip("b_request.json", '"e1"', clock() + 60)))
    job = q.claim("w")
    assert not Moment.hook  # (the other thread's skip was made during the prune)
    assert job is not None and job.name == "a_request.json"
    assert "b_request.json" in walk._skip
