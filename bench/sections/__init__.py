"""The measurements, one function per report section. Each returns a :class:`Section`:
its data (for the JSON report) and its markdown. Figures are logged through the
:class:`~bench.common.Context` as they are measured (printed with the command and the
environment).

Submodules, one per concept:

- ``_shared``: :class:`Section`, :class:`Shared`, PROTOCOL.md §5's request mixes, formatting
  and the helpers for ``python -m bench.child`` processes (used by several sections);
- ``rates``: ``throughput`` and ``ceiling_section`` (the store's own rates);
- ``comparisons``: ``seed_section`` (the seed's copy + delete) and ``peers_section``;
- ``speed``: ``speed_section`` (s3q vs the seed's copy + delete, 4 and 16 threads, plain
  and behind 25 ms of latency: issue 12's goals);
- ``costs``: ``costs_section`` (requests and $ per job, idle cost);
- ``latency``: ``latency_section``;
- ``events``: ``events_section`` (waking on S3 events vs polling: latency, idle fleets);
- ``recovery``: ``recovery_section``;
- ``scale``: ``scale_section``;
- ``status``: ``status_section`` (``s3q status`` vs ``--check`` as finish/ grows).
"""

from __future__ import annotations

from bench.sections._shared import (
    PROTOCOL_DELETE_MIX,
    PROTOCOL_MIX,
    PROTOCOL_RETRY_MIX,
    Section,
    Shared,
)
from bench.sections.comparisons import peers_section, seed_section
from bench.sections.costs import costs_section
from bench.sections.events import events_section
from bench.sections.latency import latency_section
from bench.sections.rates import ceiling_section, throughput
from bench.sections.recovery import recovery_section
from bench.sections.scale import scale_section
from bench.sections.speed import speed_section
from bench.sections.status import status_section

__all__ = [
    "PROTOCOL_DELETE_MIX",
    "PROTOCOL_MIX",
    "PROTOCOL_RETRY_MIX",
    "Section",
    "Shared",
    "ceiling_section",
    "costs_section",
    "events_section",
    "latency_section",
    "peers_section",
    "recovery_section",
    "scale_section",
    "seed_section",
    "speed_section",
    "status_section",
    "throughput",
]
