"""How long a dashboard sign-in lasts (docs/OPERATIONS.md, "Safety": "a session of 12
hours at most"), on a fake clock: Flask's and the dashboard's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from itsdangerous.timed import TimestampSigner

import s3q.clock
from s3q import Queue, QueueConfig
from s3q.backends.local import LocalStore
from s3q.dashboard.app import create_app
from s3q.dashboard.metered import MeteredStore
from s3q.dashboard.security import Credentials
from s3q.settings import Secret
from tests.unit.test_dashboard import csrf_of

HOUR = 3600.0


def signed_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wall: Callable[[], float],
              machine: Callable[[], float]) -> FlaskClient:
    """A dashboard's client just signed in with its token, on fake clocks: ``wall`` (Flask's
    cookie signer) and ``machine`` (s3q.clock's, the session's lifetime)."""
    monkeypatch.setattr(s3q.clock, "monotonic", machine)
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(wall()))
    queue = Queue(MeteredStore(LocalStore(tmp_path / "q")), QueueConfig(max_attempts=1))
    app = create_app(queue, Credentials(token=Secret("s3cret-token")), refresh=1)
    app.testing = True
    c = app.test_client()
    csrf = csrf_of(c.get("/login").get_data(as_text=True))
    c.post("/login", data={"csrf": csrf, "token": "s3cret-token"})
    return c


def test_a_session_ends_12_hours_after_its_sign_in_however_busy_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flask re-signs a permanent session's cookie at every answer (its timestamp now,
    SESSION_REFRESH_EACH_REQUEST), and the overview's htmx asks every few seconds: an open
    tab (or a stolen cookie kept warm by its thief) stayed signed in for ever, not 12
    hours. The 12 hours now count from the sign-in."""
    now = [1_800_000_000.0]
    # (the machine's clock, s3q.clock's, moves as its wall clock does)
    c = signed_in(tmp_path, monkeypatch, lambda: now[0], lambda: now[0] - 1_700_000_000.0)
    first = c.get_cookie("session")
    assert first is not None and c.get("/").status_code == 200

    for _ in range(13):  # a tab left open: a page every hour, 13 hours long
        now[0] += HOUR
        page = c.get("/")
        if page.status_code != 200:
            break
    assert now[0] - 1_800_000_000.0 > 12 * HOUR - 1 and page.status_code == 302
    assert page.headers["Location"].startswith("/login")

    # (the clock is Flask's too: the cookie of the sign-in alone, 13 h old, is refused)
    c.set_cookie("session", first.value)
    assert c.get("/").status_code == 302
    # a new sign-in begins a new session
    csrf = csrf_of(c.get("/login").get_data(as_text=True))
    c.post("/login", data={"csrf": csrf, "token": "s3cret-token"})
    assert c.get("/").status_code == 200


def test_a_session_ends_12_hours_after_its_sign_in_though_the_clock_was_set_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard host's wall clock is stepped back an hour six hours into a session
    (NTP correcting a clock an hour fast): the session still ends 12 hours after its
    sign-in, as time passed on the machine (CLOCK_BOOTTIME), not 13 hours after it."""
    wall = [1_800_000_000.0]
    boot = [100_000.0]  # (the machine's clock: s3q.clock's, CLOCK_BOOTTIME on Linux)
    c = signed_in(tmp_path, monkeypatch, lambda: wall[0], lambda: boot[0])
    ended = None
    for hour in range(1, 15):  # a page every hour (and a second)
        wall[0] += HOUR + 1 - (HOUR if hour == 6 else 0.0)  # (set back an hour at the 6th)
        boot[0] += HOUR + 1
        if c.get("/").status_code != 200:
            ended = hour
            break
    assert ended == 12  # (the first page more than 12 hours after the sign-in)
