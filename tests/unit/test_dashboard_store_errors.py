"""The dashboard's requeue and purge when the store fails midway, as `s3q requeue --all`
and `s3q purge` report it (tests/unit/test_operator_partial.py): one request's own store
error (denied) is reported and the others go on; an unavailable store stops the action.
Either way the dashboard says what it did, what failed (outcome unknown where the store
went away under it) and what it did not attempt, in the message after the action and under
"Recent actions"."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.local import LocalStore
from s3q.dashboard.app import SYNC_LIMIT
from s3q.dashboard.metered import MeteredStore
from s3q.store import StoreError
from tests.acceptance.conftest import wait_for
from tests.unit.test_dashboard import client, confirmation, csrf_of, fail
from tests.unit.test_operator_partial import DENIED, DOWN, FailsOn

NAMES = [f"r{i}_request.json" for i in range(3)]


def failing_queue(tmp_path: Path, op: str, key: str, error: StoreError,
                  n: int = len(NAMES)) -> Queue:
    """``n`` dead letters, then a queue whose store fails ``op`` on ``key`` with ``error``."""
    plain = Queue(LocalStore(tmp_path / "q"), QueueConfig(max_attempts=1))
    for name in NAMES if n == len(NAMES) else [f"b{i:03d}_request.json" for i in range(n)]:
        fail(plain, name, KeyError("k"))
    store = FailsOn(LocalStore(tmp_path / "q"), op, key, error)
    return Queue(MeteredStore(store), QueueConfig(max_attempts=1))


def act(queue: Queue, verb: str) -> tuple[str, str]:
    """``verb`` every failed request through the dashboard, confirmed: (the page it leads
    to, the overview)."""
    c = client(queue)
    token = csrf_of(c.get("/failed").get_data(as_text=True))
    confirm = c.post("/failed/action", data={"do": f"{verb}:matching", "glob": "*",
                                              "type": "", "csrf": token})
    assert confirm.status_code == 200
    done = c.post("/failed/action", data=confirmation(confirm.get_data(as_text=True)),
                  follow_redirects=True)
    assert done.status_code == 200, done.get_data(as_text=True)
    return text(done.get_data(as_text=True)), text(c.get("/").get_data(as_text=True))


def text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def in_state(tmp_path: Path, state: str) -> list[str]:
    return sorted(i.key for i in Queue(str(tmp_path / "q")).ls(state))


@pytest.mark.parametrize("verb", ["requeue", "purge"])
def test_an_action_goes_on_past_one_requests_store_error(tmp_path: Path, verb: str) -> None:
    """r1 is denied: r0 and r2 are done all the same, and the dashboard says so, naming r1
    and its error. (It answered 500, "Internal Server Error", having done r0 and perhaps
    r2, and saying nothing of either, nor recording the action.)"""
    op, key = (("put", ".s3q/lease/r1_request.json") if verb == "requeue"
               else ("delete", "failed/r1_request.json"))
    queue = failing_queue(tmp_path, op, key, DENIED)
    page, overview = act(queue, verb)
    past = "requeued" if verb == "requeue" else "purged"
    assert f"{past} 2 request(s)" in page
    assert f"not {past}: r1_request.json: AccessDenied: not allowed on this key" in page
    assert f"2 {past}, 1 failed, 0 not attempted" in page
    assert f"2 {past}, 1 failed, 0 not attempted" in overview  # under Recent actions
    assert in_state(tmp_path, "failed") == ["r1_request.json"]


def test_an_action_the_store_went_away_under_says_what_it_did(tmp_path: Path) -> None:
    """The store goes away at r1's requeue: what the dashboard says it requeued is what is
    in wait/, r1's outcome is unknown, and the rest is "not attempted"."""
    queue = failing_queue(tmp_path, "put", ".s3q/lease/r1_request.json", DOWN)
    page, overview = act(queue, "requeue")
    waiting = in_state(tmp_path, "wait")
    assert f"requeued {len(waiting)} request(s)" in page
    assert "not requeued (outcome unknown: the store went away): r1_request.json" in page
    counts = re.search(r"stopped, store unavailable \(.*?\): (\d+) requeued, (\d+) failed, "
                       r"(\d+) not attempted", page)
    assert counts is not None, page
    done, failed, not_attempted = map(int, counts.groups())
    assert (done, failed) == (len(waiting), 1) and done + failed + not_attempted == 3
    assert counts.group(0) in overview


def test_a_background_action_the_store_went_away_under_says_what_it_did(
        tmp_path: Path) -> None:
    """A selection larger than SYNC_LIMIT runs in the background; the store goes away at
    its 50th request. Recent actions said "N of M (M-N changed meanwhile, left alone)":
    none had changed; it had stopped. It says so now, with the counts."""
    n = SYNC_LIMIT + 5
    queue = failing_queue(tmp_path, "put", ".s3q/lease/b050_request.json", DOWN, n)
    c = client(queue)
    token = csrf_of(c.get("/failed").get_data(as_text=True))
    confirm = c.post("/failed/action", data={"do": "requeue:matching", "glob": "*",
                                              "type": "", "csrf": token})
    c.post("/failed/action", data=confirmation(confirm.get_data(as_text=True)))
    wait_for(lambda: "running" not in text(c.get("/").get_data(as_text=True)), 60,
             "the background requeue to end")
    overview = text(c.get("/").get_data(as_text=True))
    waiting = len(in_state(tmp_path, "wait"))
    assert "changed meanwhile" not in overview
    assert f"{waiting} of {n}" in overview
    counts = re.search(r"stopped, store unavailable \(.*?\): (\d+) requeued, 1 failed, "
                       r"(\d+) not attempted", overview)
    assert counts is not None, overview
    assert int(counts.group(1)) == waiting and waiting + 1 + int(counts.group(2)) == n
    assert "outcome unknown: the store went away): b050_request.json" in overview
