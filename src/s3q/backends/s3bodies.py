"""The S3 backend's bodies: what it sends (:func:`rewindable`: bytes, a file at its start,
or a spooled copy of a stream, so that botocore can send it again) and what it reads
(:func:`buffered`: a GetObject body as a buffered binary stream whose read errors are
s3q's). Only :mod:`s3q.backends.s3` uses it."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from botocore.exceptions import BotoCoreError

from s3q.backends.s3wire import TRANSPORT
from s3q.store import Body, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from botocore.response import StreamingBody

__all__ = ["READ_BUFFER", "SPOOL_IN_MEMORY", "buffered", "rewindable"]

#: Non-seekable bodies are spooled to a temporary file, in memory up to this size.
SPOOL_IN_MEMORY = 8 * 1024**2
#: Read size of the buffered stream :meth:`S3Store.open` returns.
READ_BUFFER = 1024**2


class _S3Stream(io.RawIOBase):
    """A GetObject body as a raw binary stream, translating read errors."""

    def __init__(self, body: StreamingBody, where: str) -> None:
        super().__init__()
        self._body = body
        self._where = where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except TRANSPORT as e:
            raise StoreUnavailable(f"S3 read of {self._where} failed: {e}") from e
        except BotoCoreError as e:
            raise StoreError(f"S3 read of {self._where} failed: {e}") from e
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def buffered(body: StreamingBody, where: str) -> BinaryIO:
    """A GetObject ``body`` (of the object at ``where``) as a buffered binary stream."""
    return cast(BinaryIO, io.BufferedReader(_S3Stream(body, where), buffer_size=READ_BUFFER))


@contextmanager
def rewindable(body: Body) -> Iterator[tuple[bytes | BinaryIO, int]]:
    """``body`` as something botocore can send, rewind for a retry and measure: bytes, a
    seekable file at position 0, or else a spooled copy of the rest of the stream."""
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        yield data, len(data)
        return
    if body.seekable() and body.tell() == 0:
        size = body.seek(0, io.SEEK_END)
        body.seek(0)
        yield body, size
        return
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        shutil.copyfileobj(body, spool, READ_BUFFER)
        size = spool.tell()
        spool.seek(0)
        yield cast(BinaryIO, spool), size
