"""Configuration: one typed, frozen :class:`Config` built from layers (later ones win)::

    defaults < config file (top level) < selected profile < S3Q_* environment < flags

Every setting is described once, in :data:`s3q.settings.SETTINGS` (name = TOML key,
``S3Q_<NAME>`` = environment variable, ``--<name-with-dashes>`` = flag). Secrets have no flag:
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
import logging
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from s3q.errors import ConfigError
from s3q.running import SETTLING
from s3q.settings import BY_NAME, OTHER_ENV, SETTINGS, Secret, Setting, coerce, display, ssm_ref
from s3q.workerids import check_worker_id, default_worker_id

if TYPE_CHECKING:
    from s3q.backends import S3Options
    from s3q.queue import QueueConfig
    from s3q.sqs import SqsQueue

__all__ = ["SEARCH_PATH", "SETTINGS", "Config", "Secret", "Setting", "default_worker_id",
           "describe_source", "load_config", "resolve_secrets", "show_config"]

log = logging.getLogger(__name__)

#: Config files tried in order when neither ``--config`` nor ``S3Q_CONFIG`` names one.
SEARCH_PATH: tuple[str, ...] = ("s3q.toml", "/etc/s3q/s3q.toml")


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
    commit_before_finish: bool
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
    batch_deletes: bool
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
            on_finish=self.on_finish, commit_before_finish=self.commit_before_finish,
            retry_base_delay=self.retry_base_delay,
            retry_max_delay=self.retry_max_delay, batch_deletes=self.batch_deletes)

    def s3_options(self) -> S3Options:
        """Connection options, secrets revealed (:func:`resolve_secrets` them first)."""
        from s3q.backends import S3Options

        return S3Options(
            endpoint_url=self.endpoint_url, region=self.region, retry_mode=self.retry_mode,
            # a request in flight per slot and per settler thread, plus the lease keeper,
            # the scanner, the registry and the pause flag
            max_pool_connections=(1 + SETTLING) * self.concurrency + 4,
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
        if not host.strip("[]"):  # ':9464', as Prometheus' own flags allow
            raise ConfigError(f"metrics_addr: {addr!r} names no host: give 127.0.0.1 (this "
                              f"machine only) or 0.0.0.0 (every interface) before the port")
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
                              f"{n} {sources[n]}" for n in BY_NAME if BY_NAME[n].secret))
    if cfg.worker_id is not None:  # a worker of a reserved id fails at start, not later
        try:
            check_worker_id(cfg.worker_id)
        except ConfigError as e:
            raise ConfigError(f"{e} ({sources['worker_id']})") from None
    if cfg.events_queue is not None:
        from s3q.sqs import parse_queue

        try:
            parse_queue(cfg.events_queue)
        except ValueError as e:
            raise ConfigError(f"{e} ({sources['events_queue']})") from None
    try:
        cfg.queue_config()
    except ConfigError as e:  # cross-field rules live in QueueConfig; add the sources
        name = str(e).split(":")[0]
        where = sources.get(name, "default")
        base = "retry_base_delay"
        if name == "retry_max_delay" and sources[base] != where:
            shown = display(BY_NAME[base], cfg.retry_base_delay)
            where += f"; {base} {shown} from {sources[base]}"
        raise ConfigError(f"{e} ({where})") from None
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
    return [(s.name, display(s, getattr(cfg, s.name)), sources.get(s.name, "default"))
            for s in SETTINGS]


def resolve_secrets(cfg: Config) -> Config:
    """``cfg`` with its ``ssm:`` secrets read from SSM Parameter Store (decrypted), using the
    standard AWS credential chain, ``region`` and ``ssm_endpoint_url`` (never the S3
    ``endpoint_url``: an S3-compatible server is not an SSM server). Raises ConfigError
    naming the setting and parameter."""
    refs = {s.name: ref for s in SETTINGS if s.secret
            and (ref := ssm_ref(getattr(cfg, s.name))) is not None}
    if not refs:
        return cfg
    from s3q.ssm import read_parameters

    values = read_parameters(refs, region=cfg.region, endpoint_url=cfg.ssm_endpoint_url,
                             retry_mode=cfg.retry_mode)
    resolved: dict[str, Any] = {name: Secret(value) for name, value in values.items()}
    return dataclasses.replace(cfg, **resolved)


# --- layers -------------------------------------------------------------------------------

def _default_layer(env: Mapping[str, str]) -> Layer:
    layer: Layer = {s.name: (s.default, "default") for s in SETTINGS}
    for s in SETTINGS:
        var = next((v for v in s.default_env if env.get(v, "").strip()), None)
        if var is not None:
            layer[s.name] = (coerce(s, env[var], f"env {var}", text=True), f"env {var}")
    return layer


def _env_layer(env: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for s in SETTINGS:
        if env.get(s.env_var, "").strip():
            source = f"env {s.env_var}"
            layer[s.name] = (coerce(s, env[s.env_var], source, text=True), source)
    _warn_misspelled(env)
    return layer


_WARNED: set[str] = set()


def _warn_misspelled(env: Mapping[str, str]) -> None:
    """An ``S3Q_*`` variable that is no setting's but close to one's name or to one of
    OTHER_ENV (a typo in /etc/s3q/s3q.env) is ignored: say so, once per process. Other
    ``S3Q_*`` names (the handler's, the tests') are left alone."""
    known = [s.env_var for s in SETTINGS] + list(OTHER_ENV)
    for name in env:
        if not name.startswith("S3Q_") or name in known or name in _WARNED:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            _WARNED.add(name)
            log.warning("%s is not an s3q setting and is ignored: did you mean %s?", name,
                        close[0], extra={"event": "unknown_setting", "variable": name})


def _flag_layer(flags: Mapping[str, object]) -> Layer:
    layer: Layer = {}
    for name, raw in flags.items():
        s = BY_NAME.get(name)
        if s is None:
            raise _unknown(name, "flags", list(BY_NAME))
        if raw is None:
            continue
        if s.flag is None:
            raise ConfigError(f"{name}: secrets cannot be flags (argv is visible to every "
                              f"user); use {s.env_var} or the config file")
        layer[name] = (coerce(s, raw, f"flag {s.flag}", text=True), f"flag {s.flag}")
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
        if key not in BY_NAME:
            extra = ["when_hostname"] if in_profile else ["profiles"]
            raise _unknown(key, where, [*BY_NAME, *extra])
        layer[key] = (coerce(BY_NAME[key], raw, source, text=False), source)
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


