"""Peers: other queues on S3, installed into their own virtualenv (bench/.peers-venv, never
.venv) and run on the same moto server with the same workload by bench/peers_runner.py."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

from bench.common import BENCH
from bench.s3env import S3Env

VENV = BENCH / ".peers-venv"
RUNNER = BENCH / "peers_runner.py"
#: PyPI distribution -> import name, in the order they are installed (pailq pins boto3).
PACKAGES = {"pailq": "pail", "jqueue": "jqueue", "buquet": "buquet"}
PEER_OF_PACKAGE = {"pailq": "pail", "jqueue": "jqueue", "buquet": "buquet"}


@dataclass
class PeerVenv:
    python: Path | None
    base_python: str
    installed: dict[str, str] = field(default_factory=dict)  # package -> version
    failed: dict[str, str] = field(default_factory=dict)  # package -> error
    log: list[str] = field(default_factory=list)


def _python_version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=False)
        major, minor = out.stdout.split()
        return int(major), int(minor)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _base_python() -> str:
    """A Python >= 3.12 if this machine has one (the peers require it), else this one."""
    candidates = [shutil.which(f"python3.{m}") for m in (13, 12)]
    home = Path.home()
    candidates += sorted(glob.glob(str(home / ".pyenv/versions/3.1[23]*/bin/python")),
                         reverse=True)
    candidates += ["/usr/bin/python3", "/usr/local/bin/python3"]
    for exe in candidates:
        if exe and Path(exe).exists():
            v = _python_version(exe)
            if v is not None and (3, 12) <= v < (3, 14):
                return exe
    return sys.executable


def ensure_venv() -> PeerVenv:
    """Create bench/.peers-venv if missing and pip-install each peer into it (one at a
    time, so that one that cannot be installed does not keep the others out)."""
    python = VENV / "bin" / "python"
    status = PeerVenv(python=None, base_python="(existing venv)")
    if not python.exists():
        base = _base_python()
        status.base_python = base
        out = subprocess.run([base, "-m", "venv", str(VENV)], capture_output=True, text=True,
                             check=False)
        if out.returncode != 0:
            status.failed = {p: f"could not create {VENV}: {out.stderr.strip()[-500:]}"
                             for p in PACKAGES}
            return status
    status.python = python

    def importable(module: str) -> bool:
        return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True,
                              check=False).returncode == 0

    def pip(*packages: str) -> tuple[bool, list[str]]:
        out = subprocess.run([str(python), "-m", "pip", "install", "-q",
                              "--disable-pip-version-check", *packages],
                             capture_output=True, text=True, check=False)
        lines = [ln for ln in (out.stderr + out.stdout).splitlines()
                 if ln.strip() and "is ignored" not in ln]
        status.log += [f"pip install {' '.join(packages)}: {ln}" for ln in lines[-8:]]
        return out.returncode == 0, lines

    missing = [p for p, m in PACKAGES.items() if not importable(m)]
    # all at once first, so that pip resolves their pins together (pailq pins boto3 and
    # typing-extensions); one at a time only if that fails, to tell which one cannot go in
    if missing and not pip(*missing)[0]:
        for package in missing:
            ok, lines = pip(package)
            if not ok:
                status.failed[package] = "\n".join(lines[-6:]) or "pip failed"
    for package, module in PACKAGES.items():
        if package in status.failed:
            continue
        if not importable(module):
            status.failed.setdefault(package, f"installed, but `import {module}` fails")
            continue
        ver = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                              f"print(m.version({package!r}))"],
                             capture_output=True, text=True, check=False)
        status.installed[package] = ver.stdout.strip() or "?"
    if status.base_python == "(existing venv)":
        v = _python_version(str(python))
        status.base_python = f"python {v[0]}.{v[1]}" if v else "?"
    return status


def run_peer(venv: PeerVenv, s3: S3Env, peer: str, *, jobs: int, workers: int,
             timeout: float, record: bool = False) -> dict[str, Any]:
    """Run one peer in the peers venv; with ``record``, count the workers' requests with
    moto's recorder (for clients that cannot be hooked from Python)."""
    assert venv.python is not None
    endpoint = s3.base
    cfg: dict[str, Any] = {"peer": peer, "endpoint": endpoint.endpoint_url, "bucket":
           f"peer-{peer}-{uuid4().hex[:8]}", "jobs": jobs, "workers": workers,
           "timeout": timeout, "region": endpoint.region,
           "access_key": endpoint.access_key_id, "secret_key": endpoint.secret_access_key,
           "wait_for_go": record}
    # buquet insists on reading the bucket's versioning status, and its Rust SDK cannot
    # parse moto's answer (root element GetBucketVersioningResponse instead of
    # VersioningConfiguration); versioning *is* enabled on its bucket, the check is skipped.
    env = {**os.environ, "BUQUET_ALLOW_NO_VERSIONING": "1"}
    proc = subprocess.Popen([str(venv.python), str(RUNNER), json.dumps(cfg)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    recorded = None
    try:
        if record:
            line = proc.stdout.readline()
            if line.strip() == "ready":
                with s3.record() as rec:
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                    stdout, stderr = proc.communicate(timeout=timeout + 120)
                recorded = dict(rec.by_bucket.get(cfg["bucket"], {}))
            else:
                stdout, stderr = proc.communicate(timeout=timeout + 300)
                stdout = line + stdout
        else:
            stdout, stderr = proc.communicate(timeout=timeout + 300)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    last = (stdout.strip().splitlines() or ["{}"])[-1]
    try:
        result: dict[str, Any] = json.loads(last)
    except json.JSONDecodeError:
        result = {"peer": peer, "ok": False,
                  "error": f"runner printed no result (exit {proc.returncode}): "
                           f"{stderr.strip()[-1500:]}"}
    if recorded is not None:
        result["recorded_requests"] = recorded
    result["stderr_tail"] = stderr.strip()[-600:]
    result["command"] = f"{venv.python} {RUNNER} '<json config>'"
    if result.get("ok"):
        completed = int(result.get("distinct_jobs_run") or 0)
        elapsed = float(result.get("elapsed_s") or 0)
        result["jobs_per_s"] = round(completed / elapsed, 2) if elapsed else None
        result["timed_out"] = completed < jobs
    return result
