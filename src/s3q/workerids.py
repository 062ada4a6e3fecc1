"""Worker ids: the default one (``<hostname>[/<EC2 instance id>]``), the ids s3q's own
commands act as (reserved: a worker may not take them), and what an id must be. Both
:func:`s3q.config.load_config` (the ``worker_id`` setting, refused at start) and the
:class:`~s3q.queue.Queue` methods a worker calls check ids with :func:`check_worker_id`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from s3q import imds
from s3q.errors import ConfigError

__all__ = ["RECOVER_ALL", "RESERVED_WORKER_IDS", "check_worker_id", "default_worker_id"]

#: The worker id of ``recover all``. A lease it holds was taken from its owner to be put
#: back uncounted: whoever takes it over (it died between t1 and the release) does not
#: count that attempt either.
RECOVER_ALL = "s3q-recover-all"

#: The ids s3q's own commands act as: a worker of one of them would be taken for them (an
#: attempt interrupted under RECOVER_ALL is not counted).
RESERVED_WORKER_IDS = frozenset({"s3q-recover", RECOVER_ALL, "s3q-requeue", "s3q-dashboard"})

#: The longest worker id (it is part of lease records and registry keys).
MAX_LENGTH = 200


def check_worker_id(worker_id: str) -> None:
    """Raise ConfigError (``worker_id: ...``) unless ``worker_id`` is a non-empty single
    line of at most MAX_LENGTH characters that is not one of RESERVED_WORKER_IDS."""
    if not worker_id or any(c in worker_id for c in "\x00\n\r") or len(worker_id) > MAX_LENGTH:
        raise ConfigError(f"worker_id: must be a non-empty single-line string of at most "
                          f"{MAX_LENGTH} characters (got {worker_id!r})")
    if worker_id in RESERVED_WORKER_IDS:
        raise ConfigError(f"worker_id: {worker_id!r} is the id s3q's own commands act as "
                          f"(reserved: {', '.join(sorted(RESERVED_WORKER_IDS))}, for recover, "
                          "requeue and the dashboard): give the worker another")


def default_worker_id(suffix: str | None = None, *, env: Mapping[str, str] | None = None,
                      hostname: str | None = None) -> str:
    """``<hostname>[/<EC2 instance id>][/<suffix>]``. The instance id comes from the DMI
    asset tag of a Nitro instance, else from IMDSv2 (``S3Q_IMDS_ENDPOINT``, default
    169.254.169.254; one 0.3 s try, up to four on an EC2 instance; asked once per process,
    failures ignored: :func:`s3q.imds.instance_id`); ``S3Q_IMDS=off`` skips it."""
    env = os.environ if env is None else env
    parts = [hostname or socket.gethostname()]
    if env.get("S3Q_IMDS", "").strip().lower() != "off":
        instance = imds.instance_id(env.get("S3Q_IMDS_ENDPOINT") or imds.DEFAULT_ENDPOINT)
        parts += [instance] if instance else []
    return "/".join(parts + ([suffix] if suffix else []))
