"""The store probe (``s3q doctor``) and the worker's start-up check, on the memory store and
on wrappers of it that break one guarantee each, as real stores do (the same behaviours on
a real S3 server: tests/integration/test_store_probe.py)."""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from botocore.exceptions import ClientError

from s3q import storecheck
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.capabilities import NATIVE, Capabilities
from s3q.doctor import PROBE, RESULT, SCHEMA, STALE_PROBE, Report, probe
from s3q.guarantees import MISSING, OK, ROWS
from s3q.store import (
    Body,
    Guard,
    NotFound,
    ObjectInfo,
    Page,
    PreconditionFailed,
    StoreError,
    list_all,
)
from s3q.storecheck import check_store

T = TypeVar("T")
REQUIRED = [name for name, r in ROWS.items() if r.required]


class Unprobed(DelegatingStore):
    """A memory store whose capabilities are not declared (as an S3 store's are not), so
    that the probe has to find them; subclasses break one guarantee. Counts operations."""

    def __init__(self, inner: MemoryStore | None = None) -> None:
        super().__init__(inner or MemoryStore("probe"))
        self.ops: Counter[str] = Counter()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        self.ops[op] += 1
        return fn()


class IgnoresDeleteIfMatch(Unprobed):
    """MinIO (minio issue 21677), radosgw 16: DeleteObject's If-Match is accepted and
    ignored."""

    def delete(self, key: str, *, if_match: str | None = None,
               guard: Guard | None = None) -> None:
        super().delete(key, guard=guard)


class SilentMissingDelete(Unprobed):
    """radosgw 16: DeleteObject If-Match of a missing key answers 204, not 404."""

    def delete(self, key: str, *, if_match: str | None = None,
               guard: Guard | None = None) -> None:
        with contextlib.suppress(NotFound):
            super().delete(key, if_match=if_match, guard=guard)


class IgnoresPutIfMatch(Unprobed):
    """Garage, as reported: PutObject's If-Match is ignored."""

    def put(self, key: str, body: Body, *, if_none_match: bool = False,
            if_match: str | None = None, guard: Guard | None = None) -> ObjectInfo:
        return super().put(key, body, if_none_match=if_none_match, guard=guard)


class ComparesIfMatchVerbatim(Unprobed):
    """radosgw 16: If-Match is compared with the unquoted ETag, so the current ETag as S3
    clients send it (quoted) is refused, and only its bare form accepted."""

    def put(self, key: str, body: Body, *, if_none_match: bool = False,
            if_match: str | None = None, guard: Guard | None = None) -> ObjectInfo:
        if if_match is not None:
            if if_match.startswith('"'):
                raise PreconditionFailed(f"{key}: 412")
            if_match = f'"{if_match}"'
        return super().put(key, body, if_none_match=if_none_match, if_match=if_match,
                           guard=guard)


class CheckThenWrite(Unprobed):
    """SeaweedFS before its fix (seaweedfs issue 8800): a conditional PUT looks the key up,
    then writes in another step; concurrent ones all pass the check."""

    def put(self, key: str, body: Body, *, if_none_match: bool = False,
            if_match: str | None = None, guard: Guard | None = None) -> ObjectInfo:
        if if_none_match and any(i.key == key for i in self.list_page(key).items):
            raise PreconditionFailed(f"{key}: exists")
        if if_match is not None and self.head(key).etag != if_match:
            raise PreconditionFailed(f"{key}: changed")
        time.sleep(0.05)
        return super().put(key, body, guard=guard)


class Unordered(Unprobed):
    """S3 Express directory buckets: keys listed in no particular order."""

    def list_page(self, prefix: str, *, start_after: str | None = None,
                  limit: int = 1000) -> Page:
        page = super().list_page(prefix, start_after=start_after, limit=limit)
        return Page(random.Random(1).sample(page.items, len(page.items)), page.truncated)


class DeniesDeletes(Unprobed):
    def delete(self, key: str, *, if_match: str | None = None,
               guard: Guard | None = None) -> None:
        raise StoreError(f"cannot delete {key}: permission denied (EACCES)")


class Conflicts(Unprobed):
    """AWS: overlapping conditional writes may be answered 409 ConditionalRequestConflict."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = random.Random(7)
        self.lock = threading.Lock()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        conditional = args.get("if_match") is not None or args.get("if_none_match")
        with self.lock:
            conflict = conditional and self.rng.random() < 0.3
        if conflict:
            cause = ClientError({"Error": {"Code": "ConditionalRequestConflict"}}, op)
            raise PreconditionFailed(f"{args.get('key', args.get('dst'))}: 409") from cause
        return super()._call(op, args, fn)


def statuses(report: Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_a_store_that_declares_its_guarantees_is_reported_without_probing_them() -> None:
    report = probe(MemoryStore("declared"))
    assert report.ok and report.capabilities == NATIVE
    by_name = {c.name: c for c in report.checks}
    assert set(REQUIRED) <= set(by_name)
    assert "declared by MemoryStore" in by_name["create_if_absent"].observed
    assert all(c.status == OK for c in report.checks)
    assert "multipart_if_none_match" not in by_name  # S3's multipart uploads: not probed


def test_the_multipart_row_is_not_applicable_off_s3_and_never_required() -> None:
    """(On S3, moto and a proxy ignoring it: tests/integration/test_store_probe.py.)"""
    found = {c.name: c for c in probe(Unprobed()).checks}["multipart_if_none_match"]
    assert (found.status, found.observed, found.required) == (
        OK, "not applicable: Unprobed writes any size in one request", False)


def test_a_store_that_keeps_every_guarantee_is_ok_and_the_probe_cleans_up() -> None:
    store = Unprobed()
    report = probe(store)
    assert report.ok, [c for c in report.checks if c.status != OK]
    assert all(c.status == OK for c in report.checks)
    # (a MemoryStore answers delete_batch one key at a time, as each delete would: the
    # probe shows that; NATIVE does not ask for batches, which save a file store nothing)
    assert report.capabilities == replace(NATIVE, batch_conditional_delete=True)
    assert "exactly one won each time" in {c.name: c for c in report.checks}[
        "create_if_absent"].observed
    assert list(list_all(store, "")) == []


def test_opaque_etags_are_reported_and_still_ok() -> None:
    report = probe(Unprobed(MemoryStore("opaque", etags="opaque")))
    assert report.ok and report.capabilities.etags == "opaque"
    assert {c.name: c for c in report.checks}["etags"].observed.startswith("opaque")


@pytest.mark.parametrize(("store", "missing", "seen"), [
    (IgnoresDeleteIfMatch, "conditional_delete", "stale ETag deleted the object"),
    (SilentMissingDelete, "conditional_delete", "missing key was accepted (204)"),
    (IgnoresPutIfMatch, "compare_and_swap", "stale ETag was accepted"),
    (ComparesIfMatchVerbatim, "compare_and_swap", "without its quotes"),
    (CheckThenWrite, "create_if_absent", "concurrent writes won in round 1"),
    (Unordered, "ordered_listing", "listed ["),
    (DeniesDeletes, "permission.delete", "AccessDenied"),
])
def test_each_broken_guarantee_is_missing_and_named(store: type[Unprobed], missing: str,
                                                    seen: str) -> None:
    report = probe(store())
    found = {c.name: c for c in report.checks}[missing]
    assert found.status == MISSING and seen in found.observed, found
    assert found.todo and found.required
    assert not report.ok and missing in [c.name for c in report.missing]
    if missing in Capabilities.__dataclass_fields__:
        assert getattr(report.capabilities, missing) is False


def test_conditional_writes_check_then_write_loses_compare_and_swap_too() -> None:
    report = probe(CheckThenWrite())
    assert statuses(report)["compare_and_swap"] == MISSING


def test_409_conflicts_are_retried_reported_and_ok() -> None:
    report = probe(Conflicts())
    assert report.ok, [c for c in report.checks if c.status != OK]
    row = {c.name: c for c in report.checks}["conflict_409"]
    assert row.status == OK and "409 ConditionalRequestConflict" in row.observed
    assert report.capabilities.conflict_409 is True


def test_the_report_as_json_and_back() -> None:
    report = probe(Unprobed())
    data = json.loads(json.dumps(report.to_json()))
    assert data["schema"] == SCHEMA and data["ok"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["started_at"])
    assert {c["name"] for c in data["checks"]} >= set(REQUIRED)
    assert set(data["checks"][0]) == {"name", "title", "status", "observed", "protects",
                                      "todo", "required"}
    assert Report.from_json(data) == report


def test_leftovers_of_killed_probes_are_removed_after_an_hour() -> None:
    now = [1_000_000.0]
    inner = MemoryStore("clock", clock=lambda: now[0])
    inner.put(PROBE + "dead-probe/create", b"x")
    inner.put(RESULT, b"{}")
    now[0] += STALE_PROBE + 10
    inner.put(PROBE + "running-probe/create", b"x")
    probe(Unprobed(inner))
    assert [i.key for i in list_all(inner, "")] == [RESULT, PROBE + "running-probe/create"]


def test_the_operations_doc_shows_a_real_report_with_every_row() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md").read_text()
    sample = doc.split("## Checking the store: `s3q doctor`", 1)[1].split("```\n$ s3q doctor\n",
                                                                       1)[1].split("```")[0]
    titles = [m.group(1).strip() for m in re.finditer(r"^(?:OK|MISSING|UNKNOWN) +(.+?)  ",
                                                     sample, re.M)]
    assert titles == [r.title for r in ROWS.values()]
    assert sample.splitlines()[-3] == "verdict: OK: every guarantee a worker needs holds"


# -- the worker's start-up check --------------------------------------------------------------

def test_the_check_probes_once_then_reads_its_cached_result() -> None:
    store = Unprobed()
    first = check_store(store, max_age=3600)
    assert first.report is not None and not first.cached and not first.missing
    assert json.loads(store.get(RESULT)[0])["schema"] == SCHEMA
    puts = store.ops["put"]
    again = check_store(store, max_age=3600)
    assert again.cached and again.report == first.report
    assert store.ops["put"] == puts  # nothing probed


def test_the_cache_expires_by_the_stores_clock_and_with_another_version_or_probes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    store = Unprobed(MemoryStore("clock", clock=lambda: now[0]))
    check_store(store, max_age=600)
    now[0] += 300
    assert check_store(store, max_age=600).cached
    now[0] += 301
    assert not check_store(store, max_age=600).cached  # older than max_age: probed again
    assert check_store(store, max_age=600).cached
    assert not check_store(store, max_age=0).cached  # 0: probe at every start
    monkeypatch.setattr(storecheck, "PROBES", storecheck.PROBES + 1)  # probes that ask more
    assert not check_store(store, max_age=600).cached
    assert check_store(store, max_age=600).cached
    monkeypatch.setattr(storecheck, "__version__", "9.9.9")
    assert not check_store(store, max_age=600).cached


def test_an_unreadable_cache_is_probed_again() -> None:
    store = Unprobed()
    store.put(RESULT, b"{not json")
    found = check_store(store, max_age=3600)
    assert not found.cached and found.report is not None and found.report.ok
    assert check_store(store, max_age=3600).cached


@pytest.mark.parametrize("text", [b"[]", b"null", b'{"schema": "%s", "checks": [1]}' % (
    SCHEMA.encode())])
def test_a_cache_of_another_shape_is_probed_again(text: bytes) -> None:
    """Valid JSON that is not a cached report (written by something else, or by a version
    of s3q with another layout under the same schema): AttributeError escaped the check,
    so every worker of the queue crashed at every start with a traceback until somebody
    deleted .s3q/probe/result."""
    store = Unprobed()
    store.put(RESULT, text)
    found = check_store(store, max_age=3600)
    assert not found.cached and found.report is not None and found.report.ok
    assert check_store(store, max_age=3600).cached


def test_a_store_missing_guarantees_is_refused_in_one_line_and_never_cached() -> None:
    class Both(IgnoresDeleteIfMatch, IgnoresPutIfMatch):
        pass

    store = Both()
    found = check_store(store, max_age=3600)
    assert [c.name for c in found.missing] == ["compare_and_swap", "conditional_delete"]
    line = found.refusal()
    assert "\n" not in line
    for c in found.missing:
        assert f"{c.title}: {c.observed} (to do: {c.todo})" in line
    assert not any(i.key == RESULT for i in list_all(store, PROBE))
    assert not check_store(store, max_age=3600).cached


def test_declared_stores_are_not_probed() -> None:
    store = MemoryStore("declared")
    assert check_store(store, max_age=3600).report is None
    assert store.snapshot() == {}
