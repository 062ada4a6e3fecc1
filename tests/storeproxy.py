"""An S3 proxy on loopback, between clients and moto, that makes moto behave like a store
moto is not: one behaviour at a time, chosen by :class:`Behaviour` flags.

``opaque_etags``: every write gets a new random ETag, as S3 gives objects under SSE-KMS,
    SSE-C and in S3 Express directory buckets (moto gives the MD5 of the bytes). The proxy
    keeps, per key, the ETag moto has and the one it told clients, rewrites ETags in every
    response (headers, CopyObject and CompleteMultipartUpload results, listings), and
    translates the ETags clients send in conditions (``If-Match``, ``If-None-Match``,
    ``x-amz-copy-source-if-match``) back to moto's, so that conditions keep their meaning.
``ignore_delete_if_match``: DeleteObject ignores ``If-Match`` (MinIO, minio issue 21677).
``missing_delete_204``: a DeleteObject with ``If-Match`` of a missing key is answered 204, not
    404 NoSuchKey (radosgw 16).
``ignore_put_if_match``: PutObject ignores ``If-Match`` (reported of Garage).
``ignore_copy_conditions``: CopyObject ignores source and destination conditions
    (radosgw 16; moto ignores most of them already).
``ignore_complete_if_none_match``: CompleteMultipartUpload ignores ``If-None-Match: *``
    (forwarded without it): an existing key is overwritten (AWS before November 2024).
``blank_complete_etag``: CompleteMultipartUpload's result says ``<ETag></ETag>`` (radosgw 16;
    its HEAD of the object gives the ETag).
``forget_completed_uploads``: a CompleteMultipartUpload of an upload completed already is
    answered 404 NoSuchUpload, not forwarded (MinIO, minio issue 13318; AWS and moto answer
    a repeated completion as the first).
``canonical_metadata``: user metadata headers are answered in Go's canonical case
    (``X-Amz-Meta-S3q-Upload``, MinIO: minio issues 5594, 6471; AWS and moto answer them in
    lower case), which botocore keeps in the keys of ``Metadata`` (botocore issue 1963).
``conflicts``: this share of conditional writes is answered 409 ConditionalRequestConflict
    without being forwarded (AWS, for overlapping conditional writes).
``slow_downs``: the next N requests are answered 503 SlowDown without being forwarded
    (S3 throttling a prefix; botocore's adaptive retry mode then limits the client's rate).
``conflict_next``: (method, key suffix) pairs: the next conditional request of that method
    to a key ending so is answered 409 ConditionalRequestConflict, once each, not forwarded.
``applied_then_500``: (method, key suffix) pairs: the next conditional request of that method
    (or CompleteMultipartUpload, conditional or not) to a key ending so is forwarded (it
    takes effect) and then answered 500 InternalError, once each: an ambiguous outcome
    that botocore retries (a ``conflict_next`` of the same pair then answers that retry).
    ``after_applied(key)``, when set, runs between the forward and the 500 (straight on
    moto, not through the proxy): a producer or an operator acting in that window.
``deny``: these S3 operations (``PutObject``, ``CopyObject``, ``DeleteObject``, ...) are
    answered 403 AccessDenied without being forwarded, as IAM refuses an action.
``deny_keys``: (operation, key suffix) pairs: those operations on keys ending so are answered
    403 AccessDenied, not forwarded, every time (IAM refusing one key, or a bucket policy).
``down_keys``: (operation, key suffix) pairs: those operations on keys ending so are answered
    503 SlowDown, not forwarded, every time (what the client sees as a store gone away).
``delete_errors``: the first N keys of each DeleteObjects answer are turned into
    ``<Error>`` InternalError after they took effect (AWS may answer single keys so).
``size_limit``: S3's limits on one request, lowered to this many bytes (S3's are 5 GiB; 0:
    off; moto enforces neither): a CopyObject whose source is larger is answered 400
    InvalidRequest "The specified copy source is larger than the maximum allowable size for
    a copy source: N", a PutObject (one part) whose body is larger, 400 EntityTooLarge
    "Your proposed upload exceeds the maximum allowed size"; neither is forwarded. Multipart
    uploads (UploadPart, UploadPartCopy) pass.
``copy_source_if_match``: ``x-amz-copy-source-if-match`` is enforced on CopyObject and
    UploadPartCopy as S3 does (moto ignores it): a source whose ETag differs is answered 412
    PreconditionFailed, not forwarded.
``delete_conflicts``: the first N keys of each DeleteObjects request are answered ``<Error>``
    ConditionalRequestConflict inside its 200 *without* being applied (taken out of the
    request before it is forwarded): AWS answers so a conditional delete that overlapped
    another ("retry the request").
``latency``: seconds added to every request before it is forwarded (S3's round trips are
    20-60 ms where moto's are well under one): the benchmarks' model of a real network.
    A request that asks for ``100 Continue`` before sending its body gets it after as long
    again: the interim answer is a round trip of its own. (``counts["100-continue"]``
    counts such requests, with or without latency.)

``python -m tests.storeproxy UPSTREAM [--latency S] [--opaque-etags]`` runs one in a process
of its own (so that it does not share the GIL of what it measures) and prints its URL.

Only path-style addressing (``http://proxy/bucket/key``), as s3q uses with an endpoint URL.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree

from tests.quietserver import QuietServer

_CONFLICT = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>"
             "ConditionalRequestConflict</Code><Message>A conflicting conditional operation "
             "is currently in progress against this resource.</Message></Error>")
_SLOW_DOWN = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>"
              "<Message>Please reduce your request rate.</Message></Error>")
_INTERNAL = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code>"
             "<Message>We encountered an internal error. Please try again.</Message></Error>")
_DENIED = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>"
           "<Message>Access Denied</Message></Error>")
_PRECONDITION = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PreconditionFailed"
                 "</Code><Message>At least one of the pre-conditions you specified did not "
                 "hold</Message><Condition>x-amz-copy-source-If-Match</Condition></Error>")
_COPY_TOO_LARGE = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidRequest"
                   "</Code><Message>The specified copy source is larger than the maximum "
                   "allowable size for a copy source: {limit}</Message></Error>")
_ENTITY_TOO_LARGE = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>EntityTooLarge"
                     "</Code><Message>Your proposed upload exceeds the maximum allowed size"
                     "</Message><ProposedSize>{size}</ProposedSize><MaxSizeAllowed>{limit}"
                     "</MaxSizeAllowed></Error>")
_NO_SUCH_UPLOAD = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchUpload"
                   "</Code><Message>The specified upload does not exist. The upload ID may be "
                   "invalid, or the upload may have been aborted or completed.</Message>"
                   "</Error>")
_NO_MATCH = '"00000000000000000000000000000000"'  # an ETag no object has
_ETAG_XML = re.compile(rb"<ETag>(.*?)</ETag>")
_CONTENTS_XML = re.compile(rb"<Contents>(.*?)</Contents>", re.S)
_KEY_XML = re.compile(rb"<Key>(.*?)</Key>")


@dataclass
class Behaviour:
    opaque_etags: bool = False
    ignore_delete_if_match: bool = False
    missing_delete_204: bool = False
    ignore_put_if_match: bool = False
    ignore_copy_conditions: bool = False
    ignore_complete_if_none_match: bool = False
    forget_completed_uploads: bool = False
    canonical_metadata: bool = False
    blank_complete_etag: bool = False
    conflicts: float = 0.0
    deny: frozenset[str] = frozenset()
    #: (operation, key suffix): always answered 403 AccessDenied, not forwarded.
    deny_keys: frozenset[tuple[str, str]] = frozenset()
    #: (operation, key suffix): always answered 503 SlowDown, not forwarded.
    down_keys: frozenset[tuple[str, str]] = frozenset()
    latency: float = 0.0
    #: Seconds added to each UploadPartCopy (a part of a server-side copy), on top of
    #: ``latency``: a copy of tens of GiB takes minutes, longer than a lease lives.
    copy_latency: float = 0.0
    #: The first N keys of each DeleteObjects answer come back as InternalError, after they
    #: took effect upstream (AWS may answer single keys so inside a 200).
    delete_errors: int = 0
    #: The first N keys of each DeleteObjects request are answered ConditionalRequestConflict,
    #: not applied (not forwarded).
    delete_conflicts: int = 0
    #: The next N requests are answered 503 SlowDown, not forwarded.
    slow_downs: int = 0
    #: S3's limits on a CopyObject source and a PutObject body, lowered (0: off).
    size_limit: int = 0
    #: Enforce x-amz-copy-source-if-match on CopyObject and UploadPartCopy (as S3 does).
    copy_source_if_match: bool = False
    #: (method, key suffix): the next conditional such request is answered 409, once each.
    conflict_next: set[tuple[str, str]] = field(default_factory=set)
    #: (method, key suffix): the next conditional such request (or completion of a multipart
    #: upload) is applied, then answered 500 InternalError, once each.
    applied_then_500: set[tuple[str, str]] = field(default_factory=set)
    #: Runs (with the key) after an ``applied_then_500`` request took effect, before its 500.
    after_applied: Callable[[str], None] | None = None


class StoreProxy:
    """``StoreProxy(upstream, Behaviour(opaque_etags=True))``; point clients at ``.url``."""

    def __init__(self, upstream: str, behaviour: Behaviour, *, seed: int = 0) -> None:
        target = urlsplit(upstream)
        self.host, self.port = target.hostname or "127.0.0.1", target.port or 80
        self.behaviour = behaviour
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        #: when each request was received (time.monotonic()), its method and path
        self.arrivals: list[tuple[float, str, str]] = []
        #: (bucket, key) -> (moto's ETag, the ETag clients were told)
        self._etags: dict[tuple[str, str], tuple[str, str]] = {}
        #: the ids of the multipart uploads completed through the proxy
        self._completed: set[str] = set()
        self._lock = threading.Lock()  # one request at a time: the mapping stays exact
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY (urllib3 sets it on botocore's connections too): with Nagle's
            # algorithm, a segment written while another is unacknowledged waits for the
            # client's delayed ACK, 40 ms on Linux: more than the latency modelled
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            def handle_expect_100(self) -> bool:
                with proxy._lock:
                    proxy.counts["100-continue"] += 1
                # the interim answer crosses the network too: the client that waits for it
                # before sending its body (Expect: 100-continue) pays a round trip more
                if proxy.behaviour.latency:
                    time.sleep(proxy.behaviour.latency)
                return super().handle_expect_100()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any  # noqa: N815

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ one request
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.arrivals.append((time.monotonic(), req.command, req.path))
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        path = urlsplit(req.path)
        bucket, _, key = unquote(path.path).lstrip("/").partition("/")
        headers = {k: v for k, v in req.headers.items()
                   if k.lower() not in ("connection", "proxy-connection", "keep-alive")}
        copy_source = headers.get("x-amz-copy-source") or headers.get("X-Amz-Copy-Source")
        is_write = req.command in ("PUT", "POST", "DELETE")
        conditional = any(h.lower() in ("if-match", "if-none-match") for h in headers)
        if self.behaviour.latency:
            time.sleep(self.behaviour.latency)
        if copy_source and "partNumber=" in path.query and self.behaviour.copy_latency:
            time.sleep(self.behaviour.copy_latency)
        # one request at a time (exact counts and ETag mapping), except for the benchmarks'
        # latency model, whose requests overlap as S3's do (unless ETags are mapped)
        serial = self.behaviour.opaque_etags or not self.behaviour.latency
        with self._lock if serial else contextlib.nullcontext():
            self.counts["requests"] += 1
            if self.behaviour.slow_downs > 0:
                self.behaviour.slow_downs -= 1
                self.counts["slow down"] += 1
                self._reply(req, 503, {"Content-Type": "application/xml"},
                            _SLOW_DOWN.encode())
                return
            operation = _operation(req.command, key, path.query, copy_source)
            if any(operation == op and key.endswith(end) for op, end in self.behaviour.down_keys):
                self.counts["down"] += 1
                self._reply(req, 503, {"Content-Type": "application/xml"},
                            _SLOW_DOWN.encode())
                return
            if operation in self.behaviour.deny or any(
                    operation == op and key.endswith(end) for op, end in self.behaviour.deny_keys):
                self.counts["denied"] += 1
                self._reply(req, 403, {"Content-Type": "application/xml"}, _DENIED.encode())
                return
            failing = next((t for t in self.behaviour.applied_then_500
                            if t[0] == req.command and key.endswith(t[1])), None)
            completing = req.command == "POST" and "uploadId" in parse_qs(path.query)
            if failing is not None and (conditional or completing):
                self.behaviour.applied_then_500.discard(failing)
                self.counts["applied then 500"] += 1
                self._bend(req.command, headers, bucket, key, copy_source, query=path.query)
                status = self._forward(req.command, req.path, body, headers)[0]
                self._note_completed(req.command, path.query, status)
                if self.behaviour.after_applied is not None:
                    self.behaviour.after_applied(key)
                self._reply(req, 500, {"Content-Type": "application/xml"},
                            _INTERNAL.encode())
                return
            upload = parse_qs(path.query).get("uploadId", [""])[0]
            if (self.behaviour.forget_completed_uploads and req.command == "POST"
                    and upload in self._completed):
                self.counts["forgotten upload"] += 1
                self._reply(req, 404, {"Content-Type": "application/xml"},
                            _NO_SUCH_UPLOAD.encode())
                return
            aimed = next((t for t in self.behaviour.conflict_next
                          if t[0] == req.command and key.endswith(t[1])), None)
            if aimed is not None and conditional:
                self.behaviour.conflict_next.discard(aimed)
            if (is_write and conditional and (aimed is not None or (
                    self.behaviour.conflicts
                    and self.rng.random() < self.behaviour.conflicts))):
                self.counts["conflict"] += 1
                self._reply(req, 409, {"Content-Type": "application/xml"}, _CONFLICT.encode())
                return
            self._bend(req.command, headers, bucket, key, copy_source, query=path.query)
            conflicted: list[str] = []
            if (self.behaviour.delete_conflicts and req.command == "POST"
                    and "delete" in parse_qs(path.query, keep_blank_values=True)):
                body, conflicted = _take_out(body, self.behaviour.delete_conflicts)
                headers = {k: v for k, v in headers.items() if not k.lower().startswith(
                    ("content-md5", "x-amz-checksum-", "x-amz-sdk-checksum", "content-length"))}
                headers["Content-Length"] = str(len(body))
                self.counts["delete conflicts"] += len(conflicted)
            refused = self._refusal(req.command, path.query, headers, len(body), copy_source)
            if refused is not None:
                self.counts[refused[0]] += 1
                self._reply(req, refused[1], {"Content-Type": "application/xml"},
                            refused[2].encode())
                return
            status, reason, out_headers, data = self._forward(req.command, req.path, body,
                                                              headers)
            self._note_completed(req.command, path.query, status)
            if self.behaviour.canonical_metadata:
                out_headers = [(_canonical(k) if k.lower().startswith("x-amz-meta-") else k,
                                v) for k, v in out_headers]
            if (self.behaviour.missing_delete_204 and req.command == "DELETE"
                    and status == 404 and any(h.lower() == "if-match" for h in headers)):
                self.counts["404 as 204"] += 1
                status, reason, data = 204, "No Content", b""
                out_headers = [(k, v) for k, v in out_headers
                               if k.lower() in ("date", "x-amz-request-id")]
            if (self.behaviour.delete_errors and req.command == "POST" and status == 200
                    and "delete" in parse_qs(path.query, keep_blank_values=True)):
                self.counts["delete errors"] += 1
                data = _internal_errors(data, self.behaviour.delete_errors)
            if conflicted and status == 200:
                data = _with_errors(data, conflicted, "ConditionalRequestConflict",
                                    "A conflicting conditional operation is currently in "
                                    "progress against this resource. Please try again.")
            if self.behaviour.opaque_etags:
                out_headers, data = self._opaque(req.command, path.query, bucket, key,
                                                 status=status, headers=out_headers,
                                                 data=data)
            if (self.behaviour.blank_complete_etag and req.command == "POST" and status == 200
                    and "uploadId" in parse_qs(path.query)):
                self.counts["blank etag"] += 1
                data = _ETAG_XML.sub(b"<ETag></ETag>", data)
        self._reply(req, status, out_headers, data, reason)

    def _note_completed(self, method: str, query: str, status: int) -> None:
        """Remember an upload whose CompleteMultipartUpload was applied (moto answers 200)."""
        upload = parse_qs(query).get("uploadId", [""])[0]
        if method == "POST" and upload and status == 200:
            self._completed.add(upload)

    def _bend(self, method: str, headers: dict[str, str], bucket: str, key: str,
              copy_source: str | None, *, query: str) -> None:
        """Drop the conditions this store ignores; translate the ETags clients send."""
        b = self.behaviour

        def drop(*names: str) -> None:
            for h in [h for h in headers if h.lower() in names]:
                self.counts[f"ignored {h.lower()}"] += 1
                del headers[h]

        if method == "DELETE" and b.ignore_delete_if_match:
            drop("if-match")
        if method == "PUT" and copy_source is None and b.ignore_put_if_match:
            drop("if-match")
        if method == "PUT" and copy_source is not None and b.ignore_copy_conditions:
            drop("x-amz-copy-source-if-match", "if-none-match", "if-match")
        if method == "POST" and "uploadId" in parse_qs(query) \
                and b.ignore_complete_if_none_match:
            drop("if-none-match")
        if not b.opaque_etags:
            return
        for h in list(headers):
            low = h.lower()
            if low in ("if-match", "if-none-match") and headers[h] != "*":
                headers[h] = self._to_upstream(bucket, key, headers[h])
            elif low == "x-amz-copy-source-if-match" and copy_source:
                src_bucket, _, src_key = unquote(copy_source.split("?")[0]).lstrip("/") \
                    .partition("/")
                headers[h] = self._to_upstream(src_bucket, src_key, headers[h])

    def _refusal(self, method: str, query: str, headers: dict[str, str], size: int,
                 copy_source: str | None) -> tuple[str, int, str] | None:
        """S3's answer to a request moto would accept: a single request over the size limit,
        a copy whose source condition does not hold (``size_limit``,
        ``copy_source_if_match``). Returns (what to count, status, body) or None."""
        b = self.behaviour
        if method != "PUT" or not (b.size_limit or b.copy_source_if_match):
            return None
        whole = "partNumber" not in parse_qs(query)
        if copy_source is None:
            if b.size_limit and whole and size > b.size_limit:
                return ("entity too large", 400, _ENTITY_TOO_LARGE.format(
                    size=size, limit=b.size_limit))
            return None
        wanted = next((v for h, v in headers.items()
                       if h.lower() == "x-amz-copy-source-if-match"), None)
        if not ((b.copy_source_if_match and wanted is not None) or (b.size_limit and whole)):
            return None
        auth = next((v for h, v in headers.items() if h.lower() == "authorization"), "")
        found = self._head_upstream(copy_source, auth)
        if found is None:
            return None  # moto answers (404)
        etag, length = found
        if b.copy_source_if_match and wanted is not None and (
                wanted.strip('"') != etag.strip('"')):
            return ("copy source changed", 412, _PRECONDITION)
        if b.size_limit and whole and length > b.size_limit:
            return ("copy source too large", 400, _COPY_TOO_LARGE.format(limit=b.size_limit))
        return None

    def _head_upstream(self, copy_source: str, auth: str) -> tuple[str, int] | None:
        """The upstream ETag and size of a copy source (``bucket/key``, URL-encoded), asked
        with the client's credentials (moto reads the account from them; it checks no
        signature)."""
        status, _, headers, _ = self._forward(
            "HEAD", "/" + copy_source.partition("?")[0].lstrip("/"), b"",
            {"Authorization": auth} if auth else {})
        if status != 200:
            return None
        found = {name.lower(): value for name, value in headers}
        return found.get("etag", ""), int(found.get("content-length", "0"))

    def _to_upstream(self, bucket: str, key: str, etag: str) -> str:
        known = self._etags.get((bucket, key))
        return known[0] if known is not None and known[1] == etag else _NO_MATCH

    def _opaque(self, method: str, query: str, bucket: str, key: str, *, status: int,
                headers: list[tuple[str, str]], data: bytes,
                ) -> tuple[list[tuple[str, str]], bytes]:
        """Rewrite moto's ETags: a new one for each write, the one told before for reads."""
        if method == "DELETE" and status < 300 and key:
            self._etags.pop((bucket, key), None)
            return headers, data
        if not key:  # a listing: each <Contents> has its own key and ETag
            if b"<ListBucketResult" in data:
                data = _CONTENTS_XML.sub(lambda m: self._opaque_contents(bucket, m), data)
            return headers, data
        write = status < 300 and (
            (method == "PUT" and "partNumber" not in query)
            or (method == "POST" and "uploadId" in query))
        rewritten = [(name, self._told(bucket, key, value, fresh=write)
                      if name.lower() == "etag" else value) for name, value in headers]
        if write:
            data = _ETAG_XML.sub(lambda m: b"<ETag>" + self._told(
                bucket, key, _xml_text(m.group(1)), fresh=True).encode()
                .replace(b'"', b"&quot;") + b"</ETag>", data)
        return rewritten, data

    def _opaque_contents(self, bucket: str, match: re.Match[bytes]) -> bytes:
        block = match.group(1)
        found = _KEY_XML.search(block)
        if found is None:
            return match.group(0)
        key = _xml_text(found.group(1))
        block = _ETAG_XML.sub(lambda m: b"<ETag>" + self._told(
            bucket, key, _xml_text(m.group(1))).encode().replace(b'"', b"&quot;")
            + b"</ETag>", block)
        return b"<Contents>" + block + b"</Contents>"

    def _told(self, bucket: str, key: str, upstream: str, *, fresh: bool = False) -> str:
        """The ETag clients see for moto's ``upstream`` ETag of (bucket, key): a new one for
        a write; the same one as before for a read; a new one for an object written past
        the proxy."""
        known = self._etags.get((bucket, key))
        if fresh or known is None or known[0] != upstream:
            known = (upstream, f'"{uuid.uuid4().hex}"')
            self._etags[(bucket, key)] = known
            self.counts["etags issued"] += 1
        return known[1]

    # ------------------------------------------------------------------ plumbing
    def _forward(self, method: str, path: str, body: bytes, headers: dict[str, str],
                 ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        upstream = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            upstream.request(method, path, body=body, headers=headers)
            resp = upstream.getresponse()
            return resp.status, resp.reason, resp.getheaders(), resp.read()
        finally:
            upstream.close()

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, status: int,
               headers: dict[str, str] | list[tuple[str, str]], data: bytes,
               reason: str | None = None) -> None:
        req.send_response_only(status, reason)
        items = headers.items() if isinstance(headers, dict) else headers
        names = {k.lower() for k, _ in items}
        for name, value in items:
            # a HEAD's Content-Length is the object's size, not the (empty) body's
            if name.lower() not in ("connection", "transfer-encoding") and (
                    name.lower() != "content-length" or req.command == "HEAD"):
                req.send_header(name, value)
        if "date" not in names:
            req.send_header("Date", req.date_time_string())
        if req.command != "HEAD":
            req.send_header("Content-Length", str(len(data)))
        # headers and body in one write (send_header buffers; end_headers would send them
        # apart from the body); a client may hang up first (a GET it closes unread)
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            req.wfile.write(b"".join(req._headers_buffer)  # type: ignore[attr-defined]
                            + b"\r\n" + (data if req.command != "HEAD" else b""))
        req._headers_buffer = []  # type: ignore[attr-defined]


def _internal_errors(data: bytes, n: int) -> bytes:
    """A DeleteObjects answer whose first ``n`` <Deleted> keys are <Error> InternalError."""
    root = ElementTree.fromstring(data)
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if ns:
        ElementTree.register_namespace("", ns[1:-1])
    for deleted in root.findall(f"{ns}Deleted")[:n]:
        key = deleted.findtext(f"{ns}Key")
        root.remove(deleted)
        error = ElementTree.SubElement(root, f"{ns}Error")
        for tag, text in (("Key", key), ("Code", "InternalError"),
                          ("Message", "We encountered an internal error. Please try again.")):
            ElementTree.SubElement(error, f"{ns}{tag}").text = text
    answer: bytes = ElementTree.tostring(root, encoding="UTF-8", xml_declaration=True)
    return answer


def _take_out(body: bytes, n: int) -> tuple[bytes, list[str]]:
    """A DeleteObjects request body without its first ``n`` objects (one is kept: S3 refuses
    an empty request), and their keys."""
    root = ElementTree.fromstring(body)
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if ns:
        ElementTree.register_namespace("", ns[1:-1])
    objects = root.findall(f"{ns}Object")
    taken = objects[:min(n, len(objects) - 1)]
    for obj in taken:
        root.remove(obj)
    rest: bytes = ElementTree.tostring(root, encoding="UTF-8", xml_declaration=True)
    return rest, [obj.findtext(f"{ns}Key") or "" for obj in taken]


def _with_errors(data: bytes, keys: list[str], code: str, message: str) -> bytes:
    """A DeleteObjects answer with an ``<Error>`` ``code`` for each of ``keys`` added."""
    root = ElementTree.fromstring(data)
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if ns:
        ElementTree.register_namespace("", ns[1:-1])
    for key in keys:
        error = ElementTree.SubElement(root, f"{ns}Error")
        for tag, text in (("Key", key), ("Code", code), ("Message", message)):
            ElementTree.SubElement(error, f"{ns}{tag}").text = text
    answer: bytes = ElementTree.tostring(root, encoding="UTF-8", xml_declaration=True)
    return answer


def _operation(method: str, key: str, query: str, copy_source: str | None) -> str:
    """The S3 operation of a path-style request (the ones s3q sends)."""
    if not key:
        return {"GET": "GetBucketVersioning" if "versioning" in query else "ListObjectsV2",
                "HEAD": "HeadBucket"}.get(method, method)
    if method == "PUT":
        return "CopyObject" if copy_source else "PutObject"
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
        method, method)


def _canonical(header: str) -> str:
    """A header name as Go's net/http writes it (``X-Amz-Meta-S3q-Upload``)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in header.split("-"))


def _xml_text(raw: bytes) -> str:
    return (raw.decode().replace("&quot;", '"').replace("&#34;", '"').replace("&amp;", "&")
            .replace("&lt;", "<").replace("&gt;", ">"))


def main(argv: list[str] | None = None) -> None:
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("upstream")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--opaque-etags", action="store_true")
    args = parser.parse_args(argv)
    proxy = StoreProxy(args.upstream, Behaviour(latency=args.latency,
                                                opaque_etags=args.opaque_etags))
    print(proxy.url, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = os.getppid()
    try:
        while os.getppid() == parent and proxy.thread.is_alive():  # none left orphaned
            proxy.thread.join(1.0)
    finally:
        proxy.close()


if __name__ == "__main__":
    main()
