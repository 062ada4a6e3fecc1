"""A dashboard action acts on what its confirmation page listed, and on nothing else: the
confirmation states a count ("Yes, purge 1"), and requests that fail after the operator
read it are not touched; a request that failed again meanwhile (new bytes under the same
name) stays, as docs/OPERATIONS.md promises (purge: If-Match the ETag listed)."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient

from s3q import Queue, QueueConfig
from s3q.backends.local import LocalStore
from s3q.dashboard.metered import MeteredStore
from tests.unit.test_dashboard import client, confirmation, csrf_of, fail


def make(tmp_path: Path) -> Queue:
    return Queue(MeteredStore(LocalStore(tmp_path / "q")), QueueConfig(max_attempts=1))


def failed_names(queue: Queue) -> list[str]:
    return sorted(i.key for i in queue.ls("failed"))


def confirm_page(c: FlaskClient, form: dict[str, str]) -> str:
    """The confirmation page an action button (``form``: its fields) leads to."""
    token = csrf_of(c.get("/failed").get_data(as_text=True))
    return c.post("/failed/action", data={**form, "csrf": token}).get_data(as_text=True)


def fail_again(queue: Queue, name: str) -> None:
    """A new request of ``name`` (other bytes) fails too: the dead letter shown moves to
    .s3q/earlier/, and failed/NAME is the new one."""
    fail(queue, name, RuntimeError("another failure"), body=b'{"x": 2, "resubmitted": true}')


def the_new_failure_is_in_failed(queue: Queue, name: str) -> bool:
    record = queue.error_record(name)
    return record is not None and "another failure" in str(record.error)


def test_purge_matching_deletes_only_what_the_operator_confirmed(tmp_path: Path) -> None:
    queue = make(tmp_path)
    fail(queue, "a_request.json", KeyError("customer_id"))
    c = client(queue)
    confirm = confirm_page(c, {"do": "purge:matching", "glob": "*", "type": ""})
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
    confirm = confirm_page(c, {"do": "requeue:matching", "glob": "*", "type": "KeyError"})
    assert "Requeue 1 failed request?" in confirm
    fail(queue, "b_request.json", KeyError("customer_id"))
    c.post("/failed/action", data=confirmation(confirm))
    assert failed_names(queue) == ["b_request.json"]
    assert [i.key for i in queue.ls("wait")] == ["a_request.json"]


def test_purge_one_keeps_a_request_that_failed_again_after_it_was_shown(tmp_path: Path) -> None:
    queue = make(tmp_path)
    fail(queue, "a_request.json", KeyError("customer_id"))
    c = client(queue)
    confirm = confirm_page(c, {"do": "purge:one:a_request.json"})
    assert "Purge 1 failed request?" in confirm
    fail_again(queue, "a_request.json")  # before the operator confirms
    done = c.post("/failed/action", data=confirmation(confirm),
                  follow_redirects=True).get_data(as_text=True)
    assert "purged 0 request(s); 1 changed meanwhile and were left alone" in done
    assert failed_names(queue) == ["a_request.json"], "purged the new failure"
    assert the_new_failure_is_in_failed(queue, "a_request.json")


def test_requeue_one_leaves_a_request_that_failed_again_after_it_was_shown(
        tmp_path: Path) -> None:
    """As for purge: the dead letter confirmed is the one requeued, by its ETag; a newer
    failure of that name (the listed one moved to .s3q/earlier/) is left in failed/."""
    queue = make(tmp_path)
    fail(queue, "a_request.json", KeyError("customer_id"))
    c = client(queue)
    confirm = confirm_page(c, {"do": "requeue:one:a_request.json"})
    assert "Requeue 1 failed request?" in confirm
    fail_again(queue, "a_request.json")  # before the operator confirms
    done = c.post("/failed/action", data=confirmation(confirm),
                  follow_redirects=True).get_data(as_text=True)
    assert "requeued 0 request(s)" in done, done
    assert [i.key for i in queue.ls("wait")] == [], "requeued the new failure"
    assert failed_names(queue) == ["a_request.json"]
    assert the_new_failure_is_in_failed(queue, "a_request.json")


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
    confirm = confirm_page(c, {"do": "requeue:one:a_request.json"})
    c.post("/failed/action", data=confirmation(confirm))
    fail(queue, "a_request.json", KeyError("customer_id"))  # it fails again
    page = c.post("/failed/action", data=confirmation(confirm),  # the same "Yes", again
                  follow_redirects=True).get_data(as_text=True)
    assert "expired or was used already" in page
    assert failed_names(queue) == ["a_request.json"]
