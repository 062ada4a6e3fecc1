"""Request names whose derived keys would exceed the store's key limit (issue 9): refused at
submit, and never claimed (nor blocking anything) when dropped into wait/ by hand; status
reports them."""

from __future__ import annotations

import pytest

from s3q import InvalidKey, Queue, QueueConfig, layout
from s3q.backends.memory import MemoryStore
from s3q.cli.status import queue_status


def _name(size: int) -> str:
    """A valid request name of ``size`` UTF-8 bytes (segments of 200 bytes)."""
    body = "d/" * ((size - 20) // 2)
    return (body + "x" * (size - len(body) - len("_request.json")) + "_request.json")


def test_submit_refuses_a_name_whose_derived_keys_do_not_fit() -> None:
    q = Queue(MemoryStore("limits"))
    longest_prefix = len(layout.longest_key("").encode())
    fits = _name(q.store.max_key_bytes - longest_prefix)
    q.submit(fits, b"{}")  # the longest name that works everywhere
    most = q.store.max_key_bytes - longest_prefix
    with pytest.raises(InvalidKey, match="too long for this store") as refused:
        q.submit(_name(q.store.max_key_bytes - longest_prefix + 1), b"{}")
    assert f"names of at most {most} bytes, UTF-8, fit" in str(refused.value)


def test_a_too_long_name_dropped_in_by_hand_blocks_nothing_and_is_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    q = Queue(MemoryStore("limits"), QueueConfig(lease_ttl=10))
    too_long = _name(1010)  # wait/NAME fits S3's 1,024 bytes; .s3q/earlier/…/NAME does not
    q.store.put(layout.key(layout.WAIT, too_long), b"{}")  # aws s3 cp, as a producer would
    q.submit("ok_request.json", b"{}")
    job = q.claim("w")
    assert job is not None and job.name == "ok_request.json"
    job.complete()
    assert q.claim("w") is None  # the long one is never claimed (and nothing raised)
    [said] = [r for r in caplog.records if getattr(r, "event", None) == "name_too_long"]
    assert (f"names of at most {layout.longest_name(q.store.max_key_bytes)} bytes fit"
            in said.getMessage())
    status = queue_status(q)
    assert status["counts"]["wait"] == 1
    [problem] = status["problems"]
    assert "too long for this store" in problem and too_long[:60] in problem
    assert q.outlook().left == [(too_long, "name too long for this store: never claimed")]
