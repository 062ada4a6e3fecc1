"""The benchmark suite (not timed tests): one command writes a report.

    .venv/bin/python -m bench [--quick] [--out bench/results/<timestamp>] [--only a,b]
                              [--rounds K]

Sections: throughput (+ the store's ceiling), seed (the seed's copy+delete with boto3 and
with the AWS CLI, side by side), peers (other S3 queues, in bench/.peers-venv), costs
(requests and $ per job, idle cost), latency, events (waking on S3 events vs polling),
recovery, scale. Writes report.md,
results.json and PNG plots into the output folder (bench/results/ is git-ignored). Needs the
``bench`` extra for plots: ``.venv/bin/pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import plots, report
from bench.common import BENCH, Context, Env, command_line, isolate_from_aws_config
from bench.s3env import S3Env
from bench.sections import (
    Section,
    Shared,
    ceiling_section,
    costs_section,
    events_section,
    latency_section,
    peers_section,
    recovery_section,
    scale_section,
    seed_section,
    speed_section,
    status_section,
    throughput,
)

SECTIONS = ("throughput", "ceiling", "seed", "speed", "peers", "costs", "latency", "events",
            "recovery",            "scale", "status")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="300 requests per run and fewer variants (< 3 min)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default bench/results/<timestamp>)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}")
    parser.add_argument("--s3-backlogs", default="10,10000", metavar="N,N,...",
                        help="backlog sizes of the scale section on S3 (default 10,10000; "
                        "100000 takes about 10 more minutes on moto)")
    parser.add_argument("--rounds", type=int, default=3, metavar="K",
                        help="times the speed section runs each shape, the seed baseline "
                        "and s3q one after the other in each round (default 3: the median "
                        "and the range are reported)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds: must be at least 1")
    try:
        s3_backlogs = tuple(int(n) for n in args.s3_backlogs.split(",") if n.strip())
    except ValueError:
        parser.error(f"--s3-backlogs: not a list of integers: {args.s3_backlogs!r}")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        parser.error(f"unknown section(s): {', '.join(bad)}")
    if "ceiling" in only and "throughput" not in only:
        only.insert(0, "throughput")  # the ceiling is measured next to the throughput runs
    if "throughput" in only and "ceiling" not in only:
        only.append("ceiling")
    stamp = time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    out: Path = args.out or BENCH / "results" / stamp
    out.mkdir(parents=True, exist_ok=True)
    isolate_from_aws_config()
    # s3q's warnings (expected ones too: the retry run's failing handler) go to a file
    logging.basicConfig(filename=out / "s3q-warnings.log", level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctx = Context(quick=args.quick, out=out, command=command_line(argv), env=Env.collect(),
                  s3_backlogs=s3_backlogs, rounds=args.rounds)
    print(f"s3q benchmark suite -> {out}\n  command: {ctx.command}\n  environment: "
          f"{ctx.env.tag()}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="s3q-bench-"))
    s3 = S3Env(scratch / "moto-recording.jsonl")
    shared = Shared()
    sections: dict[str, Section] = {}
    steps: dict[str, Callable[[], Section]] = {
        "throughput": lambda: throughput(ctx, s3, shared),
        "ceiling": lambda: ceiling_section(ctx, shared),
        "seed": lambda: seed_section(ctx, s3, shared),
        "speed": lambda: speed_section(ctx, s3, shared),
        "peers": lambda: peers_section(ctx, s3, shared),
        "costs": lambda: costs_section(ctx, s3, shared),
        "latency": lambda: latency_section(ctx, s3),
        "events": lambda: events_section(ctx, s3),
        "recovery": lambda: recovery_section(ctx, s3, scratch),
        "scale": lambda: scale_section(ctx, s3, scratch),
        "status": lambda: status_section(ctx, s3),
    }
    try:
        for key in SECTIONS:
            if only and key not in only:
                continue
            print(f"== {key}", flush=True)
            t0 = time.monotonic()
            tag = ctx.env.tag()
            try:
                sections[key] = steps[key]()
            except Exception as exc:
                tb = traceback.format_exc()
                print(tb, file=sys.stderr, flush=True)
                ctx.note(f"section {key} failed: {type(exc).__name__}: {exc}")
                sections[key] = Section(key, key, md=[f"**Failed**: `{type(exc).__name__}: "
                                                      f"{exc}`", "", "```", tb[-3000:], "```"])
            sections[key].env = tag
            sections[key].seconds = time.monotonic() - t0
            print(f"   ({sections[key].seconds:.0f} s)", flush=True)
    finally:
        s3.close()
        shutil.rmtree(scratch, ignore_errors=True)
    plots_note = plots.draw(out, sections)
    path = report.write(ctx, sections, plots_note)
    print(f"\nreport: {path}\nresults: {out / 'results.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
