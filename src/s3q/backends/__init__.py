"""Store backends and the URL → store factory.

``s3://bucket/prefix`` → :class:`s3q.backends.s3.S3Store`
``file:///path`` or a bare path → :class:`s3q.backends.local.LocalStore`
``memory://name`` → :class:`s3q.backends.memory.MemoryStore` (tests, demos; one process)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from s3q.store import Store

__all__ = ["S3Options", "check_queue_url", "open_store"]

#: A URL that lost its colon (``s3//bucket/app``): never a path anyone means.
_NO_COLON = re.compile(r"(?i)(?:s3[an]?|file|memory|https?)//")


@dataclass(frozen=True, slots=True)
class S3Options:
    """Connection settings for the S3 backend (ignored by the others)."""

    #: S3-compatible endpoint (MinIO, moto, …); None = AWS (or ``AWS_ENDPOINT_URL``).
    endpoint_url: str | None = None
    region: str | None = None
    #: botocore retry mode: "standard" or "adaptive".
    retry_mode: str = "standard"
    #: botocore total attempts per call (first try included).
    max_attempts: int = 5
    #: Size of the HTTP connection pool; size it to the worker's concurrency (+ a few for
    #: lease renewal).
    max_pool_connections: int = 16
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    #: Explicit credentials; None = the standard AWS chain (instance profile on EC2).
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


def check_queue_url(url: str) -> None:
    """Raise ValueError for an ``s3://`` or ``file://`` URL with a ``#`` or ``?``: urlsplit
    would drop what follows (``S3Q_QUEUE=s3://b/app # prod``, a comment systemd keeps) and
    leave another prefix, whose empty wait/ the workers would poll."""
    if urlsplit(url).scheme.lower() in ("s3", "file") and ("#" in url or "?" in url):
        raise ValueError(f"queue URL {url!r}: '#' or '?' would end it there, the rest "
                         "ignored (a comment after the value in an env file?)")


def open_store(url: str, s3: S3Options | None = None, *, create: bool = True) -> Store:
    """Open the store a queue URL names. Raises ``ValueError`` on an unusable URL. With
    ``create=False`` a local directory that holds no queue is not created: ``NotFound``
    (S3 buckets and memory stores are never created by opening them)."""
    if not url:
        raise ValueError("queue URL is empty")
    check_queue_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        from s3q.backends.s3 import S3Store

        if not parts.netloc:
            raise ValueError(f"queue URL {url!r}: no bucket (expected s3://bucket/prefix)")
        return S3Store(parts.netloc, parts.path.strip("/"), s3 or S3Options())
    if scheme == "memory":
        from s3q.backends.memory import MemoryStore

        return MemoryStore(parts.netloc + parts.path)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"queue URL {url!r}: file URLs must be file:///absolute/path")
        from s3q.backends.local import LocalStore

        return LocalStore(Path(unquote(parts.path)), create=create)
    if scheme == "" and _NO_COLON.match(url):
        raise ValueError(f"queue URL {url!r}: not a path but a URL without its ':' "
                         "(expected s3://bucket/prefix, file:///path or a path)")
    if scheme == "" or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):
        from s3q.backends.local import LocalStore

        return LocalStore(Path(url), create=create)
    raise ValueError(
        f"queue URL {url!r}: unsupported scheme {scheme!r} (use s3://, file:// or a path)"
    )
