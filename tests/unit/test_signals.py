"""The worker's SIGTERM/SIGINT handler may run in the middle of anything the main thread
does, so it must take no lock and write nothing: it only records the request (issue 9)."""

from __future__ import annotations

import signal
import threading

from s3q import Queue
from s3q.backends.memory import MemoryStore
from s3q.cli.worker import stop_on_signals
from s3q.worker import Worker, WorkerOptions


def test_the_handler_returns_even_inside_the_locks_the_main_thread_holds() -> None:
    """Python runs a signal handler in the main thread between two bytecodes: for example
    right after Event.wait() re-took its lock, inside the worker's loop. A handler that
    then sets that Event (or logs through a lock the thread holds) never returns."""
    requests: list[str] = []
    worker = Worker(Queue(MemoryStore("signals")), lambda job: None,
                    WorkerOptions("w"), stop_requests=requests)
    with stop_on_signals(requests):
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)

        def interrupted_main_thread() -> None:
            with worker._stopping._cond:  # type: ignore[attr-defined]  # inside Event.wait()
                handler(signal.SIGTERM, None)
                handler(signal.SIGINT, None)

        thread = threading.Thread(target=interrupted_main_thread, daemon=True)
        thread.start()
        thread.join(5)
        assert not thread.is_alive(), "the signal handler blocked"
    assert requests == ["SIGTERM", "SIGINT"]
    worker._notice_signals()  # the worker's own loop acts on them, outside any lock
    assert worker._stopping.is_set() and worker._abort.is_set()
