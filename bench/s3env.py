"""The S3 side of the suite: moto's server in a separate process (tests/s3server.py), one
fresh bucket per measurement (moto lists by scanning the whole bucket, so runs must not
inherit each other's objects), and moto's request recorder to count the requests of
clients that cannot be hooked (the AWS CLI in a subprocess, buquet's Rust SDK)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

from s3q.backends.s3 import S3Store
from tests.s3server import (
    S3Endpoint,
    endpoint_from_env,
    moto_endpoint,
    start_moto_server,
    stop,
)

__all__ = ["RecordedCounts", "S3Env", "classify_request"]


@dataclass
class RecordedCounts:
    """Requests moto's recorder saw, by S3 operation (and by bucket)."""

    counts: Counter[str] = field(default_factory=Counter)
    by_bucket: dict[str, Counter[str]] = field(default_factory=dict)


class S3Env:
    """moto's S3 server for the whole run (or the endpoint ``S3Q_TEST_S3_ENDPOINT`` names:
    then runs use fresh prefixes in that bucket, and recorder counts are unavailable)."""

    def __init__(self, recording: Path) -> None:
        self.recording = recording
        self._proc: subprocess.Popen[bytes] | None = None
        configured = endpoint_from_env()
        if configured is not None:
            self.base = configured
            self.url = configured.endpoint_url or "aws"
            return
        # the recorder is off until /moto-api/recorder/start-recording; it appends every
        # request (method, URL, headers, body) to this file, read back by record()
        os.environ["MOTO_RECORDER_FILEPATH"] = str(recording)
        self._proc, self.url = start_moto_server()
        self.base = moto_endpoint(self.url)

    @property
    def is_moto(self) -> bool:
        return self._proc is not None

    @property
    def server_pid(self) -> int | None:
        """The process id of moto's server (None for another endpoint)."""
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        if self._proc is not None:
            stop(self._proc)
            self._proc = None

    def fresh(self, tag: str) -> tuple[S3Endpoint, str]:
        """A new bucket (moto) or a new prefix (another endpoint) for one measurement:
        returns the endpoint and the queue prefix inside its bucket."""
        if not self.is_moto:
            return self.base, f"s3q-bench/{tag}-{uuid4().hex[:10]}"
        bucket = f"bench-{tag}-{uuid4().hex[:8]}".lower()[:63]
        endpoint = replace(self.base, bucket=bucket)
        endpoint.client().create_bucket(Bucket=bucket)
        return endpoint, "q"

    def store(self, endpoint: S3Endpoint, prefix: str, **overrides: Any) -> S3Store:
        """An S3Store with s3q's default client settings (S3Options defaults)."""
        return S3Store(endpoint.bucket, prefix, endpoint.options(**overrides))

    def _moto_api(self, action: str) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        req = urllib.request.Request(f"{self.url}/moto-api/recorder/{action}", method="POST",
                                     data=b"")
        with opener.open(req, timeout=30) as answer:
            answer.read()

    @contextlib.contextmanager
    def record(self) -> Iterator[RecordedCounts]:
        """Count every request the server receives inside the block (moto's recorder).
        The counts are filled in when the block exits."""
        result = RecordedCounts()
        if not self.is_moto:
            yield result
            return
        self.recording.write_bytes(b"")
        self._moto_api("start-recording")
        try:
            yield result
        finally:
            self._moto_api("stop-recording")
            with self.recording.open("rb") as fh:
                for line in fh:
                    with contextlib.suppress(ValueError, KeyError):
                        entry = json.loads(line)
                        bucket, op = classify_request(entry["method"], entry["url"],
                                                      entry.get("headers") or {})
                        result.counts[op] += 1
                        result.by_bucket.setdefault(bucket, Counter())[op] += 1
            self.recording.write_bytes(b"")


def classify_request(method: str, url: str, headers: dict[str, str]) -> tuple[str, str]:
    """(bucket, S3 operation name) of one path-style request as moto's recorder saw it."""
    parts = urlsplit(url)
    path = parts.path.lstrip("/")
    bucket, _, key = path.partition("/")
    query = parse_qs(parts.query, keep_blank_values=True)
    lower = {k.lower(): v for k, v in headers.items()}
    method = method.upper()
    if not key:
        if method == "GET":
            if "versioning" in query:
                return bucket, "GetBucketVersioning"
            if "versions" in query:
                return bucket, "ListObjectVersions"
            if query.get("list-type") == ["2"]:
                return bucket, "ListObjectsV2"
            if "location" in query:
                return bucket, "GetBucketLocation"
            return bucket, "ListObjects"
        if method == "PUT":
            return bucket, "PutBucketVersioning" if "versioning" in query else "CreateBucket"
        if method == "HEAD":
            return bucket, "HeadBucket"
        if method == "POST" and "delete" in query:
            return bucket, "DeleteObjects"
        return bucket, f"{method} bucket"
    if method == "PUT":
        if "x-amz-copy-source" in lower:
            return bucket, "UploadPartCopy" if "partNumber" in query else "CopyObject"
        return bucket, "UploadPart" if "partNumber" in query else "PutObject"
    if method == "GET":
        return bucket, "GetObject"
    if method == "HEAD":
        return bucket, "HeadObject"
    if method == "DELETE":
        return bucket, "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "POST":
        if "uploads" in query:
            return bucket, "CreateMultipartUpload"
        if "uploadId" in query:
            return bucket, "CompleteMultipartUpload"
        return bucket, "PostObject"
    return bucket, f"{method} object"
