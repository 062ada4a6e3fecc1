"""A small IMDSv2 stand-in on 127.0.0.1 for the interruption watcher's tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import pytest

from s3q.imds import ASG_PATH, SPOT_PATH, TOKEN_PATH
from tests.quietserver import QuietServer


@dataclass
class FakeIMDS:
    """IMDSv2: PUT a token (with a TTL header), then GETs with that token; expired or
    unknown tokens get 401. ``spot`` / ``asg`` are the bodies (None = 404)."""

    url: str = ""
    spot: str | None = None
    asg: str | None = None
    refuse_tokens: bool = False
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (monotonic)
    log: list[tuple[str, str, str | None, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str, path: str | None = None, status: int | None = None) -> int:
        with self.lock:
            return sum(1 for m, p, _, s in self.log
                       if m == method and path in (None, p) and status in (None, s))

    def revoke_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()


def _handler(imds: FakeIMDS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: str = "", header: str | None = None) -> None:
            with imds.lock:
                imds.log.append((self.command, self.path, header, status))
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            if self.path != TOKEN_PATH or ttl is None or not ttl.isdigit():
                self._send(400, header=ttl)
                return
            if imds.refuse_tokens:
                self._send(403, header=ttl)
                return
            with imds.lock:
                token = f"token-{len(imds.tokens)}-{time.monotonic()}"
                imds.tokens[token] = time.monotonic() + int(ttl)
            self._send(200, token, header=ttl)

        def do_GET(self) -> None:
            token = self.headers.get("X-aws-ec2-metadata-token")
            with imds.lock:
                valid = token is not None and imds.tokens.get(token, 0) > time.monotonic()
            if not valid:
                self._send(401, header=token)
                return
            body = {SPOT_PATH: imds.spot, ASG_PATH: imds.asg}.get(self.path)
            if body is None:
                self._send(404, header=token)
            else:
                self._send(200, body, header=token)

    return Handler


@pytest.fixture
def imds() -> Iterator[FakeIMDS]:
    fake = FakeIMDS()
    server = QuietServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
