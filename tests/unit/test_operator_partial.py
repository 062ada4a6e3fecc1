"""Operator commands stopped midway by the store (`s3q recover --all`, `requeue --all`,
`purge`): the real CLI entry point, on a local queue whose store is wrapped to fail one
request's operation. One request's own store error (denied) is reported and the command
goes on with the others; an unavailable store stops it. Either way the command says what
it did (as its normal summary does), what failed and why, what it did not attempt, that
re-running is safe, and exits 3."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

from s3q import Queue, QueueConfig
from s3q.backends import open_store
from s3q.backends.delegating import DelegatingStore
from s3q.bulk import BulkIncomplete, BulkStopped
from s3q.cli import cli
from s3q.cli import options as cli_options
from s3q.store import Store, StoreError, StoreUnavailable

T = TypeVar("T")
NAMES = [f"r{i}_request.json" for i in range(3)]


pytestmark = pytest.mark.usefixtures("isolated_cli")


@pytest.fixture
def qdir(tmp_path: Path) -> Path:
    return tmp_path / "q"


def run(qdir: Path, *args: str, input: str | None = None) -> Result:
    """``s3q ARGS --queue QDIR`` (the CLI's entry point, in this process)."""
    return CliRunner().invoke(cli, [*args, "--queue", str(qdir)], input=input,
                              catch_exceptions=False)


class FailsOn(DelegatingStore):
    """``error`` for every ``op`` on ``key`` (``before``: run first, instead of failing)."""

    def __init__(self, inner: Store, op: str, key: str, error: StoreError | None,
                 before: Callable[[Store], None] | None = None) -> None:
        super().__init__(inner)
        self.op, self.key, self.error, self.before = op, key, error, before
        self.hits = 0

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == self.op and args.get("key", args.get("dst")) == self.key:
            self.hits += 1
            if self.before is not None:
                self.before(self.inner)
            if self.error is not None:
                raise self.error
        return fn()


def failing(monkeypatch: pytest.MonkeyPatch, op: str, key: str, error: StoreError | None,
            before: Callable[[Store], None] | None = None) -> list[FailsOn]:
    """Every queue the CLI opens from now on is wrapped in a :class:`FailsOn`."""
    made: list[FailsOn] = []

    def wrapped(*args: Any, **kwargs: Any) -> Store:
        made.append(FailsOn(open_store(*args, **kwargs), op, key, error, before))
        return made[-1]

    monkeypatch.setattr(cli_options, "open_store", wrapped)
    return made


DENIED = StoreError("AccessDenied: not allowed on this key")
DOWN = StoreUnavailable("S3 PutObject: connection refused")


def queue(qdir: Path, **config: float) -> Queue:
    return Queue(str(qdir), QueueConfig(**config))  # type: ignore[arg-type]


def names(qdir: Path, state: str) -> list[str]:
    return sorted(i.key for i in queue(qdir).ls(state))


def lines(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


def error_line(out: Result) -> str:
    [line] = lines(out.stderr, "s3q: error: ")
    return line


def stopped_at_r1(out: Result) -> dict[str, Any]:
    """The ``--json`` report of a command the store went away under at r1: exit 3, r1
    failed, r2 not attempted."""
    assert out.exit_code == 3, out.output
    doc: dict[str, Any] = json.loads(out.stdout)
    assert [f["name"] for f in doc["failed"]] == [NAMES[1]]
    assert doc["not_attempted"] == [NAMES[2]]
    return doc


# ------------------------------------------------------------------------ recover --all

def held_by_a_dead_worker(qdir: Path, worker: str) -> None:
    """Every request claimed by ``worker``, whose leases were last written 2 minutes ago
    (the local store's clock is the file's mtime): expired, as a dead worker's."""
    q = queue(qdir)
    for name in NAMES:
        q.submit(name, b"{}")
        assert q.claim(worker) is not None
    old = time.time() - 120
    for lease in (qdir / ".s3q" / "lease").iterdir():
        os.utime(lease, (old, old))


def held_by_a_live_worker(qdir: Path) -> None:
    q = queue(qdir)
    for name in NAMES:
        q.submit(name, b"{}")
    for _ in NAMES:
        assert q.claim("w-live") is not None
    assert names(qdir, "processing") == NAMES


def test_recover_all_goes_on_past_one_requests_store_error(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """t1 of r1 is denied: r0 and r2 are recovered all the same, the summary says so, r1
    is named with its error, and the exit code says the command failed."""
    held_by_a_live_worker(qdir)
    failing(monkeypatch, "put", ".s3q/lease/r1_request.json", DENIED)
    out = run(qdir, "recover", "--all", "--yes")
    assert out.exit_code == 3, out.output
    assert "recovered 2 request(s)" in out.stdout
    assert [line.split()[0] for line in out.stdout.splitlines()[1:3]] == [NAMES[0], NAMES[2]]
    assert lines(out.stderr, "not recovered: ") == [
        "not recovered: r1_request.json: AccessDenied: not allowed on this key"]
    assert "re-running" in error_line(out) and "safe" in error_line(out)
    assert names(qdir, "wait") == [NAMES[0], NAMES[2]]
    assert names(qdir, "processing") == [NAMES[1]]


def test_recover_goes_on_past_a_lease_it_may_not_read(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """r1's lease may not be read (another account's object, a KMS key not granted): the
    plan's read of it raised, and `recover --all` (and its --dry-run) ended with nothing
    recovered. Now r0 and r2 are recovered, r1 is named with its error, and it exits 3."""
    held_by_a_live_worker(qdir)
    failing(monkeypatch, "get", ".s3q/lease/r1_request.json", DENIED)
    dry = run(qdir, "recover", "--all", "--dry-run")
    assert dry.exit_code == 3, dry.output
    assert [line.split()[0] for line in dry.stdout.splitlines()[1:3]] == [NAMES[0], NAMES[2]]
    assert names(qdir, "processing") == NAMES
    out = run(qdir, "recover", "--all", "--yes")
    assert out.exit_code == 3, out.output
    assert "recovered 2 request(s)" in out.stdout
    assert lines(out.stderr, "not recovered: ") == [
        "not recovered: r1_request.json: AccessDenied: not allowed on this key"]
    assert names(qdir, "wait") == [NAMES[0], NAMES[2]]
    assert names(qdir, "processing") == [NAMES[1]]


def test_recover_all_stops_when_the_store_is_unavailable(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store goes away at r1: the command stops there (every other request would fail
    the same way), says what it recovered (r0), that r1's outcome is unknown, and that r2
    was not attempted."""
    held_by_a_live_worker(qdir)
    failing(monkeypatch, "put", ".s3q/lease/r1_request.json", DOWN)
    out = run(qdir, "recover", "--all", "--yes", "--json")
    doc = stopped_at_r1(out)
    assert [r["name"] for r in doc["requests"]] == [NAMES[0]]
    assert "connection refused" in doc["failed"][0]["error"]
    line = error_line(out)
    assert "store unavailable" in line and "1 not attempted" in line and "safe" in line
    assert names(qdir, "wait") == [NAMES[0]]
    assert names(qdir, "processing") == NAMES[1:]


def test_recover_stale_says_what_it_could_not_take_over(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`recover --stale` is one takeover scan, which logs a request's own store error and
    goes on: the command said 'recovered 2 request(s)' and exited 0, r1 still stuck."""
    held_by_a_dead_worker(qdir, "w-dead")
    failing(monkeypatch, "put", ".s3q/lease/r1_request.json", DENIED)
    out = run(qdir, "recover", "--stale")
    assert out.exit_code == 3, out.output
    assert "recovered 2 request(s)" in out.stdout
    assert lines(out.stderr, "not recovered: ") == [
        "not recovered: r1_request.json: AccessDenied: not allowed on this key"]
    assert names(qdir, "processing") == [NAMES[1]]


def test_recover_stale_does_not_count_a_request_its_worker_renewed_meanwhile(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """r1's worker was only slow: it renews its lease between the scan's read and the
    fence (t1), which loses ('raced'). Nothing of r1 was recovered; the command counted it
    ('recovered 3 request(s)'), as it counted every action but 'gone', 'alive' and
    'waiting for retry' (len(Recovered), abcb944, counts the recovered ones only)."""
    held_by_a_dead_worker(qdir, "w-slow")
    key = ".s3q/lease/r1_request.json"

    def renewed(store: Store) -> None:  # (its worker's renewal: new bytes, a new ETag)
        body, _ = store.get(key)
        store.put(key, body.replace(b"}", b' }', 1))

    failing(monkeypatch, "put", key, None, before=renewed)
    out = run(qdir, "recover", "--stale")
    assert out.exit_code == 0, out.output
    assert "r1_request.json  raced" in out.stdout
    assert "recovered 2 request(s)" in out.stdout
    assert names(qdir, "processing") == [NAMES[1]]


# ------------------------------------------------------------------------ requeue --all

def dead_letters(qdir: Path) -> None:
    q = queue(qdir, max_attempts=1)
    for name in NAMES:
        q.submit(name, b"{}")
        job = q.claim("w")
        assert job is not None
        job.fail("broken")
    assert names(qdir, "failed") == NAMES


@pytest.mark.parametrize("how", ["--all", "--glob=r*"])
def test_requeue_all_goes_on_past_one_requests_store_error(
        qdir: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    dead_letters(qdir)
    failing(monkeypatch, "put", ".s3q/lease/r1_request.json", DENIED)
    out = run(qdir, "requeue", how, "--yes")
    assert out.exit_code == 3, out.output
    assert out.stdout.strip() == "requeued 2 request(s)"
    assert lines(out.stderr, "not requeued: ") == [
        "not requeued: r1_request.json: AccessDenied: not allowed on this key"]
    assert "safe" in error_line(out)
    assert names(qdir, "wait") == [NAMES[0], NAMES[2]]
    assert names(qdir, "failed") == [NAMES[1]]


def test_requeue_all_stops_when_the_store_is_unavailable(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead_letters(qdir)
    failing(monkeypatch, "put", ".s3q/lease/r1_request.json", DOWN)
    out = run(qdir, "requeue", "--all", "--yes", "--json", "--concurrency", "1")
    doc = stopped_at_r1(out)
    assert doc["requeued"] == [NAMES[0]] and doc["skipped"] == []
    assert "1 not attempted" in error_line(out)
    assert names(qdir, "failed") == NAMES[1:]


# ------------------------------------------------------------------------ purge

def finished(qdir: Path) -> None:
    q = queue(qdir)
    for name in NAMES:
        q.submit(name, b"{}")
        job = q.claim("w")
        assert job is not None
        job.complete(b"result")
    assert names(qdir, "finish") == NAMES


@pytest.mark.parametrize("yes", [["--yes"], []])
def test_purge_goes_on_past_one_requests_store_error(
        qdir: Path, monkeypatch: pytest.MonkeyPatch, yes: list[str]) -> None:
    finished(qdir)
    monkeypatch.setattr("s3q.cli.output.is_interactive", lambda: True)
    failing(monkeypatch, "delete", "finish/r1_request.json", DENIED)
    out = run(qdir, "purge", "finish", *yes, input="y\n")
    assert out.exit_code == 3, out.output
    assert out.stdout.splitlines()[-1] == "purged 2 request(s) from finish/"
    assert lines(out.stderr, "not purged: ") == [
        "not purged: r1_request.json: AccessDenied: not allowed on this key"]
    assert "safe" in error_line(out)
    assert names(qdir, "finish") == [NAMES[1]]


def test_purge_stops_when_the_store_is_unavailable(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    finished(qdir)
    failing(monkeypatch, "delete", "finish/r1_request.json", DOWN)
    out = run(qdir, "purge", "finish", "--yes", "--json", "--concurrency", "1")
    doc = stopped_at_r1(out)
    assert doc["purged"] == [NAMES[0]] and doc["skipped"] == []
    assert "store unavailable" in error_line(out)
    assert names(qdir, "finish") == NAMES[1:]


def test_purge_exits_1_when_it_skipped_requests(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """finish/r1 is written again (another completion of that name) between the listing
    and its delete: it is not purged, and the exit code says the purge was not done."""
    finished(qdir)

    def completed_again(inner: Store) -> None:
        inner.put("finish/r1_request.json", b"another completion")

    failing(monkeypatch, "delete", "finish/r1_request.json", None, before=completed_again)
    out = run(qdir, "purge", "finish", "--yes")
    assert out.exit_code == 1, out.output
    assert out.stdout.strip() == "purged 2 request(s) from finish/"
    assert lines(out.stderr, "skipped ") == [
        "skipped r1_request.json: changed or gone meanwhile"]
    assert names(qdir, "finish") == [NAMES[1]]


def orphans_in_processing(qdir: Path) -> None:
    """Requests in processing/ with no lease (an old seed-style worker's, or put there by
    hand), long expired: each scan adopts them (a lease) and releases them to wait/."""
    old = time.time() - 600
    for name in NAMES:
        path = qdir / "processing" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}")
        os.utime(path, (old, old))


def test_recover_stale_goes_on_past_an_orphan_it_may_not_adopt(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease of the orphan r1 may not be written (denied): the scan stopped there, with
    r1's StoreError, r2 (sorted after it) never looked at; the command printed no summary.
    Now r0 and r2 are recovered, r1 is named with its error, and the exit code is 3."""
    orphans_in_processing(qdir)
    failing(monkeypatch, "put", ".s3q/lease/r1_request.json", DENIED)
    out = run(qdir, "recover", "--stale")
    assert out.exit_code == 3, out.output
    assert "recovered 2 request(s)" in out.stdout
    assert lines(out.stderr, "not recovered: ") == [
        "not recovered: r1_request.json: AccessDenied: not allowed on this key"]
    assert names(qdir, "wait") == [NAMES[0], NAMES[2]]
    assert names(qdir, "processing") == [NAMES[1]]


def test_the_takeover_scan_goes_on_past_an_orphan_it_may_not_adopt(qdir: Path) -> None:
    """The workers' scan, the same: one orphan whose adoption is denied ended every scan
    there, so that the orphans after it, and the due retries whose view in wait/ the scan
    restores after the orphans (v0…v3), were never seen to: stuck while it stayed."""
    orphans_in_processing(qdir)
    q = Queue(FailsOn(open_store(str(qdir)), "put", ".s3q/lease/r1_request.json", DENIED),
              QueueConfig())
    done = q.scan("w")
    assert done is not None
    assert sorted(done.actions) == [NAMES[0], NAMES[2]]
    assert list(done.failed) == [NAMES[1]]
    assert names(qdir, "wait") == [NAMES[0], NAMES[2]]


def test_recover_does_not_count_a_takeover_its_lease_outlasted_as_recovered(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """r1's release (w1, its view in wait/) is held up past the takeover's deadline (a
    slow store; on S3, a copy in parts of a large request): the takeover stops there
    ('interrupted (lease expired)', left to the next taker). The command counted it as
    recovered and exited 0; it is not done: named on stderr, not counted, exit 1."""
    held_by_a_dead_worker(qdir, "w-dead")
    failing(monkeypatch, "put", "wait/r1_request.json", None,
            before=lambda _: time.sleep(5.0))  # lease_ttl 5: its deadline is 4 s
    out = run(qdir, "recover", "--stale", "--lease-ttl", "5")
    assert out.exit_code == 1, out.output
    assert "recovered 2 request(s)" in out.stdout
    assert lines(out.stderr, "not recovered: ") == [
        "not recovered: r1_request.json: interrupted (lease expired): its takeover took "
        "longer than lease_ttl; the next takeover (the workers' scan, or 's3q recover "
        "--stale' once its lease expired) carries on"]
    assert names(qdir, "wait") == [NAMES[0], NAMES[2]]


# ------------------------------------------------------------------------ outcome unknown

class GoesAway(DelegatingStore):
    """Every ``op`` on a key under ``prefix`` waits until ``together`` of them are in flight
    at once, then fails: the store went away under all of them."""

    def __init__(self, inner: Store, op: str, prefix: str, together: int) -> None:
        super().__init__(inner)
        self.op, self.prefix = op, prefix
        self.barrier = threading.Barrier(together, timeout=30)

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == self.op and str(args.get("key", "")).startswith(self.prefix):
            self.barrier.wait()
            raise DOWN
        return fn()


def unknown_lines(out: Result, verb: str) -> list[str]:
    """The requests named "not VERB (outcome unknown: ...)" on stderr."""
    start = f"not {verb} (outcome unknown: the store went away): "
    return [line[len(start):].split(": ")[0] for line in lines(out.stderr, start)]


def test_every_request_in_flight_when_the_store_went_away_is_marked_unknown(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`purge --concurrency 3`: the store goes away under the three deletes in flight at
    once. Each may have taken effect: all three are "outcome unknown" (on stderr and in
    the --json report); only the first one to be reported was marked so, the others read
    as plainly not purged."""
    finished(qdir)
    monkeypatch.setattr(cli_options, "open_store",
                        lambda *a, **k: GoesAway(open_store(*a, **k), "delete", "finish/", 3))
    out = run(qdir, "purge", "finish", "--yes", "--concurrency", "3")
    assert out.exit_code == 3, out.output
    assert sorted(unknown_lines(out, "purged")) == NAMES, out.stderr
    assert lines(out.stderr, "not purged: ") == []
    out = run(qdir, "purge", "finish", "--yes", "--concurrency", "3", "--json")
    doc = json.loads(out.stdout)
    assert sorted(f["name"] for f in doc["failed"] if f["outcome_unknown"]) == NAMES


def test_recover_stale_names_the_request_whose_takeover_the_store_went_away_under(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`recover --stale` is one scan; the store goes away at r1's takeover (t1, its lease
    written: taken effect or not). r1 was reported "not attempted", as r2 is: its outcome
    is unknown, and it is said so."""
    held_by_a_dead_worker(qdir, "w-dead")
    failing(monkeypatch, "put", ".s3q/lease/r1_request.json", DOWN)
    out = run(qdir, "recover", "--stale")
    assert out.exit_code == 3, out.output
    assert unknown_lines(out, "recovered") == [NAMES[1]], out.stderr
    assert lines(out.stderr, "not attempted: ") == [f"not attempted: {NAMES[2]}"]
    assert "1 recovered, 1 failed, 1 not attempted" in error_line(out)


def test_recover_all_names_the_orphan_whose_adoption_the_store_went_away_under(
        qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`recover --all` gives each orphan in processing/ a lease before it takes them over;
    the store goes away as r1's is created. r1 was reported "not attempted": its outcome
    is unknown (the lease may be there)."""
    orphans_in_processing(qdir)
    failing(monkeypatch, "put", ".s3q/lease/r1_request.json", DOWN)
    out = run(qdir, "recover", "--all", "--yes")
    assert out.exit_code == 3, out.output
    assert unknown_lines(out, "recovered") == [NAMES[1]], out.stderr
    assert NAMES[1] not in out.stderr.split("not attempted: ", 1)[-1].split()


# ------------------------------------------------------------------------ Queue.requeue_all

def test_queue_requeue_all_says_what_it_requeued_before_the_store_went_away(
        qdir: Path) -> None:
    """The library's requeue_all, as `s3q requeue --all`: the store goes away at r1. It
    raised the bare store error: r0's requeue, done, was not told (a caller could not know
    what to check), nor that r2 was never attempted."""
    dead_letters(qdir)
    q = Queue(FailsOn(open_store(str(qdir)), "put", ".s3q/lease/r1_request.json", DOWN),
              QueueConfig())
    with pytest.raises(BulkStopped) as stopped:
        q.requeue_all()
    e = stopped.value
    assert isinstance(e, StoreUnavailable)  # (as the store error it raised before)
    assert e.done == [NAMES[0]]
    assert list(e.undone.failed) == [NAMES[1]] and e.undone.unknown == {NAMES[1]}
    assert e.undone.not_attempted == [NAMES[2]]
    assert "1 requeued, 1 failed, 1 not attempted" in str(e)
    assert names(qdir, "wait") == [NAMES[0]]


def test_queue_requeue_all_goes_on_past_one_requests_store_error(qdir: Path) -> None:
    dead_letters(qdir)
    q = Queue(FailsOn(open_store(str(qdir)), "put", ".s3q/lease/r1_request.json", DENIED),
              QueueConfig())
    with pytest.raises(BulkIncomplete) as incomplete:
        q.requeue_all()
    e = incomplete.value
    assert not isinstance(e, StoreUnavailable)
    assert e.done == [NAMES[0], NAMES[2]] and list(e.undone.failed) == [NAMES[1]]
    assert e.undone.unknown == set() and e.undone.not_attempted == []
    assert names(qdir, "wait") == [NAMES[0], NAMES[2]]
    assert Queue(str(qdir)).requeue_all() == 1  # the store lets it now: the rest
