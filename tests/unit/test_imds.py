"""The Spot / Auto Scaling interruption watcher (s3q.imds) against a small IMDSv2 stand-in
served on 127.0.0.1: tokens, notices, silence off EC2, backoff, token renewal."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable

import pytest

from s3q.imds import ASG_PATH, SPOT_PATH, TOKEN_PATH, InterruptionWatcher
from tests.fakeimds import FakeIMDS, imds

__all__ = ["imds"]


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Notices:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


def watcher(url: str, notices: Notices, **kwargs: float) -> InterruptionWatcher:
    options: dict[str, float] = {"interval": 0.02, "timeout": 0.5, **kwargs}
    return InterruptionWatcher(notices, endpoint=url, **options)  # type: ignore[arg-type]


def test_no_notice_no_call_and_every_get_carries_the_token(imds: FakeIMDS) -> None:
    notices = Notices()
    imds.asg = "InService"
    with watcher(imds.url, notices):
        wait_for(lambda: imds.count("GET", ASG_PATH) >= 5)
    assert notices.reasons == []
    with imds.lock:
        log = list(imds.log)
    puts = [entry for entry in log if entry[0] == "PUT"]
    gets = [entry for entry in log if entry[0] == "GET"]
    assert len(puts) == 1 and puts[0][2] == "21600" and puts[0][3] == 200
    token = next(iter(imds.tokens))
    assert gets and all(header == token for _, _, header, _ in gets)
    assert {status for *_, status in gets} == {404, 200}  # spot: none; asg: InService


def test_spot_notice_calls_on_notice_once(imds: FakeIMDS) -> None:
    notices = Notices()
    w = watcher(imds.url, notices).start()
    try:
        wait_for(lambda: imds.count("GET", SPOT_PATH) >= 3)
        assert notices.reasons == []
        imds.spot = json.dumps({"action": "terminate", "time": "2026-11-29T08:22:00Z"})
        wait_for(lambda: bool(notices.reasons))
        polls = imds.count("GET")
        time.sleep(0.2)
        assert notices.reasons == ["Spot interruption notice: terminate at "
                                   "2026-11-29T08:22:00Z"]
        assert w.notice == notices.reasons[0]
        assert imds.count("GET") == polls, "no more polling after the notice"
    finally:
        w.stop()


def test_auto_scaling_termination_calls_on_notice_once(imds: FakeIMDS) -> None:
    notices = Notices()
    imds.asg = "InService"
    with watcher(imds.url, notices):
        wait_for(lambda: imds.count("GET", ASG_PATH) >= 3)
        imds.asg = "Warmed:Stopped"
        wait_for(lambda: imds.count("GET", ASG_PATH) >= 6)
        assert notices.reasons == []
        imds.asg = "Terminated"
        wait_for(lambda: bool(notices.reasons))
        time.sleep(0.2)
    assert len(notices.reasons) == 1 and "Terminated" in notices.reasons[0]


def test_unreachable_imds_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notices = Notices()
    caplog.set_level(logging.DEBUG, logger="s3q.imds")
    w = watcher(f"http://127.0.0.1:{port}", notices, max_backoff=0.1).start()
    time.sleep(0.5)
    assert w._thread is not None and w._thread.is_alive()
    started = time.monotonic()
    w.stop()
    assert not w._thread.is_alive()
    assert time.monotonic() - started < 2.0  # woken, not left to its join timeout (2.5 s)
    assert notices.reasons == [] and w.notice is None
    records = [r for r in caplog.records if r.name == "s3q.imds"]
    assert records and all(r.levelno == logging.DEBUG for r in records)
    assert "not available" in records[0].getMessage()


def test_backs_off_while_the_imds_refuses(imds: FakeIMDS) -> None:
    imds.refuse_tokens = True  # e.g. IMDS answering but unusable
    notices = Notices()
    with watcher(imds.url, notices, interval=0.02, max_backoff=0.16):
        time.sleep(1.0)
    tries = imds.count("PUT")
    # at a steady 0.02 s that would be ~50 tries; backing off to 0.16 s leaves about 9
    assert 3 <= tries <= 15, tries
    assert notices.reasons == []


def test_token_is_renewed_before_it_expires(imds: FakeIMDS) -> None:
    notices = Notices()
    with watcher(imds.url, notices, interval=0.05, token_ttl=1):
        wait_for(lambda: imds.count("PUT", TOKEN_PATH, 200) >= 3)  # every ~0.5 s
    assert imds.count("GET", status=401) == 0, "a GET used an expired token"
    assert notices.reasons == []


def test_a_revoked_token_is_replaced(imds: FakeIMDS) -> None:
    notices = Notices()
    with watcher(imds.url, notices):
        wait_for(lambda: imds.count("GET") >= 4)
        imds.revoke_tokens()
        wait_for(lambda: imds.count("PUT", TOKEN_PATH, 200) >= 2)
        imds.spot = '{"action": "stop", "time": "2026-11-29T08:22:00Z"}'
        wait_for(lambda: bool(notices.reasons))
    assert notices.reasons == ["Spot interruption notice: stop at 2026-11-29T08:22:00Z"]


def test_a_failing_callback_is_logged_not_raised(imds: FakeIMDS,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def on_notice(reason: str) -> None:
        calls.append(reason)
        raise RuntimeError("boom")

    imds.spot = "not json"
    with InterruptionWatcher(on_notice, endpoint=imds.url, interval=0.02) as w:
        wait_for(lambda: w.notice is not None)
        wait_for(lambda: w._thread is not None and not w._thread.is_alive())
    assert calls == ["Spot interruption notice: not json"]
    assert any("handler failed" in r.getMessage() for r in caplog.records)


def test_endpoint_from_the_environment_and_s3q_imds_off(
        imds: FakeIMDS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3Q_IMDS_ENDPOINT", imds.url + "/")
    w = InterruptionWatcher(Notices(), interval=0.02)
    assert w.endpoint == imds.url
    monkeypatch.setenv("S3Q_IMDS", "off")
    with InterruptionWatcher(Notices(), interval=0.02) as off:
        time.sleep(0.2)
    assert off._thread is None and imds.count("PUT") == 0
    with InterruptionWatcher(Notices(), endpoint=imds.url, interval=0.02):  # explicit: on
        wait_for(lambda: imds.count("GET") >= 1)
    monkeypatch.delenv("S3Q_IMDS_ENDPOINT")
    monkeypatch.delenv("S3Q_IMDS")
    assert InterruptionWatcher(Notices()).endpoint == "http://169.254.169.254"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        InterruptionWatcher(Notices(), interval=0)
    with pytest.raises(ValueError):
        InterruptionWatcher(Notices(), token_ttl=0)
