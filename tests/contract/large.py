"""Requests over S3's limits on one request (5 GiB), lowered to 12 MiB between
:class:`S3Store` and moto by :mod:`tests.storeproxy` (``size_limit``), for
``test_s3_large`` and ``test_s3_long_copies``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from s3q.backends import s3multipart
from s3q.backends.s3 import S3Store
from tests.s3server import S3Endpoint
from tests.storeproxy import Behaviour, StoreProxy

MiB = 1024**2
LIMIT = 12 * MiB
#: a large request: over the limit, copied in 3 parts of 5 MiB (S3's least)
SIZE = 13 * MiB
NAME = "big/large_request.bin"


def limited_proxy(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[StoreProxy]:
    """The proxy with S3's limits (lowered), and the store's knowledge of them lowered too
    (the body of a ``limited`` fixture)."""
    if not s3_endpoint.is_moto or not s3_endpoint.endpoint_url:
        pytest.skip("the proxy models S3's limits in front of moto")
    monkeypatch.setattr(s3multipart, "SINGLE_MAX", LIMIT)
    monkeypatch.setattr(s3multipart, "PART_SIZE", 5 * MiB)
    proxy = StoreProxy(s3_endpoint.endpoint_url,
                       Behaviour(size_limit=LIMIT, copy_source_if_match=True))
    yield proxy
    proxy.close()


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
