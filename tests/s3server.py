"""The S3 endpoint the tests run against: moto's S3 server in a separate process on loopback,
or, when ``S3Q_TEST_S3_ENDPOINT`` is set, another S3-compatible endpoint (or AWS itself).

Import it as ``tests.s3server``. Acceptance tests and benchmarks use
:func:`start_moto_server` and :func:`stop` to run a server of their own.

Environment (all optional):

* ``S3Q_TEST_S3_ENDPOINT``: an endpoint URL, or ``aws`` for AWS itself; unset = moto.
* ``S3Q_TEST_S3_BUCKET``: the bucket to use (required with ``S3Q_TEST_S3_ENDPOINT``; every
  test works under a fresh ``t/<uuid>/`` prefix in it).
* ``S3Q_TEST_S3_REGION``: default ``us-east-1``.
* ``S3Q_TEST_S3_ACCESS_KEY_ID`` / ``S3Q_TEST_S3_SECRET_ACCESS_KEY``: default = the standard
  AWS credential chain.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

import boto3
from botocore.config import Config

from s3q.backends import S3Options

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from s3q.backends.s3 import S3Store

__all__ = [
    "MOTO_BUCKET",
    "MakeS3Store",
    "S3Endpoint",
    "endpoint_from_env",
    "free_port",
    "running_moto",
    "start_moto_server",
    "stop",
]

MOTO_BUCKET = "s3q-test"
MOTO_CREDENTIALS = ("testing", "testing")

# Runs moto's server with werkzeug's per-request log lines silenced (they would fill the log).
#: moto's server, its requests made atomic unless S3Q_MOTO_ATOMIC=0. moto checks a
#: condition (If-Match, If-None-Match) and then writes, without a lock: two conditional
#: PUTs racing on one key can both succeed, which AWS never allows (and which makes tests
#: of fencing flaky on a loaded machine); and a listing that meets a concurrent write may
#: fail with HTTP 500 ("dictionary changed size during iteration"). One lock around the
#: handling of every request (its answer is sent after) gives moto the atomicity real S3
#: guarantees; with S3Q_MOTO_ATOMIC=0 it stays racy (a store that lacks the guarantee, for
#: `s3q doctor`'s tests). The race window is short there (moto checks and writes in one
#: slice of the GIL: no double winner in 126 rounds of 16 small racing PUTs), so
#: S3Q_MOTO_RACE_WINDOW=SECONDS puts that much time between the check of a conditional
#: PutObject and its write, as a store that looks the key up and then writes it in another
#: step does (SeaweedFS's filer, seaweedfs issue 8800): concurrent conditional writes then
#: do overlap.
#: moto's DeleteObjects ignored each object's ETag before 5.2.6; AWS refuses a stale one
#: (PreconditionFailed) and, as its DeleteObject does, a missing key under a condition
#: (NoSuchKey is assumed here: AWS documents no other answer). The server does so, whatever
#: moto's version, unless S3Q_MOTO_BATCH_ETAGS=0: then it drops each object's ETag before
#: moto reads the request, as a store that ignores them does (MinIO; s3q's probe then finds
#: that, and deletes one key a request).
_MOTO_MAIN = """
import logging, os, sys, threading, time
logging.getLogger('werkzeug').setLevel(logging.WARNING)
def orphaned(parent=os.getppid()):  # a killed test run leaves no server behind
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
threading.Thread(target=orphaned, daemon=True).start()
from moto.s3.responses import S3Response
if os.environ.get('S3Q_MOTO_ATOMIC', '1') != '0':
    lock = threading.Lock()
    def atomic(method):
        def locked(*args, **kwargs):
            with lock:
                return method(*args, **kwargs)
        return locked
    for name in ('_key_response', '_bucket_response'):
        setattr(S3Response, name, atomic(getattr(S3Response, name)))
elif float(os.environ.get('S3Q_MOTO_RACE_WINDOW', '0')) > 0:
    from moto.s3.models import S3Backend
    window, conditional = float(os.environ['S3Q_MOTO_RACE_WINDOW']), threading.local()
    put_object, backend_put = S3Response.put_object, S3Backend.put_object
    def checked_put(self, *args, **kwargs):
        conditional.on = 'If-Match' in self.headers or 'If-None-Match' in self.headers
        try:
            return put_object(self, *args, **kwargs)
        finally:
            conditional.on = False
    def slow_write(self, *args, **kwargs):
        if getattr(conditional, 'on', False):
            time.sleep(window)  # the condition was checked; the write comes later
        return backend_put(self, *args, **kwargs)
    S3Response.put_object, S3Backend.put_object = checked_put, slow_write
if os.environ.get('S3Q_MOTO_BATCH_ETAGS', '1') != '0':
    import xmltodict
    from moto.core.responses import ActionResult
    delete_keys = S3Response._bucket_response_delete_keys
    def conditional_delete_keys(self, bucket_name, *args, **kwargs):
        body = xmltodict.parse(self.body, strip_whitespace=False)
        objects = body['Delete'].get('Object', [])
        objects = objects if isinstance(objects, list) else [objects]
        keys, refused, rest = self.backend.get_bucket(bucket_name).keys, [], []
        for obj in objects:
            found = keys.get(obj['Key']) if obj.get('ETag') is not None else None
            if obj.get('ETag') is None:
                rest.append(obj)
            elif found is None:
                refused.append({'Key': obj['Key'], 'Code': 'NoSuchKey',
                                'Message': 'The specified key does not exist.'})
            elif found.etag.strip('"') != obj['ETag'].strip('"'):
                refused.append({'Key': obj['Key'], 'Code': 'PreconditionFailed',
                                'Message': 'At least one of the pre-conditions you '
                                           'specified did not hold'})
            else:
                rest.append(obj)
        if not rest:
            self.data['Action'] = 'DeleteObjects'
            return self.serialized(ActionResult({'Deleted': [], 'Errors': refused}))
        body['Delete']['Object'] = rest
        self.body = xmltodict.unparse(body).encode()
        serialized = self.serialized
        def with_refused(result):
            result.result['Errors'].extend(refused)
            return serialized(result)
        self.serialized = with_refused
        return delete_keys(self, bucket_name, *args, **kwargs)
    S3Response._bucket_response_delete_keys = conditional_delete_keys
else:
    import xmltodict
    delete_keys = S3Response._bucket_response_delete_keys
    def etags_ignored(self, bucket_name, *args, **kwargs):
        body = xmltodict.parse(self.body, strip_whitespace=False)
        objects = body['Delete'].get('Object', [])
        for obj in objects if isinstance(objects, list) else [objects]:
            obj.pop('ETag', None)
        self.body = xmltodict.unparse(body).encode()
        return delete_keys(self, bucket_name, *args, **kwargs)
    S3Response._bucket_response_delete_keys = etags_ignored
from moto.server import main
main(sys.argv[1:])
"""


@dataclass(frozen=True)
class S3Endpoint:
    """Where the S3 tests run. ``endpoint_url`` None = AWS; credentials None = the chain."""

    endpoint_url: str | None
    bucket: str
    region: str
    access_key_id: str | None
    secret_access_key: str | None
    is_moto: bool

    def options(self, **overrides: Any) -> S3Options:
        """:class:`S3Options` for this endpoint, with ``overrides`` applied."""
        base = S3Options(
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )
        return dataclasses.replace(base, **overrides)

    def client(self) -> S3Client:
        """A raw boto3 client for this endpoint (setup, and checks of the server itself)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": 3},
                s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            ),
        )


class MakeS3Store(Protocol):
    """The ``make_s3_store`` fixture: a new :class:`S3Store` on the test endpoint, on a fresh
    ``t/<uuid>`` prefix unless ``prefix`` is given (to share one between two stores);
    ``overrides`` are :class:`S3Options` fields."""

    def __call__(self, *, prefix: str | None = None, **overrides: Any) -> S3Store: ...


def endpoint_from_env() -> S3Endpoint | None:
    """The endpoint ``S3Q_TEST_S3_*`` names, or None when moto should be used."""
    url = os.environ.get("S3Q_TEST_S3_ENDPOINT", "").strip()
    if not url:
        return None
    bucket = os.environ.get("S3Q_TEST_S3_BUCKET", "").strip()
    if not bucket:
        raise ValueError("S3Q_TEST_S3_ENDPOINT is set but S3Q_TEST_S3_BUCKET is not")
    return S3Endpoint(
        endpoint_url=None if url.lower() == "aws" else url,
        bucket=bucket,
        region=os.environ.get("S3Q_TEST_S3_REGION") or "us-east-1",
        access_key_id=os.environ.get("S3Q_TEST_S3_ACCESS_KEY_ID") or None,
        secret_access_key=os.environ.get("S3Q_TEST_S3_SECRET_ACCESS_KEY") or None,
        is_moto=False,
    )


def moto_endpoint(url: str, bucket: str = MOTO_BUCKET) -> S3Endpoint:
    """The :class:`S3Endpoint` of a moto server at ``url`` (the bucket is not created)."""
    key_id, secret = MOTO_CREDENTIALS
    return S3Endpoint(url, bucket, "us-east-1", key_id, secret, is_moto=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (it may be taken before it is used)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto_server(
    host: str = "127.0.0.1", *, timeout: float = 30.0, env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start moto's S3 server as a child process on a free port and wait until it answers;
    ``env``: more environment (``S3Q_MOTO_ATOMIC``, ``S3Q_MOTO_RACE_WINDOW``,
    ``S3Q_MOTO_BATCH_ETAGS``). Returns the
    process and the endpoint URL; end it with :func:`stop`."""
    failure = ""
    for _ in range(3):  # the free port may be taken by someone else meanwhile
        port = free_port(host)
        # the child keeps its own handle on the (already unlinked) log file
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", _MOTO_MAIN, "-H", host, "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {}), "MOTO_PORT": str(port)},
            )
            url = f"http://{host}:{port}"
            if _wait_until_up(proc, url, timeout):
                return proc, url
            stop(proc)
            failure = _tail(log)
    raise RuntimeError(f"moto server did not start:\n{failure}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate a server started by :func:`start_moto_server` (kill it if it lingers)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextlib.contextmanager
def running_moto(env: dict[str, str] | None = None) -> Iterator[S3Endpoint]:
    """A moto server of its own (``env``: see :func:`start_moto_server`) with its bucket
    created, stopped on exit."""
    proc, url = start_moto_server(env=env)
    try:
        endpoint = moto_endpoint(url)
        endpoint.client().create_bucket(Bucket=endpoint.bucket)
        yield endpoint
    finally:
        stop(proc)


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, timeout: float) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxies
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), opener.open(f"{url}/moto-api/", timeout=2) as answer:
            if answer.status == 200:
                return True
        time.sleep(0.05)
    return False


def _tail(log: IO[bytes], size: int = 4000) -> str:
    log.seek(0)
    return log.read()[-size:].decode("utf-8", "replace")
