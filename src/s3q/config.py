"""Configuration: one typed, frozen :class:`Config` built from layers (later ones win)::

    defaults < config file (top level) < selected profile < S3Q_* environment < flags

Every setting is described once, in :data:`SETTINGS`: its name is the TOML key, ``S3Q_<NAME>``
its environment variable and ``--<name-with-dashes>`` its command-line flag. Secrets
(``secret=True``) have no flag, because argv is visible to every user of the host (``ps``):
give them in the environment or the config file, literally or as ``"ssm:/parameter/name"``,
which :func:`resolve_secrets` reads (decrypted) from SSM Parameter Store when needed.

The config file is the one ``--config`` or ``S3Q_CONFIG`` names (it must exist), else the
first of :data:`SEARCH_PATH` that exists. ``[profiles.NAME]`` tables hold the same keys plus
``when_hostname = "<glob>"``. The profile used is ``--profile`` > ``S3Q_PROFILE`` > a
top-level ``profile`` key > the first (in file order) whose glob matches the host name > the
one named ``default``; a file with profiles of which none is chosen is an error (a server
whose host name matches nothing must not fall back to the top level), a file without
profiles uses its top level. Duration settings take ``30s``, ``5m``, ``1h``, ``7d`` or a
number of seconds. Example::

    queue = "s3://requests-staging/app"
    [profiles.prod]
    when_hostname = "*-prod-*"
    queue = "s3://requests-prod/app"
    secret_access_key = "ssm:/app/prod/s3-secret-access-key"    # and access_key_id likewise

Environment values that are empty count as not set. Every problem is one line of
:class:`~s3q.errors.ConfigError` naming the setting and where its value came from; secret
values never appear in reprs, messages or logs.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import http.client
import logging
import math
import os
import re
import socket
import threading
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from s3q.durations import DURATION_HELP, parse_duration
from s3q.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

    from s3q.backends import S3Options
    from s3q.queue import QueueConfig
    from s3q.sqs import SqsQueue

__all__ = ["SEARCH_PATH", "SETTINGS", "Config", "Secret", "Setting", "default_worker_id",
           "describe_source", "load_config", "resolve_secrets", "show_config"]

log = logging.getLogger(__name__)

#: Config files tried in order when neither ``--config`` nor ``S3Q_CONFIG`` names one.
SEARCH_PATH: tuple[str, ...] = ("s3q.toml", "/etc/s3q/s3q.toml")
IMDS_ENDPOINT = "http://169.254.169.254"


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
    _S("filter", str, "*", "Glob on request names: only matching objects are requests."),
    _S("on_finish", str, "move", "Completed requests: 'move' to finish/ or 'delete'.",
       choices=("move", "delete")),
    _S("worker_id", str, None, "Unique, stable worker id; unset = host name[/EC2 instance id]."),
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
    _S("endpoint_url", str, None, "S3 endpoint (MinIO, moto, ...); unset = AWS_ENDPOINT_URL, "
       "else AWS.", default_env=("AWS_ENDPOINT_URL",)),
    _S("region", str, None, "AWS region; unset = the standard AWS configuration."),
    _S("retry_mode", str, "standard", "botocore retry mode.", choices=("standard", "adaptive")),
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
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class Config:
    """The effective settings (see :data:`SETTINGS`); build it with :func:`load_config`."""

    queue: str
    lease_ttl: float
    max_attempts: int
    concurrency: int
    grace: float
    filter: str
    on_finish: Literal["move", "delete"]
    worker_id: str | None
    retry_base_delay: float
    retry_max_delay: float
    job_timeout: float
    poll_interval: float
    processing_view_after: float
    breaker_threshold: int
    breaker_pause: float
    probe_max_age: float
    events_queue: str | None
    events_list_interval: float
    log_level: Literal["debug", "info", "warning", "error"]
    log_json: bool | None
    metrics_port: int
    metrics_addr: str
    drain_on_interruption: bool
    endpoint_url: str | None
    region: str | None
    retry_mode: Literal["standard", "adaptive"]
    ssm_endpoint_url: str | None
    sqs_endpoint_url: str | None
    access_key_id: Secret | None
    secret_access_key: Secret | None
    session_token: Secret | None
    dashboard_token: Secret | None
    dashboard_user: str | None
    dashboard_password: Secret | None
    profile: str | None

    def queue_config(self) -> QueueConfig:
        from s3q.queue import QueueConfig

        return QueueConfig(
            lease_ttl=self.lease_ttl, max_attempts=self.max_attempts, filter=self.filter,
            on_finish=self.on_finish, retry_base_delay=self.retry_base_delay,
            retry_max_delay=self.retry_max_delay)

    def s3_options(self) -> S3Options:
        """Connection options, secrets revealed (:func:`resolve_secrets` them first)."""
        from s3q.backends import S3Options

        return S3Options(
            endpoint_url=self.endpoint_url, region=self.region, retry_mode=self.retry_mode,
            max_pool_connections=self.concurrency + 4,
            access_key_id=self._reveal("access_key_id"),
            secret_access_key=self._reveal("secret_access_key"),
            session_token=self._reveal("session_token"))

    def sqs_queue(self) -> SqsQueue | None:
        """The ``events_queue`` (secrets resolved: the same credentials as S3), or None.
        Raises ConfigError for a value that names no SQS queue."""
        if self.events_queue is None:
            return None
        from s3q.sqs import SqsError, SqsQueue, parse_queue

        try:
            return SqsQueue(parse_queue(self.events_queue), region=self.region,
                            endpoint_url=self.sqs_endpoint_url, retry_mode=self.retry_mode,
                            access_key_id=self._reveal("access_key_id"),
                            secret_access_key=self._reveal("secret_access_key"),
                            session_token=self._reveal("session_token"))
        except (ValueError, SqsError) as e:
            raise ConfigError(str(e)) from None

    def effective_worker_id(self, suffix: str | None = None) -> str:
        """``worker_id`` (or :func:`default_worker_id`, which may ask the EC2 IMDS), plus
        ``/suffix`` when given."""
        if self.worker_id is None:
            return default_worker_id(suffix)
        return f"{self.worker_id}/{suffix}" if suffix else self.worker_id

    def metrics_endpoint(self, default_port: int) -> tuple[str, int]:
        """``metrics_addr`` as (host, port): ``HOST``, ``HOST:PORT``, ``[V6]:PORT``."""
        addr = self.metrics_addr.strip()
        host, sep, port = addr.rpartition(":")
        if not sep or (addr.count(":") > 1 and not addr.startswith("[")):
            return addr.strip("[]"), default_port  # a host alone (IPv6 included)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"metrics_addr: {addr!r} is not HOST or HOST:PORT")
        return host.strip("[]"), int(port)

    def _reveal(self, name: str) -> str | None:
        secret: Secret | None = getattr(self, name)
        if secret is not None and secret.ssm_parameter is not None:
            raise ConfigError(f"{name}: {secret.reveal()} is not resolved yet "
                              "(call resolve_secrets first)")
        return None if secret is None else secret.reveal()


Layer = dict[str, tuple[object, str]]  # setting name -> (value, where it came from)


def load_config(
    flags: Mapping[str, object] | None = None, *, config_path: str | None = None,
    env: Mapping[str, str] | None = None, hostname: str | None = None,
) -> tuple[Config, dict[str, str]]:
    """The effective :class:`Config` and, for every setting, where its value came from.
    ``flags``: setting name -> value parsed by the CLI (None = not given); ``config_path``:
    the ``--config`` argument; ``env`` defaults to ``os.environ``, ``hostname`` to
    ``socket.gethostname()``. Secrets stay unresolved (see :func:`resolve_secrets`)."""
    env = os.environ if env is None else env
    path = _find_file(config_path, env)
    top, profiles = _read_file(path) if path else ({}, {})
    env_layer, flag_layer = _env_layer(env), _flag_layer(flags or {})
    explicit = flag_layer.get("profile") or env_layer.get("profile") or top.get("profile")
    profile, why = _select_profile(explicit, profiles, hostname or socket.gethostname(), path)
    merged = _default_layer(env)
    for layer in (top, profiles[profile][1] if profile else {}, env_layer, flag_layer):
        merged.update(layer)
    merged["profile"] = (profile, why)
    values: dict[str, Any] = {name: value for name, (value, _) in merged.items()}
    sources = {name: source for name, (_, source) in merged.items()}
    cfg = Config(**values)
    keys = [cfg.access_key_id, cfg.secret_access_key]
    if (cfg.dashboard_user is None) != (cfg.dashboard_password is None):
        raise ConfigError("dashboard_user, dashboard_password: give both or neither "
                          f"(dashboard_user {sources['dashboard_user']}, dashboard_password "
                          f"{sources['dashboard_password']})")
    if keys.count(None) == 1 or (cfg.session_token is not None and None in keys):
        raise ConfigError("access_key_id, secret_access_key: give both or neither (and "
                          "session_token only with them); sources: " + ", ".join(
                              f"{n} {sources[n]}" for n in _BY_NAME if _BY_NAME[n].secret))
    if cfg.events_queue is not None:
        from s3q.sqs import parse_queue

        try:
            parse_queue(cfg.events_queue)
        except ValueError as e:
            raise ConfigError(f"{e} ({sources['events_queue']})") from None
    try:
        cfg.queue_config()
    except ConfigError as e:  # cross-field rules live in QueueConfig; add the source
        raise ConfigError(f"{e} ({sources.get(str(e).split(':')[0], 'default')})") from None
    log.debug("config: file %s, profile %s (%s)", path, profile, why)
    return cfg, sources


def describe_source(name: str, sources: Mapping[str, str]) -> str:
    """Where a setting's value came from, in words, with the profile's reason when it
    came from a profile (``s3q status``'s header, the first log line of every command)."""
    source = sources.get(name, "default")
    if source == "default":
        if name == "queue":
            return ("built-in default: no --queue, no S3Q_QUEUE and no queue in a config file "
                    f"(--config, S3Q_CONFIG, {', '.join(SEARCH_PATH)})")
        return "built-in default"
    if source.startswith("profile "):
        return f"{source}; profile chosen by {sources.get('profile', '?')}"
    return source


def show_config(cfg: Config, sources: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(name, value with secrets masked, source) for every setting, in table order."""
    return [(s.name, _display(s, getattr(cfg, s.name)), sources.get(s.name, "default"))
            for s in SETTINGS]


def resolve_secrets(cfg: Config) -> Config:
    """``cfg`` with its ``ssm:`` secrets read from SSM Parameter Store (decrypted), using the
    standard AWS credential chain, ``region`` and ``ssm_endpoint_url`` (never the S3
    ``endpoint_url``: an S3-compatible server is not an SSM server). Raises ConfigError
    naming the setting and parameter."""
    refs = {s.name: ref for s in SETTINGS if s.secret
            and (ref := _ssm_ref(getattr(cfg, s.name))) is not None}
    if not refs:
        return cfg
    import boto3
    from botocore.config import Config as BotoConfig

    try:
        client: SSMClient = boto3.session.Session().client(
            "ssm", region_name=cfg.region, endpoint_url=cfg.ssm_endpoint_url,
            config=BotoConfig(retries={"mode": cfg.retry_mode, "total_max_attempts": 3},
                              connect_timeout=5, read_timeout=10))
    except Exception as e:  # e.g. no region, bad endpoint URL
        raise ConfigError(f"{', '.join(refs)}: cannot use SSM: {e}") from None
    resolved: dict[str, Any] = {n: Secret(_get_parameter(client, n, p)) for n, p in refs.items()}
    return dataclasses.replace(cfg, **resolved)


def default_worker_id(suffix: str | None = None, *, env: Mapping[str, str] | None = None,
                      hostname: str | None = None) -> str:
    """``<hostname>[/<EC2 instance id>][/<suffix>]``. The instance id comes from IMDSv2
    (``S3Q_IMDS_ENDPOINT``, default 169.254.169.254; 0.3 s timeout, asked once per process,
    failures ignored); ``S3Q_IMDS=off`` skips it."""
    env = os.environ if env is None else env
    parts = [hostname or socket.gethostname()]
    if env.get("S3Q_IMDS", "").strip().lower() != "off":
        instance = _instance_id(env.get("S3Q_IMDS_ENDPOINT") or IMDS_ENDPOINT)
        parts += [instance] if instance else []
    return "/".join(parts + ([suffix] if suffix else []))


# --- layers -------------------------------------------------------------------------------

_KIND = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}


def _coerce(s: Setting, raw: object, source: str, *, text: bool) -> object:
    """``raw`` (a TOML value; with ``text``, also a string to parse) as ``s``'s type, checked."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{s.name}: {why}, got {'***' if s.secret else repr(raw)} ({source})")

    value = raw.strip() if text and isinstance(raw, str) else raw
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
    return Secret(value) if s.secret and isinstance(value, str) else value


def _default_layer(env: Mapping[str, str]) -> Layer:
    layer: Layer = {s.name: (s.default, "default") for s in SETTINGS}
    for s in SETTINGS:
        var = next((v for v in s.default_env if env.get(v, "").strip()), None)
        if var is not None:
            layer[s.name] = (_coerce(s, env[var], f"env {var}", text=True), f"env {var}")
    return layer


def _env_layer(env: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for s in SETTINGS:
        if env.get(s.env_var, "").strip():
            source = f"env {s.env_var}"
            layer[s.name] = (_coerce(s, env[s.env_var], source, text=True), source)
    return layer


def _flag_layer(flags: Mapping[str, object]) -> Layer:
    layer: Layer = {}
    for name, raw in flags.items():
        s = _BY_NAME.get(name)
        if s is None:
            raise _unknown(name, "flags", list(_BY_NAME))
        if raw is None:
            continue
        if s.flag is None:
            raise ConfigError(f"{name}: secrets cannot be flags (argv is visible to every "
                              f"user); use {s.env_var} or the config file")
        layer[name] = (_coerce(s, raw, f"flag {s.flag}", text=True), f"flag {s.flag}")
    return layer


def _find_file(config_path: str | None, env: Mapping[str, str]) -> Path | None:
    named, how = (config_path, "--config") if config_path else (env.get("S3Q_CONFIG"), "env "
                                                                "S3Q_CONFIG")
    if named:
        if not Path(named).is_file():
            raise ConfigError(f"config file {named} (from {how}) does not exist")
        return Path(named).absolute()
    return next((Path(p).absolute() for p in SEARCH_PATH if Path(p).is_file()), None)


def _read_file(path: Path) -> tuple[Layer, dict[str, tuple[str | None, Layer]]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read it: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: invalid TOML: {e}") from None
    raw_profiles = data.pop("profiles", {})
    if not isinstance(raw_profiles, dict) or not all(
            isinstance(t, dict) for t in raw_profiles.values()):
        raise ConfigError(f"profiles: must be [profiles.NAME] tables in {path}")
    top = _table(data, f"file {path}", str(path), in_profile=False)
    profiles: dict[str, tuple[str | None, Layer]] = {}
    for name, table in raw_profiles.items():
        where = f"{path} [profiles.{name}]"
        rest = dict(table)
        glob = rest.pop("when_hostname", None)
        if glob is not None and not isinstance(glob, str):
            raise ConfigError(f"when_hostname: expected a glob string, got {glob!r} in {where}")
        profiles[name] = (glob, _table(rest, f"profile {name} ({path})", where, in_profile=True))
    return top, profiles


def _table(table: Mapping[str, object], source: str, where: str, *, in_profile: bool) -> Layer:
    layer: Layer = {}
    for key, raw in table.items():
        if in_profile and key == "profile":
            raise ConfigError(f"profile: cannot be set inside a profile ({where})")
        if key not in _BY_NAME:
            extra = ["when_hostname"] if in_profile else ["profiles"]
            raise _unknown(key, where, [*_BY_NAME, *extra])
        layer[key] = (_coerce(_BY_NAME[key], raw, source, text=False), source)
    return layer


def _unknown(key: str, where: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown setting {key!r} in {where}{hint}")


def _select_profile(explicit: tuple[object, str] | None,
                    profiles: Mapping[str, tuple[str | None, Layer]], hostname: str,
                    path: Path | None) -> tuple[str | None, str]:
    if explicit is not None:
        name, how = explicit
        if not isinstance(name, str) or name not in profiles:
            raise ConfigError(f"profile: {name!r} ({how}) is not defined in "
                              f"{path or 'a config file'} (profiles: "
                              f"{', '.join(profiles) or 'none'})")
        return name, how
    for name, (glob, _) in profiles.items():
        if glob is not None and fnmatch.fnmatchcase(hostname.lower(), glob.lower()):
            return name, f"hostname {hostname} matches {glob!r} ({path})"
    if "default" in profiles:
        return "default", f"profile named 'default' ({path})"
    if profiles:  # a production server must never fall back to the top level silently
        patterns = ", ".join(f"{name} {glob!r}" if glob is not None else
                             f"{name} (no when_hostname)"
                             for name, (glob, _) in profiles.items())
        raise ConfigError(
            f"profile: no profile of {path} matches the host name {hostname!r} "
            f"(when_hostname: {patterns}) and there is no [profiles.default]; set "
            "S3Q_PROFILE or --profile, or add a profile with when_hostname = \"*\"")
    return None, "default"


def _display(s: Setting, value: object) -> str:
    if s.secret and value is not None:
        ref = _ssm_ref(value)
        return "***" if ref is None else f"ssm:{ref}"
    if value is None:
        return "(auto)" if s.name in ("worker_id", "log_json") else "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


# --- SSM and IMDS ---------------------------------------------------------------------------

def _ssm_ref(value: object) -> str | None:
    return value.ssm_parameter if isinstance(value, Secret) else None


def _get_parameter(client: SSMClient, name: str, parameter: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    log.debug("%s: reading SSM parameter %s", name, parameter)
    try:
        with _quiet_aws_logs():  # botocore logs response bodies, i.e. the secret, at DEBUG
            value = client.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "error")
        why = "no such parameter" if code == "ParameterNotFound" else code
        raise ConfigError(f"{name}: cannot read SSM parameter {parameter!r}: {why}") from None
    except BotoCoreError as e:
        raise ConfigError(f"{name}: cannot read SSM parameter {parameter!r}: {e}") from None
    except Exception as e:  # e.g. an unparsable answer: its text might hold the secret
        raise ConfigError(f"{name}: cannot read SSM parameter {parameter!r}: "
                          f"{type(e).__name__}") from None
    if not value:
        raise ConfigError(f"{name}: SSM parameter {parameter!r} is empty")
    return value


@contextmanager
def _quiet_aws_logs() -> Iterator[None]:
    """Drop this thread's records from the AWS SDK's and urllib3's loggers meanwhile."""
    me = threading.get_ident()

    def drop(record: logging.LogRecord) -> bool:
        return record.thread is not None and record.thread != me

    names = {"botocore", "boto3", "urllib3"}
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
               if n.split(".")[0] in names] + [logging.getLogger(n) for n in names]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


@functools.lru_cache(maxsize=8)
def _instance_id(endpoint: str) -> str | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    base = endpoint.rstrip("/")
    try:
        ask = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        with opener.open(ask, timeout=0.3) as answer:
            token = answer.read(1000).decode()
        ask = urllib.request.Request(f"{base}/latest/meta-data/instance-id",
                                     headers={"X-aws-ec2-metadata-token": token})
        with opener.open(ask, timeout=0.3) as answer:
            instance = answer.read(100).decode().strip()
    except (OSError, ValueError, http.client.HTTPException):
        return None
    return instance if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", instance) else None


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
