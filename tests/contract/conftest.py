"""The ``store`` fixture: every contract test runs once per backend.

``memory`` (with MD5 ETags), ``memory-opaque`` (a new ETag for every write, as SSE-KMS
gives) and ``local`` (on ``tmp_path``) need nothing; ``s3`` uses the root conftest's
``make_s3_store`` (moto, or the endpoint ``S3Q_TEST_S3_*`` names), looked up only for that
parameter so the others run without it.

``limited`` and ``data`` are the fixtures of the tests of requests over S3's limits
(``test_s3_large``, ``test_s3_long_copies``; :mod:`tests.contract.large`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from s3q.backends import s3multipart
from s3q.backends.local import LocalStore
from s3q.backends.memory import MemoryStore
from s3q.store import Store
from tests.contract.large import LIMIT, SIZE, MiB
from tests.storeproxy import Behaviour, StoreProxy

if TYPE_CHECKING:
    from tests.s3server import MakeS3Store, S3Endpoint

BACKENDS = ["memory", "memory-opaque", "local", "s3"]

#: Makes another store on the *same* objects as the ``store`` fixture (a second client).
SameStore = Callable[[], Store]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def same_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> SameStore:
    """A factory of stores over one fresh namespace of ``backend``."""
    if backend.startswith("memory"):
        shared = MemoryStore("contract", etags="opaque" if backend.endswith("opaque") else "md5")
        return lambda: shared
    if backend == "local":
        root = tmp_path / "store"
        return lambda: LocalStore(root)
    make_s3_store = cast("MakeS3Store", request.getfixturevalue("make_s3_store"))
    first = make_s3_store()
    made: list[Store] = [first]

    def another() -> Store:
        if made:
            return made.pop()
        return make_s3_store(prefix=first.prefix)

    return another


@pytest.fixture
def on_moto(backend: str, request: pytest.FixtureRequest) -> bool:
    """True when ``backend`` is the moto S3 server (which ignores a few S3 conditions)."""
    return backend == "s3" and bool(request.getfixturevalue("s3_endpoint").is_moto)


@pytest.fixture
def md5_etags(backend: str) -> bool:
    """Does ``backend`` give single-part objects the MD5 of their bytes as ETag? (Not a
    guarantee the protocol relies on: a property some stores have, tested where they do.)"""
    return backend != "memory-opaque"


@pytest.fixture
def store(same_store: SameStore) -> Iterator[Store]:
    """A fresh, empty store of each backend."""
    s = same_store()
    yield s
    s.close()


@pytest.fixture
def limited(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreProxy]:
    """A proxy in front of moto with S3's limits on one request, lowered to ``LIMIT``, and
    the store's knowledge of them lowered too (5 MiB parts, S3's least)."""
    if not s3_endpoint.is_moto or not s3_endpoint.endpoint_url:
        pytest.skip("the proxy models S3's limits in front of moto")
    monkeypatch.setattr(s3multipart, "SINGLE_MAX", LIMIT)
    monkeypatch.setattr(s3multipart, "PART_SIZE", 5 * MiB)
    proxy = StoreProxy(s3_endpoint.endpoint_url,
                       Behaviour(size_limit=LIMIT, copy_source_if_match=True))
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def data() -> bytes:
    """The bytes of a large request (``SIZE``: over ``LIMIT``, copied in 3 parts)."""
    return os.urandom(SIZE)
