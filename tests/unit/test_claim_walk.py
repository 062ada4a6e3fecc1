"""wait/ may hold objects that are not requests (the filter leaves them out: the seed's
producers put other files next to their ``*request.json``). A page of them costs a claim
no turn: it walks past up to WALK_PAGES pages in one poll, so a request behind thousands
of them is claimed at once, not one page per (backed-off) poll."""

from __future__ import annotations

import threading

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from s3q.waitwalk import WALK_PAGES
from tests.unit.test_pacing import Listing

CONFIG = QueueConfig(filter="*request.json", page_size=100)


def queue(junk: int, *requests: str) -> tuple[Queue, Listing]:
    store = Listing(MemoryStore("walk"))
    for i in range(junk):
        store.inner.put(f"wait/a/data-{i:06d}.bin", b"x")
    q = Queue(store, CONFIG)
    for name in requests:
        q.submit(name, b"{}")
    return q, store


def test_a_request_behind_a_thousand_other_objects_is_claimed_in_one_claim() -> None:
    q, store = queue(1000, "b_request.json")
    job = q.claim("w")
    assert job is not None and job.name == "b_request.json"
    assert store.lists == 11  # ten pages of other objects, then the request's


def test_a_wait_prefix_of_other_objects_only_is_walked_once_per_claim() -> None:
    q, store = queue(250)
    assert q.claim("w") is None
    assert store.lists == 3  # 100 + 100 + 50, to the end of wait/
    assert q.claim("w") is None
    assert store.lists == 6  # the next poll walks it again from its beginning


def test_a_claim_walks_at_most_walk_pages_and_the_next_goes_on_from_there() -> None:
    q, store = queue(WALK_PAGES * 100 * 2 + 50, "b_request.json")
    assert q.claim("w") is None
    assert store.lists == WALK_PAGES
    assert q.claim("w") is None
    assert store.lists == 2 * WALK_PAGES
    job = q.claim("w")  # the last 50 and the request on the third claim's first page
    assert job is not None and job.name == "b_request.json"
    assert store.lists == 2 * WALK_PAGES + 1


def test_requests_among_other_objects_are_claimed_page_by_page_as_before() -> None:
    names = [f"b{i:03d}_request.json" for i in range(5)]
    q, store = queue(0, *names)
    claimed = {job.name for _ in names if (job := q.claim("w")) is not None}
    assert claimed == set(names)
    assert store.lists == 1


def test_a_walk_that_reaches_the_end_of_wait_goes_on_from_its_beginning() -> None:
    """The cursor was left mid-way (a page with a request on it): a request that came
    before it meanwhile is reached by wrapping, in the same claim, not a backed-off poll
    later."""
    store = Listing(MemoryStore("walk"))
    for i in range(150):
        store.inner.put(f"wait/a/data-{i:06d}.bin", b"x")
    for i in range(150):
        store.inner.put(f"wait/c/data-{i:06d}.bin", b"x")
    q = Queue(store, CONFIG)
    q.submit("b_request.json", b"{}")
    job = q.claim("w")
    assert job is not None and job.name == "b_request.json"  # on the second page
    lists = store.lists
    q.submit("0_request.json", b"{}")  # before the cursor
    job = q.claim("w")
    assert job is not None and job.name == "0_request.json"
    assert store.lists == lists + 3  # the rest of c/, then wait/ from its beginning


def test_names_offered_while_a_claim_lists_wait_do_not_wait_for_its_walk() -> None:
    """An event (or the scan) offers names while a claim of the same process is listing
    wait/ (up to WALK_PAGES LISTs, each a round trip): the offer returns at once. It used to
    wait for the walk, which held the one lock of the claimer; so did the scan that offers
    due retries, and the event consumer."""
    q, store = queue(0, "b_request.json")
    offered: list[bool] = []

    def offer_meanwhile() -> None:  # inside the LIST, before it is answered
        def offer() -> None:
            q.offer(["c_request.json"])

        t = threading.Thread(target=offer)
        t.start()
        t.join(10)
        offered.append(not t.is_alive())

    store.during = offer_meanwhile
    job = q.claim("w")
    assert job is not None and job.name == "b_request.json"
    assert offered[-1], "offer() waited for the claim's listing of wait/"
    q.submit("c_request.json", b"{}")
    job = q.claim("w")  # the offered name first, without a listing
    assert job is not None and job.name == "c_request.json"
