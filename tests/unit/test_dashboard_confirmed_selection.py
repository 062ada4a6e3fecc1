"""A dashboard action acts on what its confirmation page listed, and on nothing else: the
confirmation states a count ("Yes, purge 1"), and requests that fail after the operator
read it are not touched; a request that failed again meanwhile (new bytes under the same
name) stays, as docs/OPERATIONS.md promises (purge: If-Match the ETag listed)."""

from __future__ import annotations

from pathlib import Path

from s3q import Queue, QueueConfig
from s3q.backends.local import LocalStore
from s3q.dashboard.metered import MeteredStore
from tests.unit.test_dashboard import client, confirmation, csrf_of, fail


def make(tmp_path: Path) -> Queue:
    return Queue(MeteredStore(LocalStore(tmp_path / "q")), QueueConfig(max_attempts=1))


def failed_names(queue: Queue) -> list[str]:
    return sorted(i.key for i in queue.ls("failed"))


def test_purge_matching_deletes_only_what_the_operator_confirmed(tmp_path: Path) -> None:
    queue = make(tmp_path)
    fail(queue, "a_request.json", KeyError("customer_id"))
    c = client(queue)
    token = csrf_of(c.get("/failed").get_data(as_text=True))
    form = {"do": "purge:matching", "glob": "*", "type": "", "csrf": token}
    confirm = c.post("/failed/action", data=form).get_data(as_text=True)
    assert "Purge 1 failed request?" in confirm            # the operator reads "1"
    # meanwhile the workers dead-letter two more requests
    fail(queue, "b_request.json", ValueError("new bug"))
    fail(queue, "c_request.json", ValueError("new bug"))
    done = c.post("/failed/action", data=confirmation(confirm),   # "Yes, purge 1"
                  follow_redirects=True).get_data(as_text=True)
    assert "purged 1 request(s)" in done
    assert failed_names(queue) == ["b_request.json", "c_request.json"]


def test_requeue_matching_moves_only_what_the_operator_confirmed(tmp_path: Path) -> None:
    queue = make(tmp_path)
    fail(queue, "a_request.json", KeyError("customer_id"))
    c = client(queue)
    token = csrf_of(c.get("/failed").get_data(as_text=True))
    form = {"do": "requeue:matching", "glob": "*", "type": "KeyError", "csrf": token}
    confirm = c.post("/failed/action", data=form).get_data(as_text=True)
    assert "Requeue 1 failed request?" in confirm
    fail(queue, "b_request.json", KeyError("customer_id"))
    c.post("/failed/action", data=confirmation(confirm))
    assert failed_names(queue) == ["b_request.json"]
    assert [i.key for i in queue.ls("wait")] == ["a_request.json"]


def test_purge_one_keeps_a_request_that_failed_again_after_it_was_shown(tmp_path: Path) -> None:
    queue = make(tmp_path)
    fail(queue, "a_request.json", KeyError("customer_id"))
    c = client(queue)
    token = csrf_of(c.get("/failed").get_data(as_text=True))
    form = {"do": "purge:one:a_request.json", "csrf": token}
    confirm = c.post("/failed/action", data=form).get_data(as_text=True)
    assert "Purge 1 failed request?" in confirm
    # before the operator confirms, a new request of that name (other bytes) fails too:
    # the earlier dead letter moves to .s3q/earlier/, failed/a_request.json is the new one
    queue.submit("a_request.json", b'{"x": 2, "resubmitted": true}')
    job = queue.claim("w")
    assert job is not None and job.name == "a_request.json"
    job.fail(RuntimeError("another failure"), retry=False)
    done = c.post("/failed/action", data=confirmation(confirm),
                  follow_redirects=True).get_data(as_text=True)
    assert "purged 0 request(s); 1 changed meanwhile and were left alone" in done
    assert failed_names(queue) == ["a_request.json"], "purged the new failure"
    record = queue.error_record("a_request.json")
    assert record is not None and "another failure" in str(record.error)


def test_requeue_one_leaves_a_request_that_failed_again_after_it_was_shown(
        tmp_path: Path) -> None:
    """As for purge: the dead letter confirmed is the one requeued, by its ETag; a newer
    failure of that name (the listed one moved to .s3q/earlier/) is left in failed/."""
    queue = make(tmp_path)
    fail(queue, "a_request.json", KeyError("customer_id"))
    c = client(queue)
    token = csrf_of(c.get("/failed").get_data(as_text=True))
    confirm = c.post("/failed/action", data={"do": "requeue:one:a_request.json",
                                             "csrf": token}).get_data(as_text=True)
    assert "Requeue 1 failed request?" in confirm
    queue.submit("a_request.json", b'{"x": 2, "resubmitted": true}')
    job = queue.claim("w")
    assert job is not None and job.name == "a_request.json"
    job.fail(RuntimeError("another failure"), retry=False)
    done = c.post("/failed/action", data=confirmation(confirm),
                  follow_redirects=True).get_data(as_text=True)
    assert "requeued 0 request(s)" in done, done
    assert [i.key for i in queue.ls("wait")] == [], "requeued the new failure"
    assert failed_names(queue) == ["a_request.json"]
    record = queue.error_record("a_request.json")
    assert record is not None and "another failure" in str(record.error)


def test_a_confirmation_acts_once_and_a_made_up_one_does_nothing(tmp_path: Path) -> None:
    queue = make(tmp_path)
    fail(queue, "a_request.json", KeyError("customer_id"))
    c = client(queue)
    token = csrf_of(c.get("/failed").get_data(as_text=True))
    made_up = {"csrf": token, "confirmed": "yes", "selection": "no-such-selection",
               "do": "purge:matching", "glob": "*", "type": ""}
    page = c.post("/failed/action", data=made_up, follow_redirects=True).get_data(
        as_text=True)
    assert "expired or was used already: nothing was done" in page
    assert failed_names(queue) == ["a_request.json"]
    confirm = c.post("/failed/action", data={"do": "requeue:one:a_request.json",
                                             "csrf": token}).get_data(as_text=True)
    c.post("/failed/action", data=confirmation(confirm))
    fail(queue, "a_request.json", KeyError("customer_id"))  # it fails again
    page = c.post("/failed/action", data=confirmation(confirm),  # the same "Yes", again
                  follow_redirects=True).get_data(as_text=True)
    assert "expired or was used already" in page
    assert failed_names(queue) == ["a_request.json"]
