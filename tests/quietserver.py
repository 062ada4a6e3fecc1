"""The tests' in-process HTTP servers (fake IMDS, SSM, the store proxy): a
:class:`~http.server.ThreadingHTTPServer` that says nothing when a client gave up first.

A handler that answers late (a slow IMDS, a latency model) writes to a socket its client
closed; socketserver then prints the traceback to ``sys.stderr`` between two lines of
dashes, from the handler's thread, at whatever moment that is: during a later test, whose
captured stderr (click's CliRunner replaces ``sys.stderr``) it corrupts. Other errors are
still printed."""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any

__all__ = ["QuietServer"]


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # the client went away first
            return
        super().handle_error(request, client_address)
