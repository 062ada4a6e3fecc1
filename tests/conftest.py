"""Root fixtures: the S3 endpoint (moto in a separate process by default) and S3 stores on it.

``s3_endpoint`` (session): a :class:`tests.s3server.S3Endpoint`; see ``tests/s3server.py``
for the ``S3Q_TEST_S3_*`` variables that point the suite at another endpoint.
``make_s3_store`` (function): a :class:`tests.s3server.MakeS3Store` factory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from s3q.backends.s3 import S3Store
from s3q.store import StoreError, list_all
from tests.s3server import (
    MakeS3Store,
    S3Endpoint,
    endpoint_from_env,
    running_moto,
)

# Developer settings that would redirect or break requests to the local moto server.
_AWS_ENV_TO_DROP = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def _isolate_from_aws_config(mp: pytest.MonkeyPatch) -> None:
    """For moto: ignore the developer's AWS profile, config files, endpoint and proxies."""
    for name in _AWS_ENV_TO_DROP:
        mp.delenv(name, raising=False)
    mp.setenv("AWS_CONFIG_FILE", os.devnull)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name in ("NO_PROXY", "no_proxy"):
        mp.setenv(name, ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"])))


@pytest.fixture(scope="session", autouse=True)
def _worker_locks_of_this_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Workers lock their id in S3Q_LOCK_DIR (default: the host's /tmp). Other test runs on
    the same host (other checkouts) start workers with the same ids: give this run its own
    directory, so that they never refuse to start because of each other."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S3Q_LOCK_DIR", str(tmp_path_factory.mktemp("worker-locks")))
        yield


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """The S3 endpoint for the whole session: moto's server, started here on loopback and
    stopped at the end, with bucket ``s3q-test``; or the one ``S3Q_TEST_S3_*`` names."""
    try:
        configured = endpoint_from_env()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from e
    if configured is not None:
        yield configured
        return
    with pytest.MonkeyPatch.context() as mp:
        _isolate_from_aws_config(mp)
        with running_moto() as endpoint:
            yield endpoint


@pytest.fixture
def make_s3_store(s3_endpoint: S3Endpoint) -> Iterator[MakeS3Store]:
    """Make :class:`S3Store` s on ``s3_endpoint``; closed (and, off moto, emptied) after the
    test."""
    stores: list[S3Store] = []

    def make(*, prefix: str | None = None, **overrides: Any) -> S3Store:
        store = S3Store(
            s3_endpoint.bucket, prefix or f"t/{uuid4().hex}", s3_endpoint.options(**overrides)
        )
        stores.append(store)
        return store

    yield make
    for store in stores:
        if not s3_endpoint.is_moto:  # moto's objects go with the server
            _empty(store)
        store.close()


def _empty(store: S3Store) -> None:
    try:
        for info in list(list_all(store, "")):
            store.delete(info.key)
    except StoreError:
        pass  # best effort: e.g. a store on a deliberately wrong bucket
