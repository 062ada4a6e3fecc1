"""The CodeDeploy bundle (s3q.deploy): its files are well-formed (systemd-analyze verify,
shellcheck, the AppSpec structure, the config loads), and its hook scripts really run, in
CodeDeploy's order and twice each, in a scratch root with stand-ins for systemctl, useradd,
getent, chown, journalctl, python and s3q that record their calls."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from s3q import __version__
from s3q.config import load_config
from s3q.deploy import (
    DEFAULT_GRACE,
    DOC_IAM_EXAMPLE,
    MAX_GRACE,
    VALIDATE_TIMEOUT,
    render_bundle,
    stop_timeout_problem,
    unit_exec_arg,
    write_bundle,
)
from s3q.errors import ConfigError
from s3q.iam import iam_policy

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ["ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart",
         "ValidateService"]
SCRIPTS = {"ApplicationStop": "stop.sh", "BeforeInstall": "before_install.sh",
           "AfterInstall": "after_install.sh", "ApplicationStart": "start.sh",
           "ValidateService": "validate.sh"}
UNIT = "deploy/s3q-worker.service"


def unit_settings(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as section -> [(key, value)] (keys may repeat), comments dropped."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, _, value = line.partition("=")
        sections[current].append((key, value))
    return sections


def one(sections: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    values = [v for k, v in sections[section] if k == key]
    assert len(values) == 1, (section, key, values)
    return values[0]


# --------------------------------------------------------------------------- the files

def test_write_bundle_writes_every_file_with_its_mode(tmp_path: Path) -> None:
    written = write_bundle(tmp_path / "rev")
    rel = sorted(str(p.relative_to(tmp_path / "rev")) for p in written)
    assert rel == sorted(["appspec.yml", "scripts/common.sh", "scripts/stop.sh",
                          "scripts/before_install.sh", "scripts/after_install.sh",
                          "scripts/start.sh", "scripts/validate.sh", UNIT,
                          "deploy/s3q.toml", "deploy/s3q.env"])
    for path in written:
        executable = bool(path.stat().st_mode & stat.S_IXUSR)
        assert executable == (path.suffix == ".sh" and path.name != "common.sh"), path
        assert "@@" not in path.read_text(), f"unfilled template token in {path}"


def test_write_bundle_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    dest = tmp_path / "rev"
    (dest / "deploy").mkdir(parents=True)
    (dest / "deploy" / "s3q.toml").write_text("mine\n")
    with pytest.raises(FileExistsError) as info:
        write_bundle(dest)
    assert info.value.filename == str(dest / "deploy" / "s3q.toml")
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["s3q.toml"], \
        "nothing may be written when a file exists"
    assert (dest / "deploy" / "s3q.toml").read_text() == "mine\n"
    written = write_bundle(dest, force=True)
    assert dest / "deploy" / "s3q.toml" in written
    assert (dest / "deploy" / "s3q.toml").read_text() == render_bundle()["deploy/s3q.toml"][0]


def test_options_reach_every_file(tmp_path: Path) -> None:
    files = render_bundle(app_dir="/srv/requests/", service_user="reqproc",
                          service_name="req-worker",
                          handler_cmd="/srv/requests/.venv/bin/python /srv/requests/run.py "
                                      "{path}", grace=100)
    assert "deploy/req-worker.service" in files and UNIT not in files
    unit = unit_settings(files["deploy/req-worker.service"][0])
    assert one(unit, "Service", "User") == one(unit, "Service", "Group") == "reqproc"
    assert one(unit, "Service", "WorkingDirectory") == "/srv/requests"
    assert one(unit, "Service", "ExecStart") == (
        "/srv/requests/.venv/bin/s3q worker --exec "
        "'/srv/requests/.venv/bin/python /srv/requests/run.py {path}'")
    assert int(one(unit, "Service", "TimeoutStopSec")) > 100
    spec = yaml.safe_load(files["appspec.yml"][0])
    assert spec["files"] == [{"source": "/", "destination": "/srv/requests"}]
    assert spec["permissions"][0]["owner"] == spec["permissions"][0]["group"] == "reqproc"
    assert spec["hooks"]["ApplicationStop"][0]["timeout"] > 100 + 60
    common = files["scripts/common.sh"][0]
    for value in ('"${S3Q_APP_DIR:-/srv/requests}"', '"${S3Q_SERVICE_USER:-reqproc}"',
                  '"${S3Q_SERVICE_NAME:-req-worker}.service"'):
        assert value in common
    assert "grace = 100\n" in files["deploy/s3q.toml"][0]
    assert ("Environment", "S3Q_START_BACKOFF=/run/s3q/req-worker.start-backoff") \
        in unit["Service"]


@pytest.mark.parametrize("kwargs", [
    {"app_dir": "opt/app"}, {"app_dir": "/opt/my app"}, {"app_dir": "/"},
    {"app_dir": "/opt/../etc"}, {"app_dir": "/opt/$HOME"},
    {"service_user": "Root User"}, {"service_user": "-x"},
    {"service_name": "s3q.service"}, {"service_name": "a b"},
    {"handler_cmd": ""}, {"handler_cmd": "python a.py\nrm -rf /"},
    {"handler_cmd": "python 'a.py {path}"}, {"grace": -1.0},
    {"grace": MAX_GRACE + 1},  # its stop hooks would exceed CodeDeploy's 3600 s
])
def test_unusable_values_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        render_bundle(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- appspec

@pytest.mark.parametrize("grace", [DEFAULT_GRACE, MAX_GRACE])
def test_appspec_has_the_documented_structure(grace: float) -> None:
    files = render_bundle(grace=grace)
    spec = yaml.safe_load(files["appspec.yml"][0])
    assert spec["version"] == 0.0 and spec["os"] == "linux"
    assert spec["files"] == [{"source": "/", "destination": "/opt/s3q-app"}]
    assert spec["file_exists_behavior"] == "OVERWRITE"
    assert spec["permissions"] == [{"object": "/opt/s3q-app", "pattern": "**",
                                    "owner": "s3q", "group": "s3q"}]
    assert list(spec["hooks"]) == HOOKS, "hooks in CodeDeploy's order"
    unit = unit_settings(files[UNIT][0])
    stop_sec = int(one(unit, "Service", "TimeoutStopSec"))
    for hook, entries in spec["hooks"].items():
        assert len(entries) == 1
        entry = entries[0]
        assert set(entry) == {"location", "timeout", "runas"}
        assert entry["location"] == f"scripts/{SCRIPTS[hook]}"
        assert files[entry["location"]][1] == 0o755
        assert entry["runas"] == "root"
        assert isinstance(entry["timeout"], int) and 0 < entry["timeout"] <= 3600
    # a graceful stop (SIGTERM, then up to TimeoutStopSec) must fit in the hooks that stop
    assert spec["hooks"]["ApplicationStop"][0]["timeout"] > stop_sec
    assert spec["hooks"]["ApplicationStart"][0]["timeout"] > stop_sec
    assert spec["hooks"]["ValidateService"][0]["timeout"] > VALIDATE_TIMEOUT
    assert f'timeout="${{S3Q_VALIDATE_TIMEOUT:-{VALIDATE_TIMEOUT}}}"' \
        in files["scripts/validate.sh"][0]


# --------------------------------------------------------------------------- the unit

def test_unit_runs_at_every_boot_and_stops_gracefully() -> None:
    text = render_bundle()[UNIT][0]
    head = text.split("[Unit]")[0]
    assert "ApplicationStart" in head and "reboot" in head and "own recovery" in head
    unit = unit_settings(text)
    assert one(unit, "Unit", "After") == one(unit, "Unit", "Wants") == "network-online.target"
    assert one(unit, "Unit", "StartLimitIntervalSec") and one(unit, "Unit", "StartLimitBurst")
    # the start limit never stops automatic restarts: at most 60/RestartSec starts a minute
    restart_sec = int(one(unit, "Service", "RestartSec"))
    assert 60 / restart_sec <= int(one(unit, "Unit", "StartLimitBurst"))
    assert int(one(unit, "Unit", "StartLimitIntervalSec")) <= 60
    expect = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60", "User": "s3q",
        "Group": "s3q", "WorkingDirectory": "/opt/s3q-app",
        "EnvironmentFile": "-/etc/s3q/s3q.env", "KillSignal": "SIGTERM", "KillMode": "mixed",
        "Restart": "on-failure", "RestartSec": "5", "NoNewPrivileges": "yes",
        "ProtectSystem": "strict", "ReadWritePaths": "/opt/s3q-app", "PrivateTmp": "yes",
        "ProtectHome": "yes", "RuntimeDirectory": "s3q", "RuntimeDirectoryPreserve": "yes",
        "ExecStart": "/opt/s3q-app/.venv/bin/s3q worker --exec 'python process.py {path}'",
    }
    assert {k: one(unit, "Service", k) for k in expect} == expect
    assert int(one(unit, "Service", "TimeoutStopSec")) >= 30 + 60  # grace 30 + giving back
    assert ("Environment", "PATH=/opt/s3q-app/.venv/bin:/usr/local/bin:/usr/bin:/bin") \
        in unit["Service"]
    # the worker-id lock is visible to every unit on the host (PrivateTmp hides /tmp)
    assert ("Environment", "S3Q_LOCK_DIR=/run/s3q") in unit["Service"]
    # a crash loop backs off (s3q's start backoff, kept in the runtime directory, which
    # restarts keep and a reboot empties): systemd's own RestartSteps= and
    # RestartMaxDelaySec= need systemd 254, and 252 (Amazon Linux 2023, Debian 12) warns
    # about them at every daemon-reload
    assert ("Environment", "S3Q_START_BACKOFF=/run/s3q/s3q-worker.start-backoff") \
        in unit["Service"]
    assert not {"RestartSteps", "RestartMaxDelaySec"} & {k for k, _ in unit["Service"]}
    assert "systemd 236 or newer" in text.split("[Unit]")[0]
    assert unit["Install"] == [("WantedBy", "multi-user.target")]


@pytest.mark.parametrize("command", [
    "python process.py {path}",
    "python -c 'import sys; print(sys.argv)' {path} {name}",
    'sh -c "echo 100% done for $HOME" {path}',
    "tool --pattern 'a\\b' --pct 50%% {path}",
])
def test_handler_command_survives_systemd_quoting(command: str) -> None:
    arg = unit_exec_arg(command)
    # systemd splits ExecStart like a POSIX shell for quotes and backslashes, then turns
    # %% into % and $$ into $ (it would expand a single $VAR or %x)
    (word,) = shlex.split(arg)
    assert not re.search(r"(?<![%$])[%$](?![%$])", word.replace("%%", "").replace("$$", ""))
    assert word.replace("%%", "%").replace("$$", "$") == command


def _analyze_verify(tmp_path: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on the unit, its ExecStart pointed at an existing stand-in
    (verify checks that the program exists; /opt/s3q-app does not exist here)."""
    standin = tmp_path / "bin" / "s3q"
    standin.parent.mkdir(exist_ok=True)
    standin.write_text("#!/bin/sh\nexit 0\n")
    standin.chmod(0o755)
    text = unit_text.replace("ExecStart=/opt/s3q-app/.venv/bin/s3q ", f"ExecStart={standin} ")
    assert text != unit_text
    path = tmp_path / "s3q-worker.service"
    path.write_text(text)
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def _complaints(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What systemd-analyze said about our unit (not about the host's own units)."""
    return [line for line in (result.stdout + result.stderr).splitlines()
            if "s3q-worker" in line]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (Debian package: systemd)")
@pytest.mark.parametrize("command", ["python process.py {path}",
                                     'sh -c "echo 100% $HOME" {path}'])
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, command: str) -> None:
    result = _analyze_verify(tmp_path, render_bundle(handler_cmd=command)[UNIT][0])
    assert result.returncode == 0 and not _complaints(result), result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (Debian package: systemd)")
def test_systemd_analyze_verify_would_catch_a_bad_unit(tmp_path: Path) -> None:
    text = render_bundle()[UNIT][0].replace("KillMode=mixed", "KillMode=softly")
    result = _analyze_verify(tmp_path, text)
    # systemd ignores a bad setting with a warning (exit code 0): the complaints count
    assert any("kill mode" in line for line in _complaints(result)), result.stderr


@pytest.mark.parametrize(("value", "problem"), [
    ("90", None), ("90s", None), ("1min 30s", None), ("infinity", None),
    ("80", "leaves too little of the unit's TimeoutStopSec=80s"),
    # a drop-in copies its TimeoutStopSec= as systemd writes it: the check must still bite
    ("1min", "leaves too little of the unit's TimeoutStopSec=60s"),
    ("1min 10s", "leaves too little of the unit's TimeoutStopSec=70s"),
    ("ninety", "S3Q_UNIT_STOP_TIMEOUT='ninety' is not a time span"),
])
def test_the_stop_timeout_check_reads_systemd_time_spans(value: str,
                                                        problem: str | None) -> None:
    """The unit's header tells a drop-in that changes TimeoutStopSec to set
    S3Q_UNIT_STOP_TIMEOUT too; an operator copies the value as systemd takes it ("10min").
    Anything but a plain number used to switch the check off without a word."""
    found = stop_timeout_problem(30.0, {"S3Q_UNIT_STOP_TIMEOUT": value})
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


# --------------------------------------------------------------------------- config

@pytest.mark.parametrize(("hostname", "profile", "attempts"),
                         [("api-prod-3", "prod", 5), ("api-staging-1", "staging", 3),
                          ("API-PROD-3.eu-west-1.compute.internal", "prod", 5)])
def test_generated_config_loads_and_picks_the_profile_by_host_name(
        tmp_path: Path, hostname: str, profile: str, attempts: int) -> None:
    path = tmp_path / "s3q.toml"
    path.write_text(render_bundle()["deploy/s3q.toml"][0])
    cfg, sources = load_config(config_path=str(path), env={}, hostname=hostname)
    assert cfg.profile == profile
    assert cfg.queue.startswith("s3://REPLACE-ME-") and cfg.queue.endswith("/requests")
    assert profile in cfg.queue
    assert (cfg.filter, cfg.lease_ttl, cfg.max_attempts, cfg.on_finish, cfg.grace) == \
        ("*request.json", 60.0, attempts, "move", 30.0)
    assert cfg.access_key_id is None and cfg.secret_access_key is None  # instance profile
    assert sources["queue"] == f"profile {profile} ({path})"
    # the knob to turn before running more workers on a server (OPERATIONS.md, "Sizing")
    assert cfg.concurrency == 4 and sources["concurrency"] == f"profile {profile} ({path})"


@pytest.mark.parametrize("hostname", ["ip-10-0-0-7", "ip-10-0-0-7.ec2.internal",
                                      "i-0123456789abcdef0.eu-west-1.compute.internal"])
def test_generated_config_refuses_a_host_name_of_neither_environment(
        tmp_path: Path, hostname: str) -> None:
    """EC2's default host names (ip-10-..., i-0...) contain neither -prod- nor -staging-.
    The generated s3q.toml used to send every such host to [profiles.staging] (when_hostname
    = "*"): a prod fleet launched without its naming scheme (or whose host name is set by
    user data after the unit has started at boot) served the staging queue with the prod
    handler, or failed on the staging bucket's AccessDenied, with nothing saying why. A host
    of neither environment must stop with the host name and the patterns."""
    path = tmp_path / "s3q.toml"
    path.write_text(render_bundle()["deploy/s3q.toml"][0])
    with pytest.raises(ConfigError) as info:
        load_config(config_path=str(path), env={}, hostname=hostname)
    message = str(info.value)
    assert f"matches the host name {hostname!r}" in message
    assert "prod '*-prod-*'" in message and "staging '*-staging-*'" in message
    assert "S3Q_PROFILE" in message
    cfg, sources = load_config(config_path=str(path), env={"S3Q_PROFILE": "staging"},
                               hostname=hostname)
    assert (cfg.profile, sources["profile"]) == ("staging", "env S3Q_PROFILE")


def test_the_unit_reads_etc_s3q_and_never_a_stray_s3q_toml_of_the_revision(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker runs in the app dir (WorkingDirectory), and ./s3q.toml comes first in the
    search path: a developer's s3q.toml shipped at the revision's root (queue = "./s3q-data")
    replaced /etc/s3q/s3q.toml on every server, and a missing /etc/s3q/s3q.toml meant the
    built-in ./s3q-data. Either way the worker ran on a local, empty queue, `s3q status
    --check` (same config) passed, and the deployment went green while nothing took the real
    queue's requests. The unit must name its file, so that a missing one stops the worker."""
    if Path("/etc/s3q/s3q.toml").exists():
        pytest.skip("this machine has an /etc/s3q/s3q.toml")
    unit = unit_settings(render_bundle()[UNIT][0])
    env = dict(v.split("=", 1) for k, v in unit["Service"] if k == "Environment")
    app = tmp_path / "opt" / "s3q-app"
    app.mkdir(parents=True)
    (app / "s3q.toml").write_text('queue = "./s3q-data"\n')
    monkeypatch.chdir(app)
    with pytest.raises(ConfigError, match=r"config file /etc/s3q/s3q\.toml .*does not exist"):
        load_config(env=env, hostname="api-prod-1")
    # and the one the deployment installs is the one read
    etc = tmp_path / "etc" / "s3q" / "s3q.toml"
    etc.parent.mkdir(parents=True)
    etc.write_text(render_bundle()["deploy/s3q.toml"][0])
    env = {k: v.replace("/etc/s3q/", f"{etc.parent}/") for k, v in env.items()}
    cfg, _ = load_config(env=env, hostname="api-prod-1")
    assert cfg.queue == "s3://REPLACE-ME-prod-bucket/requests"


# --------------------------------------------------------------------------- the scripts

@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (Debian package: shellcheck)")
def test_hook_scripts_pass_shellcheck(tmp_path: Path) -> None:
    write_bundle(tmp_path)
    scripts = sorted(str(p.name) for p in (tmp_path / "scripts").glob("*.sh"))
    assert len(scripts) == 6
    result = subprocess.run(["shellcheck", "--external-sources", "--source-path=SCRIPTDIR",
                             *scripts], cwd=tmp_path / "scripts", capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hook_scripts_are_strict_bash() -> None:
    for path, (text, _) in render_bundle().items():
        if path.endswith(".sh") and not path.endswith("common.sh"):
            assert text.startswith("#!/usr/bin/env bash\n"), path
            assert "\nset -euo pipefail\n" in text, path


STANDINS = {
    # name: bash body; $CALLS is the log, $STATE a directory of state files
    "systemctl": """
        # the main process (pid 4242) gets the unit's environment, as systemd gives it:
        # its own variables, then the KEY=value lines of /etc/s3q/s3q.env (one-line ones
        # only), the value without its surrounding blanks and without the quotes around it
        environ="$S3Q_ROOT/proc/4242/environ"
        case "$1" in
          is-active) [ -e "$STATE/active" ] ;;
          reset-failed) rm -f "$STATE/start-limit-hit" ;;
          start|restart)
            if [ -e "$STATE/start-limit-hit" ]; then  # as systemd refuses until reset-failed
              echo "Job for $2 failed because the start limit was hit" >&2
              exit 1
            fi
            touch "$STATE/active"
            mkdir -p "${environ%/*}"
            { printf '%s\\0' PATH=/opt/s3q-app/.venv/bin:/usr/bin NOTIFY_SOCKET=/run/notify
              grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$S3Q_ROOT/etc/s3q/s3q.env" \\
                | sed -E -e 's/^([^=]*)=[[:space:]]*(.*[^[:space:]])?[[:space:]]*$/\\1=\\2/' \\
                         -e 's/^([^=]*)="(.*)"$/\\1=\\2/' -e "s/^([^=]*)='(.*)'$/\\1=\\2/" \\
                | tr '\\n' '\\0'
            } > "$environ"
            # its command line: the unit's ExecStart, the venv's python running s3q
            handler="${STANDIN_HANDLER:-}"
            [ -n "$handler" ] || handler="python process.py {path}"
            printf '%s\\0' /opt/s3q-app/.venv/bin/python3 /opt/s3q-app/.venv/bin/s3q worker \\
              --exec "$handler" > "${environ%/*}/cmdline"
            [ -z "${STANDIN_ACTIVATING:-}" ] || rm "$STATE/active" ;;  # starting, not ready
          stop) [ -n "${STANDIN_STUCK:-}" ] || rm -f "$STATE/active" "$environ" ;;
          show) echo 4242 ;;
        esac
    """,
    "useradd": """
        user="${!#}"
        echo "passwd:$user" >> "$STATE/db"
        case " $* " in *" --user-group "*) echo "group:$user" >> "$STATE/db" ;; esac
    """,
    "getent": """
        grep -qx "$1:$2" "$STATE/db" 2>/dev/null
    """,
    "chown": "",
    # runs the command after -- (as the user it is given, on a real machine)
    "setpriv": """
        while [ "$1" != -- ]; do shift; done
        shift
        exec "$@"
    """,
    "journalctl": "",
    # python3 for `-m venv DIR`: the new venv's python and s3q are stand-ins too
    "python3": """
        if [ "$1 $2" = "-m venv" ]; then
          dir="${!#}"
          mkdir -p "$dir/bin"
          cp "$STANDINS/venv-python" "$dir/bin/python"
          cp "$STANDINS/s3q" "$dir/bin/s3q"
        fi
    """,
    "venv-python": "",
    "s3q": """
        echo "  (cwd $PWD, S3Q_PROFILE=${S3Q_PROFILE:-})" >> "$CALLS"
        if [ "${!#}" = --check-handler ]; then
          env -0 > "$STATE/s3q-check.environ"
          if [ -n "${STANDIN_CHECK_ERROR:-}" ]; then
            echo "s3q: error: $STANDIN_CHECK_ERROR" >&2
            exit 2
          fi
          echo "the handler can run: --exec 'python process.py {path}'"
          exit 0
        fi
        env -0 > "$STATE/s3q.environ"
        exit "${STANDIN_S3Q_RC:-0}"
    """,
}


@dataclass
class Scratch:
    """A scratch machine: S3Q_ROOT, the revision (CodeDeploy's archive copy), stand-ins."""

    tmp: Path
    root: Path
    revision: Path
    calls: Path
    env: dict[str, str]

    @property
    def app(self) -> Path:
        return self.root / "opt" / "s3q-app"

    def install(self) -> None:
        """CodeDeploy's Install step: copy the revision to the app dir."""
        shutil.copytree(self.revision, self.app, dirs_exist_ok=True)

    def hook(self, hook: str, *, ok: bool = True, **env: str) -> tuple[list[str], str]:
        """Run one hook's script; return the calls it made (paths relative) and its output."""
        self.calls.write_text("")
        script = self.revision / "scripts" / SCRIPTS[hook]
        result = subprocess.run([str(script)], env={**self.env, **env}, cwd=self.tmp,
                                capture_output=True, text=True, timeout=60, check=False)
        assert (result.returncode == 0) == ok, (hook, result.stdout, result.stderr)
        calls = self.calls.read_text().replace(str(self.tmp), "$TMP").splitlines()
        return calls, result.stdout + result.stderr

    def deploy(self, through: str) -> None:
        """A first deployment's steps (hooks that must succeed, and the Install copy) up to
        and including the hook ``through``."""
        steps = ["BeforeInstall", "Install", "AfterInstall", "ApplicationStart",
                 "ValidateService"]
        for step in steps[:steps.index(through) + 1]:
            if step == "Install":
                self.install()
            else:
                self.hook(step)


@pytest.fixture
def scratch(tmp_path: Path) -> Scratch:
    bindir = tmp_path / "standins"
    bindir.mkdir()
    for name, body in STANDINS.items():
        recorded = "s3q" if name == "s3q" else name
        (bindir / name).write_text(
            "#!/usr/bin/env bash\n"
            f'echo "{recorded} $*" >> "$CALLS"\n' + textwrap.dedent(body))
        (bindir / name).chmod(0o755)
    revision = tmp_path / "revision"
    write_bundle(revision)
    (revision / "process.py").write_text("import sys\nprint(open(sys.argv[1]).read())\n")
    (revision / "requirements.txt").write_text("requests\n")
    state = tmp_path / "state"
    state.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    calls = tmp_path / "calls.log"
    env = {
        "PATH": os.environ["PATH"], "LANG": "C.UTF-8",
        "CALLS": str(calls), "STATE": str(state), "STANDINS": str(bindir),
        "S3Q_ROOT": str(root),
        "SYSTEMCTL": str(bindir / "systemctl"), "USERADD": str(bindir / "useradd"),
        "GETENT": str(bindir / "getent"), "CHOWN": str(bindir / "chown"),
        "SETPRIV": str(bindir / "setpriv"),
        "JOURNALCTL": str(bindir / "journalctl"), "PYTHON": str(bindir / "python3"),
        "S3Q_VALIDATE_INTERVAL": "0",
    }
    return Scratch(tmp_path, root, revision, calls, env)


VENV = "$TMP/root/opt/s3q-app/.venv"
PIP = "venv-python -m pip install --quiet --disable-pip-version-check"

UNIT_CALL = "s3q-worker.service"
WORKER_ARGS = "worker --exec python process.py {path}"


def test_hooks_run_in_order_twice_each_on_a_fresh_instance(scratch: Scratch) -> None:
    # ApplicationStop on a fresh instance: nothing installed, nothing to stop, success
    for _ in range(2):
        calls, out = scratch.hook("ApplicationStop")
        assert calls == [] and "not installed" in out

    calls, _ = scratch.hook("BeforeInstall")
    assert calls == ["getent passwd s3q", "getent group s3q",
                     "useradd --system --user-group --home-dir /opt/s3q-app --no-create-home "
                     "--shell /usr/sbin/nologin s3q"]
    calls, _ = scratch.hook("BeforeInstall")
    assert calls == ["getent passwd s3q"], "the user exists: not created again"
    assert (scratch.root / "etc" / "s3q").is_dir()

    scratch.install()

    calls, _ = scratch.hook("AfterInstall")
    assert calls == [
        f"python3 -m venv --clear {VENV}",
        f"{PIP} --upgrade s3q=={__version__}",  # this s3q: a rollback gets the same
        f"{PIP} --requirement $TMP/root/opt/s3q-app/requirements.txt",
        "systemctl daemon-reload",
        "chown root:s3q $TMP/root/etc/s3q/s3q.toml",
        "chown root:s3q $TMP/root/etc/s3q/s3q.env",
    ]
    installed_unit = scratch.root / "etc" / "systemd" / "system" / UNIT_CALL
    assert installed_unit.read_text() == (scratch.revision / UNIT).read_text()
    config = scratch.root / "etc" / "s3q" / "s3q.toml"
    assert config.read_text() == (scratch.revision / "deploy" / "s3q.toml").read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    config.write_text("# edited on the server\n")
    (scratch.root / "etc" / "s3q" / "s3q.env").write_text("S3Q_PROFILE=prod\n")
    installed_unit.write_text("stale\n")

    calls, _ = scratch.hook("AfterInstall")
    assert calls == [
        "venv-python -c import sys",  # the virtualenv works: refreshed, not recreated
        f"{PIP} --upgrade s3q=={__version__}",  # this s3q: a rollback gets the same
        f"{PIP} --requirement $TMP/root/opt/s3q-app/requirements.txt",
        "systemctl daemon-reload",
    ]
    assert config.read_text() == "# edited on the server\n", "the server's config is kept"
    assert installed_unit.read_text() == (scratch.revision / UNIT).read_text()

    for _ in range(2):
        calls, _ = scratch.hook("ApplicationStart")
        assert calls == [f"systemctl enable {UNIT_CALL}", f"systemctl reset-failed {UNIT_CALL}",
                         f"systemctl restart {UNIT_CALL}"]

    for _ in range(2):
        calls, out = scratch.hook("ValidateService")
        in_app = "  (cwd $TMP/root/opt/s3q-app, S3Q_PROFILE=prod)"  # s3q.env was read
        pid = f"systemctl show --property MainPID --value {UNIT_CALL}"
        check = [f"s3q {WORKER_ARGS} --check-queue", in_app]  # status --check, its flags
        # the worker's own arguments, as the service user: its handler must load
        handler = [f"setpriv --reuid=s3q --regid=s3q --init-groups -- {VENV}/bin/s3q "
                   f"{WORKER_ARGS} --check-handler", f"s3q {WORKER_ARGS} --check-handler",
                   in_app]
        active = f"systemctl is-active --quiet {UNIT_CALL}"
        assert calls == [pid, *handler, active, *check, pid, active, *check]
        assert "the handler can run: --exec 'python process.py {path}'" in out
        assert "healthy" in out


def test_the_next_deployment_stops_gracefully_and_installs_the_wheel(scratch: Scratch) -> None:
    scratch.deploy(through="ValidateService")

    # the next revision ships s3q wheels; ApplicationStop runs the installed revision's
    wheels = scratch.revision / "wheels"
    wheels.mkdir()
    for version in ("0.9.0", "0.10.0"):
        (wheels / f"s3q-{version}-py3-none-any.whl").write_bytes(b"")
    for _ in range(2):
        calls, out = scratch.hook("ApplicationStop")
        assert calls == [f"systemctl stop {UNIT_CALL}",
                         f"systemctl is-active --quiet {UNIT_CALL}"]
        assert "stopped" in out
    scratch.hook("BeforeInstall")
    scratch.install()
    calls, _ = scratch.hook("AfterInstall")
    wheel = "$TMP/root/opt/s3q-app/wheels/s3q-0.10.0-py3-none-any.whl"  # the newest
    links = "--find-links $TMP/root/opt/s3q-app/wheels"
    assert calls[:4] == [
        "venv-python -c import sys",
        f"{PIP} {links} --upgrade {wheel}",
        f"{PIP} {links} --force-reinstall --no-deps {wheel}",
        f"{PIP} {links} --requirement $TMP/root/opt/s3q-app/requirements.txt",
    ]


def test_stop_fails_when_the_worker_does_not_stop(scratch: Scratch) -> None:
    scratch.deploy(through="ApplicationStart")
    _, out = scratch.hook("ApplicationStop", ok=False, STANDIN_STUCK="1")
    assert "still active" in out


def test_validate_fails_when_the_queue_check_fails(scratch: Scratch) -> None:
    scratch.deploy(through="ApplicationStart")
    calls, out = scratch.hook("ValidateService", ok=False, STANDIN_S3Q_RC="1",
                              S3Q_VALIDATE_TIMEOUT="0")
    assert "not healthy after 0s: s3q status --check failed" in out
    assert calls[-1] == f"journalctl --unit {UNIT_CALL} --lines 30 --no-pager"


def test_validate_fails_when_the_unit_is_not_active(scratch: Scratch) -> None:
    scratch.deploy(through="AfterInstall")
    calls, out = scratch.hook("ValidateService", ok=False, S3Q_VALIDATE_TIMEOUT="0")
    assert f"{UNIT_CALL} is not active" in out
    assert "s3q status --check" not in calls


def test_validate_checks_with_the_environment_the_worker_really_has(scratch: Scratch) -> None:
    """ValidateService must check the queue with the settings of the running worker. It
    used to source /etc/s3q/s3q.env as shell code, which systemd's EnvironmentFile= is not
    (no $ expansion, no quote removal inside a value, spaces kept) and which misses the
    unit's own Environment= lines and drop-ins (`systemctl edit`): a '$' in a password made
    the hook die on 'unbound variable' -- printing the rest of the password -- and a profile
    forced in a drop-in was not seen, so the check ran against another queue."""
    scratch.deploy(through="ApplicationStart")
    (scratch.root / "etc" / "s3q" / "s3q.env").write_text(
        "S3Q_DASHBOARD_USER=ops\n"
        "S3Q_DASHBOARD_PASSWORD=hunter2$Xy9tail\n"
        "S3Q_FILTER=*request.json\n")
    # what systemd gave the worker: that file, read as systemd reads it, and a drop-in's
    # Environment=S3Q_PROFILE=prod
    environ = {
        "PATH": "/opt/s3q-app/.venv/bin:/usr/bin", "NOTIFY_SOCKET": "/run/notify",
        "S3Q_LOCK_DIR": "/run/s3q", "S3Q_PROFILE": "prod",
        "S3Q_DASHBOARD_USER": "ops", "S3Q_DASHBOARD_PASSWORD": "hunter2$Xy9tail",
        "S3Q_FILTER": "*request.json", "HTTPS_PROXY": "http://proxy:3128",
    }
    (scratch.root / "proc" / "4242" / "environ").write_bytes(
        b"".join(f"{k}={v}".encode() + b"\0" for k, v in environ.items()))
    calls, out = scratch.hook("ValidateService")
    assert "unbound variable" not in out and "Xy9" not in out
    assert "  (cwd $TMP/root/opt/s3q-app, S3Q_PROFILE=prod)" in calls
    seen = dict(kv.split("=", 1) for kv in
                (scratch.tmp / "state" / "s3q.environ").read_text().split("\0") if kv)
    for name in ("S3Q_PROFILE", "S3Q_DASHBOARD_USER", "S3Q_DASHBOARD_PASSWORD", "S3Q_FILTER",
                 "S3Q_LOCK_DIR", "HTTPS_PROXY"):
        assert seen.get(name) == environ[name], name
    # systemd's own variables of the service are not the check's
    assert "NOTIFY_SOCKET" not in seen and seen["PATH"] != environ["PATH"]


def test_validate_checks_with_s3q_env_values_unquoted_as_systemd_gives_them(
        scratch: Scratch) -> None:
    """systemd's EnvironmentFile= removes the quotes around a whole value ("..." or '...')
    and the blanks around it, and keeps quotes and spaces inside one (systemd.exec(5)); the
    hook's comment said it kept them. The check runs with what the worker got, so
    S3Q_PROFILE="prod" in s3q.env is profile prod there, as in the worker."""
    scratch.deploy(through="AfterInstall")
    (scratch.root / "etc" / "s3q" / "s3q.env").write_text(
        'S3Q_PROFILE="prod"\n'
        "S3Q_DASHBOARD_USER= 'ops team' \n"
        "S3Q_FILTER=*request.json\n"
        'S3Q_DASHBOARD_PASSWORD=say "hi"\n')
    scratch.hook("ApplicationStart")
    calls, _ = scratch.hook("ValidateService")
    assert "  (cwd $TMP/root/opt/s3q-app, S3Q_PROFILE=prod)" in calls
    seen = dict(kv.split("=", 1) for kv in
                (scratch.tmp / "state" / "s3q.environ").read_text().split("\0") if kv)
    assert (seen["S3Q_PROFILE"], seen["S3Q_DASHBOARD_USER"], seen["S3Q_FILTER"],
            seen["S3Q_DASHBOARD_PASSWORD"]) == ("prod", "ops team", "*request.json",
                                                'say "hi"')
    script = (scratch.revision / "scripts" / "validate.sh").read_text()
    assert "quotes and spaces kept" not in script
    assert "quotes around a whole value removed" in script


MISSING_SCRIPT = ("--exec: python cannot load its script 'process.py': no such file (relative "
                  "paths are from the working directory, /opt/s3q-app)")


@pytest.mark.parametrize("starting", [False, True])
def test_validate_fails_at_once_when_the_workers_handler_cannot_run(
        scratch: Scratch, starting: bool) -> None:
    """It checked the unit and the queue, and the worker only that `python` ran: a revision
    without process.py went green. The hook runs the worker's own command line with
    --check-handler, as the service user with the worker's environment (its PATH finds the
    venv's python), as soon as there is a worker process, also one still starting; s3q's
    refusal fails the deployment there and then, with the reason, not after the timeout."""
    scratch.deploy(through="AfterInstall")
    scratch.hook("ApplicationStart", STANDIN_ACTIVATING="1" if starting else "",
                 STANDIN_HANDLER="python process.py {path}")
    calls, out = scratch.hook("ValidateService", ok=False, STANDIN_CHECK_ERROR=MISSING_SCRIPT,
                              S3Q_VALIDATE_TIMEOUT="600", S3Q_VALIDATE_INTERVAL="600")
    assert f"the worker cannot run its handler: s3q: error: {MISSING_SCRIPT}" in out
    assert calls[1] == ("setpriv --reuid=s3q --regid=s3q --init-groups -- "
                        f"{VENV}/bin/s3q {WORKER_ARGS} --check-handler")
    assert "s3q status --check" not in calls
    assert calls[-1] == f"journalctl --unit {UNIT_CALL} --lines 30 --no-pager"
    seen = dict(kv.split("=", 1) for kv in
                (scratch.tmp / "state" / "s3q-check.environ").read_text().split("\0") if kv)
    assert seen["PATH"] == "/opt/s3q-app/.venv/bin:/usr/bin"  # the worker's
    assert "NOTIFY_SOCKET" not in seen  # the check is not the service


def test_validate_checks_the_handler_the_worker_really_runs(scratch: Scratch) -> None:
    """A drop-in's ExecStart counts, not the revision's unit; and a worker that is no
    `s3q ... worker` (a wrapper script) is not second-guessed."""
    scratch.deploy(through="AfterInstall")
    scratch.hook("ApplicationStart", STANDIN_HANDLER="python /srv/app/run.py {path} --fast")
    calls, _ = scratch.hook("ValidateService")
    assert "s3q worker --exec python /srv/app/run.py {path} --fast --check-handler" in calls
    (scratch.root / "proc" / "4242" / "cmdline").write_bytes(b"/opt/run-worker.sh\0")
    calls, out = scratch.hook("ValidateService", STANDIN_CHECK_ERROR="not to be called")
    assert not any("--check-handler" in c for c in calls)
    assert "no 's3q ... worker' command line: its handler is not checked" in out


def test_validate_checks_the_queue_with_the_settings_of_the_workers_command_line(
        scratch: Scratch) -> None:
    """Settings are flags of every command, so a drop-in's ExecStart may give the worker
    its queue or profile (`s3q --profile prod worker --queue s3://... --exec ...`). The
    hook checked the handler with that command line, but the queue with `s3q status
    --check` and the environment alone: another queue (s3q.toml's) than the one the worker
    runs on, found healthy, or no profile at all for the host name, a good deployment
    failed. The queue is now checked by the worker's own command line (--check-queue)."""
    scratch.deploy(through="ApplicationStart")
    worker = ["--profile", "prod", "worker", "--queue", "s3://acme-requests-prod/requests",
              "--exec", "python process.py {path}"]
    (scratch.root / "proc" / "4242" / "cmdline").write_bytes(b"".join(
        a.encode() + b"\0" for a in ["/opt/s3q-app/.venv/bin/python3",
                                     "/opt/s3q-app/.venv/bin/s3q", *worker]))
    calls, _ = scratch.hook("ValidateService")
    assert f"s3q {' '.join(worker)} --check-handler" in calls
    assert calls.count(f"s3q {' '.join(worker)} --check-queue") == 2
    assert "s3q status --check" not in calls
    # a worker process that is no `s3q ... worker` (a wrapper): the queue as status sees it
    (scratch.root / "proc" / "4242" / "cmdline").write_bytes(b"/opt/run-worker.sh\0")
    calls, _ = scratch.hook("ValidateService")
    assert calls.count("s3q status --check") == 2


def test_validate_fails_when_the_main_process_is_gone(scratch: Scratch) -> None:
    scratch.deploy(through="ApplicationStart")
    (scratch.root / "proc" / "4242" / "environ").unlink()
    calls, out = scratch.hook("ValidateService", ok=False, S3Q_VALIDATE_TIMEOUT="0")
    assert "s3q status --check" not in calls and "not healthy" in out


def test_before_install_reuses_an_existing_group(scratch: Scratch) -> None:
    (scratch.tmp / "state" / "db").write_text("group:s3q\n")
    calls, _ = scratch.hook("BeforeInstall")
    assert calls[-1] == ("useradd --system --gid s3q --home-dir /opt/s3q-app "
                         "--no-create-home --shell /usr/sbin/nologin s3q")


# --------------------------------------------------------------------------- the docs

_EMBEDDED = re.compile(
    r"<!-- generated from (\S+) by scripts/gen-ops-doc[^\n]*-->\n```\w*\n(.*?)```\n"
    r"<!-- end of generated \1 -->", re.DOTALL)


def test_operations_doc_embeds_the_generated_files() -> None:
    doc = (ROOT / "docs" / "OPERATIONS.md").read_text()
    embedded = dict(_EMBEDDED.findall(doc))
    expected = {path: text for path, (text, _) in render_bundle().items()}
    queue, ssm, region, account = DOC_IAM_EXAMPLE
    expected["iam-policy.json"] = json.dumps(
        iam_policy(queue, ssm_parameters=ssm, region=region, account=account), indent=2) + "\n"
    assert set(embedded) == set(expected), "docs/OPERATIONS.md: run scripts/gen-ops-doc"
    for name, text in expected.items():
        assert embedded[name] == text, f"docs/OPERATIONS.md: {name} is stale: " \
                                       "run scripts/gen-ops-doc"


def test_a_fix_deploys_over_a_worker_that_hit_the_start_limit(scratch: Scratch) -> None:
    """The deployed worker crash-loops (a bad setting: exit 2, restarted every 5 s); one
    restart more (an operator's, or the hook's own) within the minute and systemd refuses
    every start ("start limit hit") until `systemctl reset-failed`: the revision that fixes
    it would fail its ApplicationStart, and the deployment with it."""
    scratch.deploy("ValidateService")
    (scratch.tmp / "state" / "start-limit-hit").touch()
    # ... and its start backoff would make the fix wait first (up to 5 min, longer than
    # the hook's timeout): the hook forgets the failed starts of the revision it replaces
    backoff = scratch.root / "run" / "s3q" / "s3q-worker.start-backoff"
    assert f"S3Q_START_BACKOFF=/run/s3q/{backoff.name}\n" in (scratch.revision / UNIT).read_text()
    backoff.parent.mkdir(parents=True)
    backoff.write_text('{"failures": 9, "started": 1800000000.0}\n')
    scratch.hook("ApplicationStop")
    scratch.deploy("ApplicationStart")
    assert not backoff.exists()
    calls, _ = scratch.hook("ValidateService")
    assert f"systemctl is-active --quiet {UNIT_CALL}" in calls
