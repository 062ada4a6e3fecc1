"""PNG plots of the report (matplotlib, Agg backend). matplotlib comes with the ``bench``
extra (``pip install -e '.[bench]'``); without it the report is written without plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.sections import Section


def draw(out: Path, sections: dict[str, Section]) -> str:
    """Draw every plot whose data is there; returns "" or why plots are missing."""
    try:
        import matplotlib  # type: ignore[import-not-found, import-untyped, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return "matplotlib is not installed: `.venv/bin/pip install -e '.[bench]'` for plots"
    drawers = {"throughput": _throughput, "ceiling": _ceiling, "seed": _seed,
               "peers": _peers, "costs": _costs, "latency": _latency, "scale": _scale}
    failed = []
    for key, fn in drawers.items():
        sec = sections.get(key)
        if sec is None or not sec.data:
            continue
        try:
            fn(plt, out, sec.data, sections)
        except Exception as exc:  # a plot must never lose the measurements
            failed.append(f"{key}: {type(exc).__name__}: {exc}")
        finally:
            plt.close("all")
    return "; ".join(failed)


def _save(plt: Any, fig: Any, out: Path, name: str) -> None:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)


def _throughput(plt: Any, out: Path, data: dict[str, Any],
                sections: dict[str, Section]) -> None:
    bounds = {b["run"]: b["bound_jobs_per_s"]
              for b in sections["ceiling"].data.get("bounds", [])} if "ceiling" in sections \
        else {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, store, title in ((axes[0], "local", "local directory"),
                             (axes[1], "s3", "S3 (moto server)")):
        runs = [r for r in data["runs"] if r["store"] == store]
        xs = [str(r["concurrency"]) for r in runs]
        ys = [r["jobs_per_s"] for r in runs]
        ax.bar(xs, ys, color="#3b7dd8", label="s3q jobs/s", width=0.6)
        bx = [str(r["concurrency"]) for r in runs if r["label"] in bounds]
        by = [bounds[r["label"]] for r in runs if r["label"] in bounds]
        if by:
            ax.plot(bx, by, "k_", markersize=40, mew=2,
                    label="bound: store ceiling / requests per job")
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y:.0f}", (x, y), ha="center", va="bottom", fontsize=9)
        ax.set_title(title)
        ax.set_xlabel("concurrent handlers (one Worker)")
        ax.set_ylabel("jobs/s")
        ax.legend(fontsize=8)
    fig.suptitle("s3q throughput, no-op handler, 1 KB requests")
    _save(plt, fig, out, "throughput.png")


def _ceiling(plt: Any, out: Path, data: dict[str, Any], sections: dict[str, Section]) -> None:
    rates = data["rates"]
    fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4), squeeze=False)
    for ax, (store, ops) in zip(axes[0], rates.items(), strict=True):
        names = list(ops)
        ax.bar(names, [ops[n]["per_s"] for n in names], color="#6a9f4b")
        ax.set_title(f"{store}: raw ops/s ({data['threads']} threads)")
        ax.tick_params(axis="x", rotation=30)
    _save(plt, fig, out, "ceiling.png")


def _seed(plt: Any, out: Path, data: dict[str, Any], sections: dict[str, Section]) -> None:
    labels = ["s3q\n1 worker x 4", "s3q\n4 workers x 1", "seed boto3\n4 racing",
              "seed aws CLI\n4 parallel"]
    keys = ["s3q_1x4", "s3q_4x1", "seed_boto3", "seed_cli"]
    ys = [data[k]["jobs_per_s"] for k in keys]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(labels, ys, color=["#3b7dd8", "#3b7dd8", "#d8643b", "#d8643b"])
    for i, y in enumerate(ys):
        ax.annotate(f"{y:.1f}", (i, y), ha="center", va="bottom", fontsize=9)
    dup = data["seed_boto3"]["processed_more_than_once"]
    ax.set_title(f"jobs/s on the same server — seed processed {dup} requests twice or more")
    ax.set_ylabel("jobs/s")
    _save(plt, fig, out, "seed.png")


def _peers(plt: Any, out: Path, data: dict[str, Any], sections: dict[str, Section]) -> None:
    labels, ys, colors = [], [], []
    seed = sections.get("seed")
    if seed and seed.data:
        labels += ["s3q 1x4", "s3q 4x1"]
        ys += [seed.data["s3q_1x4"]["jobs_per_s"], seed.data["s3q_4x1"]["jobs_per_s"]]
        colors += ["#3b7dd8", "#3b7dd8"]
    for res in data.get("results", []):
        if res.get("ok") and res.get("jobs_per_s"):
            labels.append(f"{res['peer']} {res.get('package_version')}"
                          + ("*" if res.get("timed_out") else ""))
            ys.append(res["jobs_per_s"])
            colors.append("#8a5cc2")
    if len(labels) < 2:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(labels, ys, color=colors)
    for i, y in enumerate(ys):
        ax.annotate(f"{y:.1f}", (i, y), ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("jobs/s")
    ax.set_title("Peers, 4 workers, same moto server (* = time-boxed)")
    _save(plt, fig, out, "peers.png")


def _costs(plt: Any, out: Path, data: dict[str, Any], sections: dict[str, Section]) -> None:
    rows = data["rows"]
    ops = sorted({op for r in rows for op in r["per_job"]})
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.5))
    left = [0.0] * len(rows)
    cmap = plt.get_cmap("tab10")
    for k, op in enumerate(ops):
        vals = [r["per_job"].get(op, 0.0) for r in rows]
        ax.barh([r["label"] for r in rows], vals, left=left, label=op, color=cmap(k % 10))
        left = [a + b for a, b in zip(left, vals, strict=True)]
    for i, r in enumerate(rows):
        ax.annotate(f" ${r['usd_per_million_jobs']:.2f}/M", (left[i], i), va="center",
                    fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("S3 requests per job")
    ax.legend(fontsize=7, loc="lower right")
    _save(plt, fig, out, "requests_per_job.png")


def _latency(plt: Any, out: Path, data: dict[str, Any], sections: dict[str, Section]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in data["runs"]:
        lat = sorted(r["latencies"])
        if not lat:
            continue
        ys = [(i + 1) / len(lat) for i in range(len(lat))]
        ax.step(lat, ys, where="post",
                label=(f"{r.get('rate_per_s', 0):g}/s, poll_interval={r['poll_interval']:g} s "
                       f"(p99 {r['p99_s']:.2f} s)"))
    ax.set_xscale("log")
    ax.set_xlabel("submit → handler start, seconds (log)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Latency submit → handler start, one worker")
    ax.legend(fontsize=8)
    _save(plt, fig, out, "latency.png")


def _scale(plt: Any, out: Path, data: dict[str, Any], sections: dict[str, Section]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for store in sorted({r["store"] for r in data["results"]}):
        rs = [r for r in data["results"] if r["store"] == store and "ru_maxrss_mib" in r]
        xs = [r["backlog"] for r in rs]
        axes[0].plot(xs, [r.get("first_claim_s", 0) for r in rs], "o-", label=store)
        axes[1].plot(xs, [r["ru_maxrss_mib"] for r in rs], "o-", label=store)
    for ax, title in ((axes[0], "time to first claim, s"), (axes[1], "worker peak RSS, MiB")):
        ax.set_xscale("log")
        ax.set_xlabel("requests waiting (log)")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    _save(plt, fig, out, "scale.png")
