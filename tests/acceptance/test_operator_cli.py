"""The operator's command line, through the real ``s3q`` executable, on a local queue (and
on moto where S3 matters): where the queue came from, read-only commands that create
nothing, help, global options, durations, purge/requeue with counts, confirmations and
progress, failed requests with their errors, results, tables and versioned JSON."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len

from s3q.backends import open_store
from tests.acceptance.conftest import S3Q, Cli, kill_tree, wait_for
from tests.s3server import S3Endpoint

PY = sys.executable
FAIL = f"{PY} -c 'import sys; sys.stderr.write(\"boom: bad input\"); sys.exit(3)'"
ECHO = f"{PY} -c 'import sys; sys.stdout.write(open(sys.argv[1]).read() * 100)' {{path}}"
COMMANDS = ["worker", "submit", "status", "ls", "show", "result", "requeue", "recover",
            "purge", "iam-policy"]


def fill(cli: Cli, names: list[str]) -> None:
    src = cli.tmp / f"in-{time.monotonic_ns()}"
    src.mkdir()
    for name in names:
        (src / name).write_text(json.dumps({"name": name}))
    cli.run("submit", str(src))


def fail_all(cli: Cli, names: list[str]) -> None:
    fill(cli, names)
    cli.run("worker", "--exec", FAIL, "--burst", "--max-attempts", "1",
            "--breaker-threshold", "0")
    failed = json.loads(cli.run("ls", "failed", "--json").stdout)["requests"]
    assert set(names) <= {r["name"] for r in failed}


def errors(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("s3q: ")]


def log_events(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]


# ------------------------------------------------------------------------ where the queue is

def test_read_only_commands_create_no_queue_and_say_where_it_came_from(local: Cli) -> None:
    env = {"S3Q_QUEUE": ""}  # nothing configured: the built-in ./s3q-data
    for args in (["status"], ["status", "--check"], ["ls", "wait"], ["show", "a.json"],
                 ["result", "a.json"], ["requeue", "--all", "--yes"],
                 ["purge", "failed", "--yes"], ["recover", "--stale"]):
        out = local.run(*args, check=False, env=env)
        assert out.returncode == 3, (args, out.stderr)
        [line] = errors(out)
        assert "no queue at" in line and "s3q-data" in line and "built-in default" in line
    assert not Path("s3q-data").exists()  # nothing was created

    names = ["a_request.json"]
    fill(local, names)  # submit creates the queue it names
    out = local.run("status", "--json")
    assert json.loads(out.stdout)["queue_source"] == "env S3Q_QUEUE"
    [event] = [e for e in log_events(out) if e.get("event") == "queue"]
    assert event["source"] == "env S3Q_QUEUE" and event["level"] == "info"
    human = local.run("status").stdout.splitlines()
    assert human[0] == f"queue     file://{local.queue}"
    assert human[1] == "          from env S3Q_QUEUE"
    worker = local.run("worker", "--exec", "true", "--burst")
    assert log_events(worker)[0]["event"] == "queue"  # the worker's first log line


def test_the_built_in_default_queue_is_a_warning(local: Cli) -> None:
    local.run("submit", "-", "--name", "x.json", input="{}", env={"S3Q_QUEUE": ""})
    assert Path("s3q-data/wait/x.json").exists()
    out = local.run("ls", "wait", env={"S3Q_QUEUE": ""})
    [event] = log_events(out)
    assert event["level"] == "warning" and "built-in default" in event["source"]


def test_profiles_that_match_no_host_name_stop_every_command(local: Cli) -> None:
    config = local.tmp / "s3q.toml"
    config.write_text('[profiles.prod]\nwhen_hostname = "*-prod-*"\nqueue = "s3://b/p"\n'
                      '[profiles.staging]\nwhen_hostname = "*-staging-*"\n'
                      'queue = "s3://b/s"\n')
    host = socket.gethostname()
    assert not re.search(r"-prod-|-staging-", host)
    for args in (["status"], ["config", "show"], ["worker", "--exec", "true", "--burst"]):
        out = local.run(*args, check=False, env={"S3Q_CONFIG": str(config)})
        assert out.returncode == 2, out.stderr
        [line] = errors(out)
        assert f"matches the host name {host!r}" in line
        assert "prod '*-prod-*', staging '*-staging-*'" in line
    shown = local.run("--config", str(config), "--profile", "staging", "config", "show",
                      "--json", env={"S3Q_QUEUE": ""})
    assert json.loads(shown.stdout)["queue_source"].startswith(f"profile staging ({config})")


def test_status_check_fails_on_a_bucket_that_does_not_exist(cli: Cli,
                                                           s3_endpoint: S3Endpoint) -> None:
    out = cli.run("status", "--check", check=False,
                  env={"S3Q_QUEUE": f"s3://no-such-bucket-{os.getpid()}/q"})
    assert out.returncode == 3 and "no-such-bucket" in out.stderr
    assert cli.run("status", "--check").returncode == 0  # the fixture's queue is fine


# ------------------------------------------------------------------------ help, global options

@pytest.mark.parametrize("command", COMMANDS)
def test_help_puts_the_commands_own_options_first_and_has_examples(local: Cli,
                                                                   command: str) -> None:
    text = local.run(command, "--help", env={"COLUMNS": "100"}).stdout
    lines = text.splitlines()
    assert len(lines) <= 50, f"{command} --help is {len(lines)} lines"
    sections = [line for line in lines if (line and not line.startswith(" ")
                                           and line.endswith(":"))
                or line.startswith("Settings (")]
    assert sections[0] == "Options:" and sections[1].startswith("Settings (")
    assert sections[-1] == "Examples:"
    examples = lines[lines.index("Examples:") + 1:]
    assert 2 <= len([e for e in examples if e.strip().startswith("s3q ")]) <= 3
    own = lines[lines.index("Options:"):lines.index(sections[1])]
    assert not any("--lease-ttl" in line or "--queue" in line for line in own)
    assert "--queue" in text and "Also: " in text  # every setting still named


def test_global_options_before_the_command_and_after_it(local: Cli) -> None:
    fill(local, ["a_request.json"])
    config = local.tmp / "x.toml"
    config.write_text(f'queue = "{local.queue}"\nlease_ttl = "2m"\n')
    env = {"S3Q_QUEUE": ""}
    out = local.run("--config", str(config), "status", "--json", env=env)
    assert json.loads(out.stdout)["counts"]["wait"] == 1
    out = local.run("--queue", local.queue, "ls", "wait", env=env)
    assert "a_request.json" in out.stdout
    shown = json.loads(local.run("--config", str(config), "--lease-ttl", "5m", "config",
                                 "show", "--lease-ttl", "90s", "--json").stdout)["settings"]
    assert shown["lease_ttl"] == {"value": "90", "source": "flag --lease-ttl"}  # after wins
    shown = json.loads(local.run("--config", str(config), "config", "show",
                                 "--json").stdout)["settings"]
    assert shown["lease_ttl"]["value"] == "120"


def test_every_duration_takes_units(local: Cli) -> None:
    fill(local, ["a_request.json"])
    shown = json.loads(local.run("config", "show", "--json", "--grace", "2m",
                                 "--job-timeout", "1h", env={"S3Q_POLL_INTERVAL": "30s"}
                                 ).stdout)["settings"]
    assert (shown["grace"]["value"], shown["job_timeout"]["value"],
            shown["poll_interval"]["value"]) == ("120", "3600", "30")
    assert local.run("status", "--check", "--max-age", "1h", "--lease-ttl", "1m").returncode == 0
    out = local.run("status", "--check", "--max-age", "0s", check=False)
    assert out.returncode == 1 and "--max-age 0s" in out.stderr
    bad = local.run("status", "--lease-ttl", "soon", check=False)
    assert bad.returncode == 2 and "expected a duration" in bad.stderr
    # --watch without a value redraws every 2s: two frames, then Ctrl-C ends it with 0
    proc = subprocess.Popen([S3Q, "status", "--watch", "--json"], env=local.env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    frames = [json.loads(proc.stdout.readline()) for _ in range(2)]
    proc.send_signal(2)
    assert proc.wait(30) == 0
    assert [f["counts"]["wait"] for f in frames] == [1, 1]


# ------------------------------------------------------------------------ purge, requeue

def test_purge_and_requeue_dry_run_count_and_refuse_without_yes(local: Cli) -> None:
    names = [f"r{i}_request.json" for i in range(3)]
    fail_all(local, names)
    for args, verb in ((["purge", "failed"], "delete"), (["requeue", "--all"], "requeue")):
        dry = local.run(*args, "--dry-run")
        assert dry.stdout.split() == names and f"would {args[0]} 3 request(s)" in dry.stderr
        dry = json.loads(local.run(*args, "--dry-run", "--json").stdout)
        assert dry["dry_run"] is True and dry["requests"] == names
        out = local.run(*args, check=False)  # no terminal, no --yes
        assert out.returncode == 2
        assert errors(out)[0].startswith(f"s3q: error: refusing to {verb} 3 "), out.stderr
        assert local.counts()["failed"] == 3  # nothing changed
    out = json.loads(local.run("requeue", "--glob", "r1*", "--yes", "--json").stdout)
    assert out["requeued"] == ["r1_request.json"]
    out = json.loads(local.run("purge", "failed", "--yes", "--json").stdout)
    assert out["purged"] == ["r0_request.json", "r2_request.json"]
    assert local.counts() == {"wait": 1, "processing": 0, "finish": 0, "failed": 0}


def run_in_terminal(args: list[str], env: dict[str, str], answer: str = "",
                    interrupt_at: tuple[bytes, int] | None = None) -> tuple[int, str]:
    """Run s3q with a pseudo-terminal as stdin, stdout and stderr; answer its question, or
    press Ctrl-C (SIGINT) once ``interrupt_at`` = (text, count) has been seen."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([S3Q, *args], env={**env, "TERM": "xterm"}, stdin=slave,
                            stdout=slave, stderr=slave)
    os.close(slave)
    out, answered = b"", False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer is gone
            break
        if not data:
            break
        out += data
        if not answered and answer and b"[y/N]" in out:
            os.write(master, answer.encode())
            answered = True
        if not answered and interrupt_at and out.count(interrupt_at[0]) >= interrupt_at[1]:
            proc.send_signal(signal.SIGINT)
            answered = True
    os.close(master)
    return proc.wait(30), out.decode("utf-8", "replace")


def test_purge_asks_with_the_count_and_shows_progress_on_a_terminal(local: Cli) -> None:
    names = [f"r{i}_request.json" for i in range(3)]
    fail_all(local, names)
    code, screen = run_in_terminal(["purge", "failed"], local.env, "n\n")
    assert code == 1 and "Delete 3 request(s) from failed/ and their error records?" in screen
    assert local.counts()["failed"] == 3
    code, screen = run_in_terminal(["purge", "failed"], local.env, "y\n")
    assert code == 0, screen
    assert "purging" in screen and "3/3" in screen and "purged 3 request(s)" in screen
    assert local.counts()["failed"] == 0


def test_status_watch_redraws_in_place_on_a_terminal(local: Cli) -> None:
    fill(local, ["a_request.json"])
    code, screen = run_in_terminal(["status", "--watch", "1s"], local.env,
                                   interrupt_at=(b"(every 1s; Ctrl-C to stop)", 2))
    assert code == 0, screen
    assert screen.count("counts    wait 1") >= 2
    assert "\x1b[" in screen  # rich's Live moves the cursor back up to redraw


def test_purge_with_yes_deletes_in_rounds_as_it_lists(local: Cli) -> None:
    names = [f"{i:04d}_request.json" for i in range(1100)]  # more than one round of 1,000
    fill(local, names)
    out = local.run("purge", "wait", "--yes", "-c", "8")
    assert "purged 1100 request(s) from wait/" in out.stdout
    assert local.counts()["wait"] == 0


# ------------------------------------------------------------------------ failed, show, result

def test_recover_mine_refuses_while_a_worker_with_that_id_runs_on_this_host(
        local: Cli, procs: list[subprocess.Popen[str]]) -> None:
    wid = local.env["S3Q_WORKER_ID"]  # the host's id: the one `recover --mine` defaults to
    local.run("submit", "-", "--name", "a_request.json", input="{}")
    worker = local.worker("--lease-ttl", "60", env={"S3Q_TEST_SLEEP": "60"})
    procs.append(worker)
    wait_for(lambda: local.runs("start")["a_request.json"] == 1, 60, "the job to start")

    def lease() -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            local.run("show", "a_request.json", "--json").stdout)["lease"]
        return found

    assert (lease()["worker"], lease()["attempt"]) == (wid, 1)
    for args in (["recover", "--mine"], ["recover", "--mine", "--dry-run"],
                 ["recover", "--mine", "--worker-id", wid, "--json"]):
        out = local.run(*args, check=False, input="")
        assert out.returncode == 2, out.stderr
        [line] = errors(out)
        assert f"a worker with id {wid!r} is running on this host" in line
        assert "stop it first" in line and "Traceback" not in out.stderr
        assert out.stdout == ""
    # the running job was left alone: same lease, same attempt, one start
    assert lease()["worker"] == wid and lease()["attempt"] == 1 and lease()["intent"] == "held"
    assert worker.poll() is None and local.runs("start") == {"a_request.json": 1}

    kill_tree(worker, signal.SIGKILL)  # the worker dies, and its lock with it
    out = local.run("recover", "--mine", "--json")
    assert [r["action"] for r in json.loads(out.stdout)["requests"]] == ["released"]
    assert local.counts()["wait"] == 1
    # recover let go of the lock: a worker with that id starts and runs the request
    again = local.worker("--burst")
    procs.append(again)
    assert again.wait(60) == 0
    assert local.runs("done") == {"a_request.json": 1}


def test_recover_and_status_with_a_shorter_lease_ttl_than_the_fleets_say_so(
        local: Cli, procs: list[subprocess.Popen[str]]) -> None:
    """A worker runs with lease_ttl 2m; an operator's shell has the default 30s. The lease
    tells its lease_ttl, so recover and status judge it by 2m (tests/unit/test_lease_ttl.py
    shows the takeover). A lease of an earlier s3q tells none: judged by 30s, the worker's
    live job would look expired (recover would take it, status would mark it); the
    worker's registry record says its lease_ttl: recover refuses to act on what it would
    judge wrongly, and status reports it, until they are given the fleet's."""
    local.run("submit", "-", "--name", "a_request.json", input="{}")
    worker = local.worker("--lease-ttl", "2m", env={"S3Q_TEST_SLEEP": "60"})
    procs.append(worker)
    wait_for(lambda: local.runs("start")["a_request.json"] == 1, 60, "the job to start")
    status = json.loads(local.run("status", "--json").stdout)
    assert [r["lease_ttl"] for r in status["in_flight"]] == [120]
    assert not any("lease_ttl" in p for p in status["problems"]), status["problems"]
    out = local.run("recover", "--stale", "--json")
    assert json.loads(out.stdout)["requests"] == []
    plan = json.loads(local.run("recover", "--all", "--dry-run", "--json").stdout)
    assert [r["action"] for r in plan["requests"]] == [
        f"back to wait/ (held by {local.env['S3Q_WORKER_ID']}, live)"]

    store = open_store(local.queue, create=False)  # the lease as an earlier s3q wrote it
    key = ".s3q/lease/a_request.json"
    body, info = store.get(key)
    record = json.loads(body)
    del record["ttl"]
    store.put(key, json.dumps(record).encode(), if_match=info.etag)
    out = local.run("recover", "--stale", "--json")  # too fresh to look expired, even by 30s
    assert json.loads(out.stdout)["requests"] == []
    for args in (["recover", "--all", "--yes"], ["recover", "--all", "--dry-run"]):
        out = local.run(*args, check=False, input="")  # it would be marked expired after 32 s
        assert out.returncode == 2, out.stderr
        [line] = errors(out)
        assert "live worker(s)" in line and "lease_ttl 120s" in line, line
        assert "--lease-ttl 120s" in line and "Traceback" not in out.stderr
    status = json.loads(local.run("status", "--json").stdout)
    assert any("lease_ttl 120s, longer than this command's 30s" in p
               for p in status["problems"]), status["problems"]
    out = local.run("recover", "--stale", "--lease-ttl", "2m", "--json")
    assert json.loads(out.stdout)["requests"] == []  # the fleet's settings: nothing to take
    status = json.loads(local.run("status", "--json", "--lease-ttl", "2m").stdout)
    assert not any("lease_ttl" in p for p in status["problems"]), status["problems"]
    assert worker.poll() is None and local.runs("start") == {"a_request.json": 1}


def test_dashboard_on_a_port_in_use_or_an_address_it_cannot_have_is_one_line(
        local: Cli) -> None:
    local.run("submit", "-", "--name", "a_request.json", input="{}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = local.run("dashboard", "--port", str(port), check=False, timeout=60)
    assert out.returncode == 2, out.stderr
    assert errors(out) == [f"s3q: error: cannot serve the dashboard on 127.0.0.1:{port}: "
                           "Address already in use"]
    token = {"S3Q_DASHBOARD_TOKEN": "t0ken-for-a-test-only-0123456789"}
    for host, why in (("no-such-host.invalid", "not an address or a name of this host"),
                      ("192.0.2.1", "Cannot assign requested address")):  # TEST-NET-1
        out = local.run("dashboard", "--host", host, "--port", "0", check=False,
                        timeout=60, env=token)
        assert out.returncode == 2, out.stderr
        [line] = errors(out)
        assert line.startswith(f"s3q: error: cannot serve the dashboard on {host}:0: ")
        assert why in line and "Traceback" not in out.stderr


def test_ls_failed_shows_the_error_and_show_the_traceback(local: Cli, tmp_path: Path) -> None:
    (local.tmp / "work" / "jobs.py").write_text(
        "def handle(req):\n    return check(req)\n\n"
        "def check(req):\n    raise KeyError('customer_id')\n")
    fill(local, ["k_request.json"])
    local.run("worker", "--handler", "jobs:handle", "--burst", "--max-attempts", "1",
              env={"PYTHONPATH": str(local.tmp / "work")})
    fail_all(local, ["x_request.json"])
    table = local.run("ls", "failed").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "FAILED", "ATTEMPTS", "ERROR"]
    assert "KeyError: 'customer_id'" in table[1] and "boom: bad input" in table[2]
    listed = json.loads(local.run("ls", "failed", "--json").stdout)["requests"]
    assert listed[0]["error"]["type"] == "KeyError" and listed[1]["error"]["attempts"] == 1
    shown = local.run("show", "k_request.json").stdout
    tail = shown.split("traceback (the end):\n")[1].splitlines()
    assert tail[-1].strip() == "KeyError: 'customer_id'"
    assert any("in check" in line for line in tail)


def test_result_writes_the_whole_result(local: Cli) -> None:
    fill(local, ["big_request.json"])
    local.run("worker", "--exec", ECHO, "--burst")
    body = json.dumps({"name": "big_request.json"}).encode() * 100
    shown = local.run("show", "big_request.json").stdout
    assert "'s3q result NAME' for all of it" in shown
    out = subprocess.run([S3Q, "result", "big_request.json"], env=local.env,
                         capture_output=True, timeout=60, check=True)
    assert out.stdout == body
    target = local.tmp / "out.bin"
    local.run("result", "big_request.json", "-o", str(target))
    assert target.read_bytes() == body
    missing = local.run("result", "nothing.json", check=False)
    assert missing.returncode == 1 and "has no result" in missing.stderr


# ------------------------------------------------------------------------ tables and JSON

def test_tables_align_wide_characters(local: Cli) -> None:
    names = ["a_request.json", "ünïcødé-日本_request.json", "漢字漢字漢字_request.json"]
    fill(local, names)
    rows = local.run("ls", "wait").stdout.splitlines()
    starts = {cell_len(row[:row.index(row.split()[-2])]) for row in rows[1:]}
    assert len(starts) == 1, rows  # the SIZE column starts at one display column
    assert cell_len(rows[0][:rows[0].index("SIZE")]) in starts


ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
TIME_KEYS = {"time", "last_modified", "not_before", "failed_at", "at", "opened_at", "until"}


def _check_times(value: object, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in TIME_KEYS and item is not None:
                assert isinstance(item, str) and ISO.fullmatch(item), f"{where}.{key}={item!r}"
            _check_times(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _check_times(item, where)


def test_every_json_output_has_a_schema_and_iso_times(local: Cli) -> None:
    fail_all(local, ["f_request.json"])
    fill(local, ["w_request.json"])
    runs = {
        "submit": ["submit", "-", "--name", "s_request.json", "--json"],
        "status": ["status", "--json"], "ls": ["ls", "failed", "--json"],
        "show": ["show", "f_request.json", "--json"], "config": ["config", "show", "--json"],
        "requeue": ["requeue", "--all", "--dry-run", "--json"],
        "recover": ["recover", "--stale", "--json"],
        "purge": ["purge", "wait", "--dry-run", "--json"],
    }
    for kind, args in runs.items():
        doc = json.loads(local.run(*args, input="{}").stdout)
        assert doc["schema"] == f"s3q.{kind}/1", args
        _check_times(doc, kind)
    shown = json.loads(local.run("show", "f_request.json", "--json").stdout)
    assert ISO.fullmatch(shown["error"]["failed_at"]) and ISO.fullmatch(
        shown["error"]["error"]["at"])
