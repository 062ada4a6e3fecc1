"""Handlers for the chaos runs. ``record`` runs in the worker's threads (``--handler
tests.chaos.handlers:record``); ``exec_handler.py`` beside it is the program form.

Both log "start NAME PID" and "done NAME PID" lines to $S3Q_CHAOS_LOG, and obey the request
body: {"sleep": seconds, "crash": true, "hang": true}; a body that is not JSON fails.
"""

from __future__ import annotations

import json
import os
import time

from s3q.job import Job


def log(event: str, name: str) -> None:
    line = f"{event} {name.replace(' ', '%20')} {os.getpid()}\n".encode()
    fd = os.open(os.environ["S3Q_CHAOS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def act(name: str, body: bytes) -> bytes:
    log("start", name)
    request = json.loads(body)  # malformed → JSONDecodeError → the attempt fails
    if request.get("crash"):
        raise RuntimeError(f"request {name} asked to crash")
    if request.get("hang"):
        time.sleep(3600)
    time.sleep(float(request.get("sleep", 0)))
    log("done", name)
    return b"ok"


def record(job: Job) -> bytes:
    return act(job.name, job.read())
