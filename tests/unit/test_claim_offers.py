"""The names offered to a worker's claims (``Queue.offer``: the scan's due retries whose view
is missing, every scan; the names S3 events give). Each name offered was compared with every
name waiting to be tried (a deque searched end to end), under the claimer's lock: a backlog
of N due retries a busy worker had not reached yet cost ~N²/2 string comparisons at every
scan (10,000: half a second, 100,000: most of a minute), while every slot that wanted to
claim waited for that lock. A set of the names waiting answers at once."""

from __future__ import annotations

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore

N = 1000


class Counted(str):
    """A name that counts how often it is compared with another."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        Counted.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_offering_names_again_costs_no_search_of_those_waiting() -> None:
    q = Queue(MemoryStore("offers"), QueueConfig())
    names = [f"r{i:05d}_request.json" for i in range(N)]
    for name in names:
        q.submit(name, b"{}")
    q.offer([Counted(n) for n in names])  # (a scan: N due retries not claimed yet)
    Counted.compared = 0
    q.offer([Counted(n) for n in names])  # the next scan: the same names again
    assert Counted.compared <= 2 * N
    claimed = []
    while (job := q.claim("w")) is not None:
        claimed.append(job.name)
        job.complete()
    assert claimed == names  # each tried once, in the order offered
    q.submit(names[0], b"{}")  # (submitted again: its name may be offered again)
    q.offer([names[0]])
    assert q._claimer._offered == {names[0]}
    job = q.claim("w")
    assert job is not None and job.name == names[0]
    assert not q._claimer._offered
