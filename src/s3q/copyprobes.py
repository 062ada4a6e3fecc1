"""Probing the conditions of a store's copies and batch deletes, for ``s3q doctor``
(:mod:`s3q.doctor`): CopyObject's ``x-amz-copy-source-if-match`` and ``If-None-Match``,
CompleteMultipartUpload's ``If-None-Match`` and DeleteObjects' per-object ETags, each on
throwaway keys. None is required (s3q copies through GET + ``PUT If-None-Match`` where
CopyObject's condition is missing, deletes one key at a time where DeleteObjects' is); each
found lets s3q use the cheaper request. The plumbing (:class:`~s3q.probes.Prober`) and the
required guarantees are :mod:`s3q.probes`'.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from s3q.guarantees import MISSING, OK, UNKNOWN, Check, row
from s3q.probes import Answer, Prober, said
from s3q.store import NotFound, PreconditionFailed, Store, StoreError

__all__ = ["CopyProber"]


class CopyProber(Prober):
    """:class:`~s3q.probes.Prober` with the probes of copies and batch deletes."""

    def copy_source_if_match(self) -> Check:
        src, dst = self.key("copy-src"), self.key("copy-dst")
        e1 = self.write("copy-src", b"c1").etag
        e2 = self.write("copy-src", b"c2").etag
        stale = self.ask(lambda: self.store.copy(src, dst, if_source_match=e1))
        if stale.kind == "ok":
            return row("copy_source_if_match", MISSING, "CopyObject with a stale "
                       "x-amz-copy-source-if-match copied the changed source anyway")
        current = self.ask(lambda: self.store.copy(src, dst, if_source_match=e2))
        if stale.kind != "412" or current.kind != "ok":
            return row("copy_source_if_match", UNKNOWN,
                       f"stale source ETag: {stale}; current: {current}")
        return row("copy_source_if_match", OK, "stale source ETag refused (412), current "
                   "accepted")

    def copy_if_none_match(self) -> Check:
        src, dst, new = self.key("copy-src"), self.key("copy-exists"), self.key("copy-new")
        self.write("copy-src", b"c3")
        self.write("copy-exists", b"kept")
        with _allowing(self.store, copy_if_none_match=True):
            over = self.ask(lambda: self.store.copy(src, dst, if_none_match=True))
            fresh = self.ask(lambda: self.store.copy(src, new, if_none_match=True))
        if over.kind == "ok":
            return row("copy_if_none_match", MISSING, "CopyObject If-None-Match: * over an "
                       "existing key copied anyway")
        if over.kind != "412" or self.store.get(dst)[0] != b"kept":
            return row("copy_if_none_match", UNKNOWN, f"over an existing key: {over}")
        if fresh.kind != "ok":
            return row("copy_if_none_match", MISSING, f"refused over a missing key: {fresh}")
        return row("copy_if_none_match", OK, "refused (412) over an existing key, accepted "
                   "over a missing one")

    def multipart_if_none_match(self) -> Check:
        """A create-if-absent copy in parts (s3multipart), of one part: a last part may be
        of any size, so its CompleteMultipartUpload is the very request of one over 5 GiB."""
        from s3q.backends import s3multipart
        from s3q.backends.s3 import S3Store

        name, store = "multipart_if_none_match", self.store
        if not isinstance(store, S3Store):
            return row(name, OK, f"not applicable: {type(store).__name__} writes any size "
                       "in one request")
        src, dst, new = self.key("mpu-src"), self.key("mpu-exists"), self.key("mpu-new")
        info, _ = self.write("mpu-src", b"m1"), self.write("mpu-exists", b"kept")

        def copy(to: str) -> tuple[Answer, bool]:
            """The answer, and whether a 412 came from the completion (not from a part's
            source condition, which says nothing of If-None-Match)."""
            answer = self.ask(lambda: s3multipart.copy(store, src, to, info,
                                                       if_none_match=True, guard=None))
            return answer, (answer.kind == "412"
                            and answer.error.startswith("S3 CompleteMultipartUpload"))

        (over, over_412), (fresh, fresh_412) = copy(dst), copy(new)
        if over.kind == "ok":
            return row(name, MISSING, "CompleteMultipartUpload If-None-Match: * over an "
                       "existing key was accepted: the object was replaced")
        if not over_412 or self.store.get(dst)[0] != b"kept":
            return row(name, UNKNOWN, f"over an existing key: {over.error}")
        if fresh.kind != "ok":
            return row(name, MISSING if fresh_412 else UNKNOWN, f"over a missing key: "
                       f"{fresh.error}")
        return row(name, OK, "a copy in one part: refused (412) over an existing key, "
                   "accepted over a missing one")

    def batch_conditional_delete(self) -> Check:
        name = "batch_conditional_delete"
        stale, current, absent = (self.key(f"batch-{k}") for k in ("stale", "now", "gone"))
        e1 = self.write("batch-stale", b"b1").etag
        self.write("batch-stale", b"b2")
        e3 = self.write("batch-now", b"b3").etag
        with _allowing(self.store, batch_conditional_delete=True):
            answer = self.ask(lambda: self.store.delete_batch(
                [(stale, e1), (current, e3), (absent, e3)]))
        if answer.kind != "ok":
            return row(name, MISSING if answer.kind == "error" else UNKNOWN,
                       f"DeleteObjects with each object's ETag: {answer}")
        results: list[StoreError | None] = answer.value
        kept = self.ask(lambda: self.store.head(stale), conditional=False)
        gone = self.ask(lambda: self.store.head(current), conditional=False)
        if kept.kind == "404":
            return row(name, MISSING, "DeleteObjects deleted an object whose ETag was stale "
                       "(the ETag ignored)")
        if not isinstance(results[0], PreconditionFailed) or results[1] is not None \
                or gone.kind != "404":
            return row(name, UNKNOWN, f"stale ETag: {said(results[0])}; current ETag: "
                       f"{said(results[1])}")
        if not isinstance(results[2], NotFound):
            return row(name, MISSING, f"a missing key was answered {said(results[2])}, not "
                       "NoSuchKey: a commit could not tell its own delete from a lease "
                       "deleted by somebody else")
        return row(name, OK, "stale ETag refused (PreconditionFailed) and the object kept; "
                   "current ETag deleted; missing key: NoSuchKey, as DeleteObject answers")


@contextmanager
def _allowing(store: Store, **capabilities: bool) -> Iterator[None]:
    """Let an S3Store use what it does not yet know the store does (CopyObject's own
    If-None-Match instead of GET + PUT; DeleteObjects instead of one DeleteObject a key)."""
    from s3q.backends.s3 import S3Store

    if not isinstance(store, S3Store):
        yield
        return
    saved, changes = store.capabilities, dict[str, Any](capabilities)
    store.capabilities = replace(saved, **changes)
    try:
        yield
    finally:
        store.capabilities = saved
