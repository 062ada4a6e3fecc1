"""Small helpers shared by the in-process backends (``memory`` and ``local``).

They give those backends the exact argument checking of the S3 backend, so that code which
works on one backend does not break on another: the same keys, prefixes and page sizes are
accepted everywhere.
"""

from __future__ import annotations

import hashlib

from s3q.store import InvalidKey, validate_key

__all__ = ["MAX_PAGE", "check_conditions", "check_key", "check_limit", "check_prefix", "etag_of"]

#: S3 returns at most 1000 keys per ListObjectsV2 page; every backend enforces the same cap.
MAX_PAGE = 1000


def check_key(key: str) -> str:
    """:func:`~s3q.store.validate_key`, also turning an unencodable key (lone surrogates,
    which cannot be UTF-8) into :class:`InvalidKey` instead of a ``UnicodeEncodeError``."""
    try:
        return validate_key(key)
    except UnicodeError as e:
        raise InvalidKey(f"invalid key {key!r}: not encodable as UTF-8") from e


def check_prefix(prefix: str) -> str:
    """Validate a list prefix or ``start_after`` value. Unlike keys they may be empty or end
    with ``/``; control characters, ``..`` segments, absolute paths, backslashes and text
    that is not valid UTF-8 are refused (as the S3 backend does)."""
    if not isinstance(prefix, str) or any(ord(c) < 0x20 or c == "\x7f" for c in prefix):
        raise InvalidKey(f"invalid prefix {prefix!r}: control characters not allowed")
    if prefix.startswith("/") or "\\" in prefix or ".." in prefix.split("/"):
        raise InvalidKey(f"invalid prefix {prefix!r}: must be relative, without '..'")
    try:
        prefix.encode("utf-8")
    except UnicodeError as e:
        raise InvalidKey(f"invalid prefix {prefix!r}: not encodable as UTF-8") from e
    return prefix


def check_limit(limit: int) -> int:
    """A page size must be in ``1..1000`` (S3's own cap), else ``ValueError``."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"list_page: limit must be in 1..{MAX_PAGE}, not {limit}")
    return limit


def check_conditions(if_none_match: bool, if_match: str | None) -> None:
    """``put`` takes at most one condition, else ``ValueError``."""
    if if_none_match and if_match is not None:
        raise ValueError("put: use at most one of if_none_match and if_match")


def etag_of(data: bytes) -> str:
    """The S3 single-part ETag of ``data``: its quoted hex MD5."""
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
