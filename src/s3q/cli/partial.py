"""Operator commands that act on many requests (``requeue``, ``recover``, ``purge``) when
store errors keep them from doing all of it.

One request's own store error (access denied on its key) is recorded and the command goes
on with the others; an unavailable store (:class:`~s3q.store.StoreUnavailable`:
unreachable, or failing after the backend's retries) stops it, as every other request
would fail the same way, and so does a store refusing every request whatever its key
(:class:`~s3q.store.StoreRefused`). Either way the command first prints its normal summary of what
it did, then, on stderr, each request not done with its error and each not attempted, and
ends with one ``s3q: error:`` line that counts them and says how safe a re-run is: exit 3.

The loop over the requests and what it did not do are :mod:`s3q.bulk`'s.
"""

from __future__ import annotations

import click

from s3q.bulk import Undone
from s3q.cli.errors import EXIT_STORE, Failure


def report(undone: Undone, *, command: str, verb: str, done: int, rerun: str) -> None:
    """After the command's summary: the requests not done and not attempted on stderr,
    then stop with exit 3 (nothing when all was done). ``verb``: "requeued"; ``rerun``:
    why running the command again is safe."""
    if not undone:
        return
    for line in undone.lines(verb):
        click.echo(line, err=True)
    raise Failure(f"{command}: {undone.summary(verb, done)}; re-running is safe: {rerun}",
                  EXIT_STORE)
