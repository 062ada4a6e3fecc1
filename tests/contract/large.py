"""Requests over S3's limits on one request (5 GiB), lowered to 12 MiB between
:class:`S3Store` and moto by :mod:`tests.storeproxy` (``size_limit``; the ``limited``
fixture of ``tests/contract/conftest.py``), for ``test_s3_large`` and
``test_s3_long_copies``."""

from __future__ import annotations

from s3q.backends.s3 import S3Store
from tests.s3server import S3Endpoint

MiB = 1024**2
LIMIT = 12 * MiB
#: a large request: over the limit, copied in 3 parts of 5 MiB (S3's least)
SIZE = 13 * MiB
NAME = "big/large_request.bin"


def seed(s3_endpoint: S3Endpoint, store: S3Store, key: str, body: bytes) -> None:
    """Put ``body`` at ``key`` straight into moto, past the proxy (a producer's multipart
    upload, which S3 accepts at any size)."""
    s3_endpoint.client().put_object(Bucket=store.bucket, Key=f"{store.prefix}/{key}",
                                    Body=body)


def open_uploads(s3_endpoint: S3Endpoint, store: S3Store) -> list[str]:
    """The keys of the multipart uploads left open (never completed nor aborted)."""
    answer = s3_endpoint.client().list_multipart_uploads(Bucket=store.bucket,
                                                         Prefix=f"{store.prefix}/")
    return [u.get("Key", "") for u in answer.get("Uploads", [])]
