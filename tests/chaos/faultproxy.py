"""A fault-injecting HTTP proxy for the chaos tests, on loopback, between workers and moto.

For a configurable share of requests it answers 503 SlowDown or 500 InternalError without
forwarding, resets the connection before forwarding, resets it *after* forwarding (the store
applied the write but the client never hears so: the ambiguous case a retried conditional
write must survive), or adds latency. Everything else is forwarded unchanged.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("slowdown", "internal", "reset_before", "reset_after", "latency")

_ERROR = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
          "<Message>injected by the chaos proxy</Message></Error>")


class FaultProxy:
    """``FaultProxy(upstream, rate=0.08)``; ``.url`` to point clients at; ``.counts``."""

    def __init__(self, upstream: str, *, rate: float = 0.08, seed: int = 0,
                 latency: float = 0.3) -> None:
        target = urlsplit(upstream)
        self.host, self.port = target.hostname or "127.0.0.1", target.port or 80
        self.rate, self.latency = rate, latency
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        #: every request seen: (method, path with query, copy source or None)
        self.requests: list[tuple[str, str, str | None]] = []
        #: the body of each POST seen, by its index in ``requests`` (DeleteObjects names
        #: its keys there)
        self.posted: dict[int, bytes] = {}
        self.enabled = True
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _pick(self) -> str | None:
        with self.lock:
            self.counts["requests"] += 1
            if not self.enabled or self.rng.random() >= self.rate:
                return None
            fault = self.rng.choice(FAULTS)
            self.counts[fault] += 1
            return fault

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        with self.lock:
            if req.command == "POST":
                self.posted[len(self.requests)] = body
            self.requests.append((req.command, req.path, req.headers.get("x-amz-copy-source")))
        fault = self._pick()
        if fault in ("slowdown", "internal"):
            code, status = ("SlowDown", 503) if fault == "slowdown" else ("InternalError", 500)
            payload = _ERROR.format(code=code).encode()
            req.send_response_only(status)
            req.send_header("Date", req.date_time_string())
            req.send_header("Content-Type", "application/xml")
            req.send_header("Content-Length", str(len(payload)))
            req.end_headers()
            if req.command != "HEAD":
                req.wfile.write(payload)
            return
        if fault == "reset_before":
            _reset(req)
            return
        if fault == "latency":
            time.sleep(self.latency)
        upstream = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            headers = {k: v for k, v in req.headers.items()
                       if k.lower() not in ("connection", "proxy-connection", "keep-alive")}
            upstream.request(req.command, req.path, body=body, headers=headers)
            resp = upstream.getresponse()
            data = resp.read()
        finally:
            upstream.close()
        if fault == "reset_after":  # the store did it; the client will think it failed
            _reset(req)
            return
        req.send_response_only(resp.status, resp.reason)  # upstream's own Date goes through
        for key, value in resp.getheaders():
            # a HEAD's Content-Length is the object's size, not the (empty) body's
            if key.lower() not in ("connection", "transfer-encoding") and (
                    key.lower() != "content-length" or req.command == "HEAD"):
                req.send_header(key, value)
        if req.command != "HEAD":
            req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)


def _reset(req: BaseHTTPRequestHandler) -> None:
    """Close with RST (SO_LINGER 0): the client sees "connection reset by peer"."""
    sock = req.connection
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    req.close_connection = True
    sock.close()
