"""A ready CodeDeploy revision skeleton for running s3q workers on EC2 (``s3q deploy init``).

:func:`write_bundle` writes::

    appspec.yml                     files -> app_dir (owned by the service user), five hooks
    scripts/common.sh               settings shared by the hooks (all overridable by env vars)
    scripts/stop.sh                 ApplicationStop: systemctl stop (graceful: SIGTERM)
    scripts/before_install.sh       BeforeInstall: the service user, idempotently
    scripts/after_install.sh        AfterInstall: virtualenv, systemd unit, /etc/s3q config
    scripts/start.sh                ApplicationStart: systemctl enable + restart
    scripts/validate.sh             ValidateService: the handler loads, unit active and
                                    `s3q status --check`
    deploy/<service_name>.service   the systemd unit: runs the worker at every boot
    deploy/s3q.toml                 -> /etc/s3q/s3q.toml (prod/staging by host name)
    deploy/s3q.env                  -> /etc/s3q/s3q.env (the unit's EnvironmentFile)

The texts are templates shipped as package data (``s3q/deploy_templates``);
:func:`render_bundle` fills them in. docs/OPERATIONS.md embeds the rendered files
(``scripts/gen-ops-doc``), and a test checks that it does so verbatim.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shlex
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from s3q import __version__ as s3q_version

__all__ = ["BUNDLE_FILES", "fill_doc_sections", "ops_doc_blocks", "render_bundle",
           "unit_exec_arg", "write_bundle"]

#: (template under s3q/deploy_templates, path in the bundle, file mode). The unit's path in
#: the bundle is renamed after the service name.
BUNDLE_FILES: tuple[tuple[str, str, int], ...] = (
    ("appspec.yml", "appspec.yml", 0o644),
    ("scripts/common.sh", "scripts/common.sh", 0o644),
    ("scripts/stop.sh", "scripts/stop.sh", 0o755),
    ("scripts/before_install.sh", "scripts/before_install.sh", 0o755),
    ("scripts/after_install.sh", "scripts/after_install.sh", 0o755),
    ("scripts/start.sh", "scripts/start.sh", 0o755),
    ("scripts/validate.sh", "scripts/validate.sh", 0o755),
    ("deploy/s3q-worker.service", "deploy/{service_name}.service", 0o644),
    ("deploy/s3q.toml", "deploy/s3q.toml", 0o644),
    ("deploy/s3q.env", "deploy/s3q.env", 0o644),
)

DEFAULT_APP_DIR = "/opt/s3q-app"
DEFAULT_SERVICE_USER = "s3q"
DEFAULT_SERVICE_NAME = "s3q-worker"
DEFAULT_HANDLER_CMD = "python process.py {path}"
DEFAULT_GRACE = 30.0
#: Seconds the ValidateService hook waits for a healthy worker (its hook timeout is 60 more).
VALIDATE_TIMEOUT = 120
#: TimeoutStopSec = grace + this: time to give the jobs still running back to wait/.
STOP_MARGIN = 60
#: The stop/start hook timeouts exceed TimeoutStopSec by this much.
HOOK_MARGIN = 60
#: CodeDeploy's longest hook timeout (seconds): a longer one fails every deployment.
MAX_HOOK_TIMEOUT = 3600
#: The longest grace whose stop hooks fit in MAX_HOOK_TIMEOUT.
MAX_GRACE = MAX_HOOK_TIMEOUT - HOOK_MARGIN - STOP_MARGIN

#: The variable the unit sets to its TimeoutStopSec, for :func:`stop_timeout_problem`.
UNIT_STOP_TIMEOUT = "S3Q_UNIT_STOP_TIMEOUT"


def stop_timeout_problem(grace: float, env: Mapping[str, str]) -> str | None:
    """Under the unit ``deploy init`` writes (which tells the worker its TimeoutStopSec in
    :data:`UNIT_STOP_TIMEOUT`): what is wrong when ``grace`` leaves less than STOP_MARGIN of
    it to give the remaining jobs back (a grace raised in s3q.toml alone, which deployments
    keep), or when the variable is no time span, else None. systemd would SIGKILL such a
    worker in the middle of its drain. The value is read as systemd reads TimeoutStopSec=
    (``90``, ``90s``, ``1min 30s``, ``infinity``), since a drop-in copies it from there."""
    raw = env.get(UNIT_STOP_TIMEOUT, "").strip()
    if not raw:
        return None  # not under that unit
    try:
        timeout = _time_span(raw)
    except ValueError:
        return (f"{UNIT_STOP_TIMEOUT}={raw!r} is not a time span (as TimeoutStopSec= takes "
                f"them: 90, 90s, 1min 30s, infinity): grace {grace:g}s cannot be checked "
                "against the unit's stop timeout")
    if grace + STOP_MARGIN <= timeout:
        return None
    return (f"grace {grace:g}s leaves too little of the unit's TimeoutStopSec={timeout:g}s "
            f"({UNIT_STOP_TIMEOUT}) to give the remaining jobs back ({STOP_MARGIN} s): a stop "
            f"would be SIGKILLed in the middle of its drain (its requests come back at the "
            f"next start, or once their leases expire). Deploy a unit made with "
            f"'s3q deploy init --grace {grace:g}', or lower grace")


_SPAN_UNITS = {**dict.fromkeys(("us", "usec"), 1e-6), **dict.fromkeys(("ms", "msec"), 1e-3),
               **dict.fromkeys(("", "s", "sec", "second", "seconds"), 1.0),
               **dict.fromkeys(("m", "min", "minute", "minutes"), 60.0),
               **dict.fromkeys(("h", "hr", "hour", "hours"), 3600.0),
               **dict.fromkeys(("d", "day", "days"), 86400.0),
               **dict.fromkeys(("w", "week", "weeks"), 604800.0)}
_SPAN_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*")


def _time_span(text: str) -> float:
    """Seconds in a systemd time span (systemd.time(7)): ``90``, ``1min 30s``, ``infinity``
    (math.inf). Raises ValueError."""
    if text == "infinity":
        return math.inf
    if not re.fullmatch(f"(?:{_SPAN_PART.pattern})+", text):
        raise ValueError(text)
    total = 0.0
    for number, unit in _SPAN_PART.findall(text):
        if unit not in _SPAN_UNITS:
            raise ValueError(text)
        total += float(number) * _SPAN_UNITS[unit]
    return total


_PATH = re.compile(r"/[A-Za-z0-9._/-]*")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_SERVICE = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_TOKEN = re.compile(r"@@[A-Z_]+@@")


def render_bundle(
    *,
    app_dir: str = DEFAULT_APP_DIR,
    service_user: str = DEFAULT_SERVICE_USER,
    service_name: str = DEFAULT_SERVICE_NAME,
    handler_cmd: str = DEFAULT_HANDLER_CMD,
    grace: float = DEFAULT_GRACE,
) -> dict[str, tuple[str, int]]:
    """The bundle's files: path in the bundle -> (text, mode). Raises ValueError for values
    that would not work in the unit, the appspec or a shell script."""
    app_dir = app_dir.rstrip("/") if app_dir != "/" else app_dir
    if not _PATH.fullmatch(app_dir) or app_dir == "/" or ".." in app_dir.split("/"):
        raise ValueError(f"app_dir {app_dir!r}: expected an absolute path of letters, digits "
                         "and ._-/ (not /)")
    if not _USER.fullmatch(service_user):
        raise ValueError(f"service_user {service_user!r}: expected a system user name "
                         "([a-z_][a-z0-9_-]*, at most 31 characters)")
    if not _SERVICE.fullmatch(service_name) or service_name.endswith(".service"):
        raise ValueError(f"service_name {service_name!r}: expected letters, digits and ._- "
                         "(without .service)")
    if not 0 <= grace <= MAX_GRACE:
        raise ValueError(f"grace {grace!r}: expected a number of seconds from 0 to {MAX_GRACE} "
                         f"(a stop waits grace + {STOP_MARGIN} s, in a CodeDeploy hook of at "
                         f"most {MAX_HOOK_TIMEOUT} s)")
    timeout_stop = math.ceil(grace) + STOP_MARGIN
    values = {
        "APP_DIR": app_dir,
        "SERVICE_USER": service_user,
        "SERVICE_NAME": service_name,
        "EXEC_ARG": unit_exec_arg(handler_cmd),
        "GRACE": f"{grace:g}",
        "TIMEOUT_STOP_SEC": str(timeout_stop),
        "STOP_HOOK_TIMEOUT": str(timeout_stop + HOOK_MARGIN),
        "VALIDATE_TIMEOUT": str(VALIDATE_TIMEOUT),
        "VALIDATE_HOOK_TIMEOUT": str(VALIDATE_TIMEOUT + HOOK_MARGIN),
        # without a wheel in the revision: this very s3q (a rollback, or a server launched
        # later, must not get whatever version the index has that day)
        "PACKAGE_SPEC": f"s3q=={s3q_version}",
    }
    templates = resources.files("s3q") / "deploy_templates"
    files: dict[str, tuple[str, int]] = {}
    for template, path, mode in BUNDLE_FILES:
        text = _fill((templates / template).read_text(encoding="utf-8"), values)
        files[path.format(service_name=service_name)] = (text, mode)
    return files


def write_bundle(
    dest: Path,
    *,
    app_dir: str = DEFAULT_APP_DIR,
    service_user: str = DEFAULT_SERVICE_USER,
    service_name: str = DEFAULT_SERVICE_NAME,
    handler_cmd: str = DEFAULT_HANDLER_CMD,
    grace: float = DEFAULT_GRACE,
    force: bool = False,
) -> list[Path]:
    """Write the CodeDeploy revision skeleton into ``dest`` (created if needed) and return
    the paths written. Existing files are only overwritten with ``force``; otherwise
    nothing is written and FileExistsError names the first existing file."""
    files = render_bundle(app_dir=app_dir, service_user=service_user,
                          service_name=service_name, handler_cmd=handler_cmd, grace=grace)
    dest = Path(dest)
    targets = [(dest / rel, text, mode) for rel, (text, mode) in files.items()]
    if not force:
        for path, _, _ in targets:
            if path.exists() or path.is_symlink():
                raise FileExistsError(errno.EEXIST, "exists (use force to overwrite)",
                                      str(path))
    written: list[Path] = []
    for path, text, mode in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(mode)
        tmp.replace(path)
        written.append(path)
    return written


def unit_exec_arg(command: str) -> str:
    """``command`` as one argument of a systemd ``ExecStart=`` line: quoted for systemd
    (which splits like a shell for quotes and backslashes, but runs no shell), with ``%``
    and ``$`` escaped so that systemd passes them through unchanged."""
    if not command.strip():
        raise ValueError("handler_cmd is empty")
    if any(ord(c) < 0x20 or c == "\x7f" for c in command):
        raise ValueError(f"handler_cmd {command!r}: control characters (newlines) not allowed")
    try:
        shlex.split(command)
    except ValueError as e:
        raise ValueError(f"handler_cmd {command!r}: {e}") from None
    escaped = command.replace("%", "%%").replace("$", "$$")
    if "'" not in escaped and "\\" not in escaped:
        return f"'{escaped}'"
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fill(template: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(0)[2:-2]
        if name not in values:
            raise KeyError(f"deploy template: no value for {match.group(0)}")
        return values[name]

    return _TOKEN.sub(one, template)


# --- docs/OPERATIONS.md ---------------------------------------------------------------------

#: The example of docs/OPERATIONS.md's IAM section: iam_policy(queue, ssm_parameters=...,
#: region=..., account=...).
DOC_IAM_EXAMPLE = ("s3://acme-requests-prod/requests",
                   ["/myapp/prod/s3-access-key", "/myapp/prod/s3-secret-key"],
                   "eu-west-1", "123456789012")
_LANG = {".yml": "yaml", ".sh": "bash", ".service": "ini", ".toml": "toml", ".env": "sh",
         ".json": "json"}
_SECTION = re.compile(
    r"(<!-- generated from (?P<name>\S+) by scripts/gen-ops-doc[^\n]*-->\n)"
    r".*?"
    r"(<!-- end of generated (?P=name) -->)", re.DOTALL)


def ops_doc_blocks() -> dict[str, tuple[str, str]]:
    """What docs/OPERATIONS.md embeds: name -> (code block language, text): the bundle's
    files as :func:`render_bundle` makes them with the defaults, and ``iam-policy.json``,
    the policy of :data:`DOC_IAM_EXAMPLE`."""
    from s3q.iam import iam_policy

    blocks = {path: (_LANG.get(Path(path).suffix, ""), text)
              for path, (text, _) in render_bundle().items()}
    queue, ssm, region, account = DOC_IAM_EXAMPLE
    policy = iam_policy(queue, ssm_parameters=ssm, region=region, account=account)
    blocks["iam-policy.json"] = ("json", json.dumps(policy, indent=2) + "\n")
    return blocks


def fill_doc_sections(doc: str, blocks: dict[str, tuple[str, str]]) -> str:
    """``doc`` with every section between ``<!-- generated from NAME by
    scripts/gen-ops-doc ... -->`` and ``<!-- end of generated NAME -->`` replaced by NAME's
    block as a fenced code block. Raises KeyError for an unknown NAME."""
    def one(match: re.Match[str]) -> str:
        lang, text = blocks[match.group("name")]
        return f"{match.group(1)}```{lang}\n{text}```\n{match.group(3)}"

    return _SECTION.sub(one, doc)
