"""Adversarial review of the round since b6af9aa: each test reproduces one finding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s3q import layout
from s3q.backends.local import LocalStore
from s3q.store import StoreError
from tests.unit.world import ETAG_MODES, EtagMode, World


# ---------------------------------------------------------------------- deferred view
@pytest.mark.parametrize("etags", ETAG_MODES)
def test_deferred_view_written_ambiguously_does_not_rerun_a_completed_request(
        etags: EtagMode) -> None:
    """The deferred c3 (Job.write_view, from the lease keeper) takes effect but is reported
    as failed (PROTOCOL §2.3). The keeper logs it and the job carries on without recording
    the view: complete's d4 has no ETag to delete, d5 deletes the lease, and the view is
    left in processing/ with no lease. The next scan adopts it as an orphan and releases it
    to wait/: the completed request runs again (invariant 2)."""
    w = World(etags=etags)
    w.submit("a")
    q, store = w.queue(worker=1)
    job = q.claim("A", view_after=1.0)
    assert job is not None and job.view_due is not None
    w.ran(job.name, "A", job.attempt, job.read())
    store.ambiguous[len(store.ops) + 1] = "raise"  # the view's PUT!: effect, then an error
    with pytest.raises(StoreError):
        job.write_view()  # what the lease keeper's _view does (it logs the error)
    job.complete()
    w.expire()
    w.drain()  # a healthy fleet: its scan finds processing/a and no lease
    assert w.runs("a") == 1, w.handled
    w.check_settled()


# ---------------------------------------------------------------------- local store
def _store(tmp_path: Path, n: int) -> LocalStore:
    store = LocalStore(tmp_path / "q", settle=0)
    for i in range(n):
        store.put(f"wait/r{i:02d}", b"x")
    return store


def test_local_listing_is_not_cut_short_by_a_symlink_through_a_file(tmp_path: Path) -> None:
    """A dangling symlink in wait/ whose target goes through a file (``ln -s r00/x bad``):
    stat gives ENOTDIR, which ``_entries`` takes for "the directory is gone" and stops
    reading wait/: every entry after it (in directory order) is never listed, silently,
    and those requests are never claimed."""
    store = _store(tmp_path, 50)
    os.symlink("r00/x", tmp_path / "q" / "wait" / "bad")
    keys = [i.key for i in store.list_page(layout.WAIT).items]
    assert len(keys) == 50, keys


def test_local_listing_survives_a_symlink_loop(tmp_path: Path) -> None:
    """A symlink loop in wait/ (``ln -s loop loop``): ELOOP makes every listing of wait/
    raise StoreError: no worker claims anything any more."""
    store = _store(tmp_path, 5)
    os.symlink("loop", tmp_path / "q" / "wait" / "loop")
    keys = [i.key for i in store.list_page(layout.WAIT).items]
    assert len(keys) == 5, keys
