"""Errors the queue raises (store errors are in :mod:`s3q.store`)."""

from __future__ import annotations

__all__ = ["ConfigError", "JobStateError", "LeaseLost", "S3QError"]


class S3QError(Exception):
    """Base of s3q's queue-level errors."""


class LeaseLost(S3QError):
    """This worker no longer holds the request: its lease was taken over (it was fenced),
    or it could not be renewed in time. The request is someone else's now; stop working
    on it and do not touch its state."""


class JobStateError(S3QError):
    """A job was completed, failed or released twice."""


class ConfigError(S3QError, ValueError):
    """A setting has an unusable value; the message names the setting."""

