"""Requests (and dollars) per job, side by side with the seed's copy-and-delete: now a
part of the suite. This entry point runs its ``seed`` and ``costs`` sections:

    .venv/bin/python -m bench.requests_per_job [--quick] [--out DIR]

which is ``python -m bench --only seed,costs``; see bench/__main__.py for the whole suite.
"""

from __future__ import annotations

import sys

from bench.__main__ import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "--only", "seed,costs"]))
