"""Every setting of s3q, described once in :data:`SETTINGS`: its name is the TOML key,
``S3Q_<NAME>`` its environment variable and ``--<name-with-dashes>`` its command-line flag.
Secrets (``secret=True``) have no flag, because argv is visible to every user of the host
(``ps``); their values are :class:`Secret`, which never shows in a repr, message or log.
:func:`coerce` turns a raw value (TOML, environment, flag) into a checked one; duration
settings take ``30s``, ``5m``, ``1h``, ``7d`` or a number of seconds. How the layers combine
is :mod:`s3q.config`'s business.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from s3q.durations import DURATION_HELP, parse_duration
from s3q.errors import ConfigError

__all__ = ["BY_NAME", "OTHER_ENV", "SETTINGS", "Secret", "Setting", "coerce", "display",
           "settings_table", "ssm_ref"]


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret string: ``repr`` is ``'***'``, ``str`` is ``***``; :meth:`reveal` gives it."""

    _value: str

    def reveal(self) -> str:
        return self._value

    @property
    def ssm_parameter(self) -> str | None:
        """The parameter name if this is a not yet resolved ``ssm:`` reference."""
        return self._value[4:] if self._value.startswith("ssm:") else None

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True)
class Setting:
    """One setting. ``type`` is str, int, float or bool; a None ``default`` means the setting
    may be unset; ``default_env`` are standard variables the default is read from."""

    name: str
    type: type[object]
    default: object
    help: str
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    default_env: tuple[str, ...] = ()
    #: A float of seconds that may also be written with units ("30s", "5m", "1h", "7d").
    duration: bool = False

    @property
    def env_var(self) -> str:
        return f"S3Q_{self.name.upper()}"

    @property
    def flag(self) -> str | None:
        """The command-line flag; None for secrets (never put them on argv)."""
        return None if self.secret else "--" + self.name.replace("_", "-")


_S = Setting
_SECRET_HELP = " Secret (no flag): literal or ssm:/param; unset = the AWS credential chain."


def _D(name: str, default: float, help_: str, **kw: Any) -> Setting:  # noqa: N802
    """A duration setting: seconds, or a number with a unit."""
    return Setting(name, float, default, help_, duration=True, **kw)


SETTINGS: tuple[Setting, ...] = (
    _S("queue", str, "./s3q-data", "Store URL: s3://bucket/prefix, file:///path or a path."),
    _D("lease_ttl", 30.0, "How long a claim stays valid without renewal (at least 5s)."),
    _S("max_attempts", int, 5, "Attempts before a request goes to failed/.", minimum=1),
    _S("concurrency", int, 4, "Requests one worker processes at once.", minimum=1),
    _D("grace", 30.0, "How long running jobs get to finish at shutdown.", minimum=0),
    _S("filter", str, "*", "Glob on request names: only matching objects are requests. "
       "Other objects in wait/ are never touched, but listed: a claim walks past up to 100 "
       "pages of them a poll, so many thousands cost LISTs at every poll (keep them "
       "elsewhere)."),
    _S("on_finish", str, "move", "Completed requests: 'move' to finish/ or 'delete'.",
       choices=("move", "delete")),
    _S("commit_before_finish", bool, False, "Commit each completion in its lease before "
       "finish/ gets the request (one more request per job): finish/ then never holds a "
       "request that runs again; without it, a worker that dies (or is fenced by "
       "recover --all) between writing finish/ and deleting the lease leaves a copy there "
       "while the request runs again, or is dead-lettered if that was its last attempt."),
    _S("worker_id", str, None, "Unique, stable worker id; unset = host name[/EC2 instance "
       "id]. Not one of the ids s3q's own commands act as: s3q-recover, s3q-recover-all, "
       "s3q-requeue, s3q-dashboard (refused with the config: every command stops at once)."),
    _D("retry_base_delay", 5.0, "Backoff before the first retry.", minimum=0),
    _D("retry_max_delay", 300.0, "Longest retry backoff.", minimum=0),
    _D("job_timeout", 0.0, "How long a handler may run before its process is killed "
       "and the attempt fails (--exec, --pool process; refused for a thread handler, which "
       "cannot be stopped); 0 = no limit.", minimum=0),
    _D("poll_interval", 10.0, "Longest wait between polls of an empty queue.", minimum=0.1),
    _D("processing_view_after", 1.0, "A request shows in processing/ once its job has run "
       "this long (jobs that end sooner never need the copy: 2 requests saved each); 0 = "
       "at once, as the seed did.", minimum=0),
    _S("breaker_threshold", int, 5, "Circuit breaker: after this many different requests "
       "failed in a row, the worker pauses claiming for breaker_pause; failing requests go "
       "back to wait/ without being charged an attempt; 0 = off.", minimum=0),
    _D("breaker_pause", 60.0, "Circuit breaker: how long the worker stops claiming when it "
       "trips (doubled at each trip in a row, up to 8 times).", minimum=1),
    _D("probe_max_age", 86400.0, "How long a worker trusts the store probe it cached in the "
       "store (.s3q/probe/result; see 's3q doctor') before probing again at start; 0 = probe "
       "at every start.", minimum=0),
    _S("events_queue", str, None, "SQS queue (URL, ARN or name) receiving the bucket's "
       "s3:ObjectCreated notifications for wait/ ('s3q events setup'): workers wake on "
       "them; unset = polling only."),
    _D("events_list_interval", 300.0, "With events_queue: longest wait between "
       "listings of an empty wait/ (the safety net for lost notifications).", minimum=1),
    _S("log_level", str, "info", "Log level.", choices=("debug", "info", "warning", "error")),
    _S("log_json", bool, None, "Log JSON lines (true/false); unset or 'auto' = automatic."),
    _S("metrics_port", int, 0, "Port of the metrics endpoint; 0 = off.", minimum=0,
       maximum=65535),
    _S("metrics_addr", str, "127.0.0.1", "Where metrics are served: HOST or HOST:PORT. "
       "'s3q worker --metrics-port P' serves its process metrics on HOST:P; 's3q exporter' "
       "serves the queue gauges on HOST:PORT (default port 9464)."),
    _S("drain_on_interruption", bool, False, "Drain (stop gracefully, giving work back) at an "
       "EC2 Spot interruption or Auto Scaling termination notice (polls the IMDS)."),
    _S("endpoint_url", str, None, "S3 endpoint (MinIO, moto, ...); unset = "
       "AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS.",
       default_env=("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")),
    _S("region", str, None, "AWS region (S3, SSM, SQS, the exporter's CloudWatch); unset = "
       "AWS_REGION, else the standard AWS configuration (AWS_DEFAULT_REGION, the profile's)."),
    _S("retry_mode", str, "standard", "botocore retry mode.", choices=("standard", "adaptive")),
    _S("batch_deletes", bool, True, "Completions that commit together (while another "
       "commit is in flight, or up to 0.1 s apart), and with the claims of the same worker "
       "(its c2), share one DeleteObjects request, each key with its own ETag, where the "
       "store's probe shows it honours those: fewer requests; false = one DeleteObject "
       "each (AWS may bill DeleteObjects, a POST, where DELETE is free)."),
    _S("ssm_endpoint_url", str, None, "SSM endpoint for ssm: secrets; unset = "
       "AWS_ENDPOINT_URL_SSM, AWS_ENDPOINT_URL, else AWS's own.",
       default_env=("AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL")),
    _S("sqs_endpoint_url", str, None, "SQS endpoint for events_queue; unset = "
       "AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL, the queue URL's own (not AWS), else AWS's.",
       default_env=("AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL")),
    _S("access_key_id", str, None, "S3 access key id." + _SECRET_HELP, secret=True),
    _S("secret_access_key", str, None, "S3 secret access key." + _SECRET_HELP, secret=True),
    _S("session_token", str, None, "S3 session token." + _SECRET_HELP, secret=True),
    _S("dashboard_token", str, None, "Bearer token of 's3q dashboard' (and its /metrics): "
       "required, or dashboard_user + dashboard_password, to bind beyond loopback. Secret "
       "(no flag): literal or ssm:/param.", secret=True),
    _S("dashboard_user", str, None, "User name of the dashboard's basic authentication "
       "(with dashboard_password)."),
    _S("dashboard_password", str, None, "Password of the dashboard's basic authentication. "
       "Secret (no flag): literal or ssm:/param.", secret=True),
    _S("profile", str, None, "The [profiles.NAME] to use; unset = by when_hostname, else "
       "'default'."),
)
BY_NAME = {s.name: s for s in SETTINGS}
#: The S3Q_* variables that are no settings (docs/CONFIG.md): a name close to one of them is
#: a typo too.
OTHER_ENV = ("S3Q_CONFIG", "S3Q_LOCK_DIR", "S3Q_IMDS", "S3Q_IMDS_ENDPOINT", "S3Q_START_BACKOFF",
             "S3Q_UNIT_STOP_TIMEOUT", "S3Q_HEARTBEAT_INTERVAL")


#: What botocore accepts as a region name (AWS's, or an S3-compatible server's own).
_REGION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
_KIND = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}


def coerce(s: Setting, raw: object, source: str, *, text: bool) -> object:
    """``raw`` (a TOML value; with ``text``, also a string to parse) as ``s``'s type, checked."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{s.name}: {why}, got {'***' if s.secret else repr(raw)} ({source})")

    value = raw.strip() if text and isinstance(raw, str) else raw
    if source.startswith("env ") and not s.secret and re.search(r"\s#", str(value)):
        raise bad("a comment after the value (systemd and docker keep it in an env file: put "
                  "it on a line of its own)")
    if s.type is bool and s.default is None and value == "auto":
        return None
    if s.duration and isinstance(value, str):  # numbers go on to the range checks below
        try:
            value = parse_duration(value)
        except ValueError:
            raise bad(f"expected a duration ({DURATION_HELP})") from None
    try:
        if isinstance(value, str) and text and s.type is not str:
            value = _BOOLS[value.lower()] if s.type is bool else (
                int(value) if s.type is int else float(value))
    except (KeyError, ValueError):
        raise bad(f"expected {_KIND[s.type]}") from None
    if s.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, s.type) or (isinstance(value, bool) and s.type is not bool):
        raise bad(f"expected {_KIND[s.type]}")
    if isinstance(value, float) and not math.isfinite(value):
        raise bad("expected a finite number")
    if s.choices and value not in s.choices:
        raise bad("expected one of " + ", ".join(map(repr, s.choices)))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if s.minimum is not None and value < s.minimum:
            raise bad(f"must be at least {s.minimum:g}")
        if s.maximum is not None and value > s.maximum:
            raise bad(f"must be at most {s.maximum:g}")
    if isinstance(value, str) and not (value and value.isprintable()):
        raise bad("must be a non-empty single line")
    if s.name.endswith("endpoint_url") and isinstance(value, str) and not (
            (url := urlsplit(value)).scheme.lower() in ("http", "https") and url.hostname):
        raise bad("expected an http:// or https:// URL")  # (botocore's, at the first client)
    if s.name == "region" and not _REGION.fullmatch(str(value)):
        raise bad("expected a region name such as eu-west-1")
    if s.name == "dashboard_user" and ":" in str(value):  # basic auth sends user:password
        raise bad("cannot hold ':' (HTTP basic authentication ends the user name there)")
    return Secret(value) if s.secret and isinstance(value, str) else value



def ssm_ref(value: object) -> str | None:
    """The SSM parameter an unresolved ``ssm:`` secret names, else None."""
    return value.ssm_parameter if isinstance(value, Secret) else None


def display(s: Setting, value: object) -> str:
    if s.secret and value is not None:
        ref = ssm_ref(value)
        return "***" if ref is None else f"ssm:{ref}"
    if value is None:
        return "(auto)" if s.name in ("worker_id", "log_json") else "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)



def settings_table() -> str:
    """The settings as a markdown table (docs/CONFIG.md embeds it; a test keeps it true)."""
    rows = ["| setting (TOML key) | environment | flag | default | meaning |",
            "|---|---|---|---|---|"]
    for s in SETTINGS:
        default = "unset" if s.default is None else f"`{s.default}`"
        if s.default_env:
            default += " (" + ", then ".join(f"`{e}`" for e in s.default_env) + ")"
        choices = f" One of {', '.join(f'`{c}`' for c in s.choices)}." if s.choices else ""
        flag = f"`{s.flag}`" if s.flag else "none (secret)"
        rows.append(f"| `{s.name}` | `{s.env_var}` | {flag} | {default} | {s.help}{choices} |")
    return "\n".join(rows) + "\n"
