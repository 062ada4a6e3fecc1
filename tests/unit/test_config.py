"""s3q.config: layers and their precedence, profiles, provenance, validation, secrets (masking
and ``ssm:`` resolution against moto's SSM), and the default worker id (IMDSv2, served locally).
"""

from __future__ import annotations

import dataclasses
import http.server
import logging
import re
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import boto3
import pytest

from s3q import config as config_module
from s3q.config import (
    SETTINGS,
    Config,
    Secret,
    Setting,
    default_worker_id,
    describe_source,
    load_config,
    resolve_secrets,
    show_config,
)
from s3q.durations import parse_duration
from s3q.errors import ConfigError
from s3q.imds import instance_id
from s3q.queue import QueueConfig
from s3q.settings import OTHER_ENV
from tests.quietserver import QuietServer
from tests.s3server import S3Endpoint

NO_IMDS = {"S3Q_IMDS": "off"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory; no file of the host's is found; the IMDS is never asked."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config_module, "SEARCH_PATH", ("s3q.toml",))
    monkeypatch.setenv("S3Q_IMDS", "off")


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def load(flags: dict[str, object] | None = None, *, env: dict[str, str] | None = None,
         config_path: str | None = None, hostname: str = "web-staging-1",
         ) -> tuple[Config, dict[str, str]]:
    return load_config(flags, config_path=config_path, env=env or {}, hostname=hostname)


def error(*args: object, **kwargs: object) -> str:
    """The one-line message of the ConfigError ``load`` raises."""
    with pytest.raises(ConfigError) as info:
        load(*args, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert info.value.__cause__ is None and "Traceback" not in message
    return message


LAYERED = """\
    lease_ttl = 11
    max_attempts = 2
    concurrency = 3
    [profiles.prod]
    when_hostname = "*-prod-*"
    lease_ttl = 12
    max_attempts = 7
    [profiles.staging]
    when_hostname = "*-staging-*"
    lease_ttl = 13
    [profiles.default]
    lease_ttl = 14
"""


# --- the table ---------------------------------------------------------------------------------

def test_settings_table_matches_config_fields() -> None:
    assert [s.name for s in SETTINGS] == [f.name for f in dataclasses.fields(Config)]
    for s in SETTINGS:
        assert s.help and s.env_var == "S3Q_" + s.name.upper()
        assert s.flag == (None if s.secret else "--" + s.name.replace("_", "-"))
    assert {s.name for s in SETTINGS if s.secret} == {
        "access_key_id", "secret_access_key", "session_token", "dashboard_token",
        "dashboard_password"}


def test_a_misspelled_s3q_variable_is_named_with_the_setting_it_resembles(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in /etc/s3q/s3q.env leaves the default in force: the log says which variable
    is ignored and what it resembles (once per process); other S3Q_* names (the handler's
    S3Q_REQUEST_NAME, S3Q_LOCK_DIR, the tests' own) are not mistaken for typos."""
    monkeypatch.setattr(config_module, "_WARNED", set())
    env = {"S3Q_CONCURENCY": "16", "S3Q_MAX_ATTEMPT": "1", "S3Q_REQUEST_NAME": "a.json",
           "S3Q_LOCK_DIR": "/run/s3q", "S3Q_TEST_SLEEP": "1", "S3Q_LEASE_TTL": "60"}
    with caplog.at_level(logging.WARNING, logger="s3q.config"):
        cfg, _ = load(env=env)
        load(env=env)
    assert (cfg.concurrency, cfg.max_attempts, cfg.lease_ttl) == (4, 5, 60.0)
    assert sorted(r.getMessage() for r in caplog.records) == [
        "S3Q_CONCURENCY is not an s3q setting and is ignored: did you mean S3Q_CONCURRENCY?",
        "S3Q_MAX_ATTEMPT is not an s3q setting and is ignored: did you mean S3Q_MAX_ATTEMPTS?"]


def test_a_misspelled_variable_of_the_documented_others_is_named_too(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3Q_CONFG=/etc/s3q/prod.toml (a typo of S3Q_CONFIG, documented next to the settings)
    was ignored in silence: the command read ./s3q.toml or /etc/s3q/s3q.toml instead, or
    ran on the built-in local queue; S3Q_LOCKDIR left the host lock where a second worker
    of the id would not find it."""
    monkeypatch.setattr(config_module, "_WARNED", set())
    env = {"S3Q_CONFG": "/etc/s3q/prod.toml", "S3Q_LOCKDIR": "/run/s3q",
           "S3Q_IMDS": "off", "S3Q_UNIT_STOP_TIMEOUT": "90"}
    with caplog.at_level(logging.WARNING, logger="s3q.config"):
        load(env=env)
    assert sorted(r.getMessage() for r in caplog.records) == [
        "S3Q_CONFG is not an s3q setting and is ignored: did you mean S3Q_CONFIG?",
        "S3Q_LOCKDIR is not an s3q setting and is ignored: did you mean S3Q_LOCK_DIR?"]
    doc = (Path(__file__).parents[2] / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    others = doc.split("## Environment variables that are not settings")[1]
    assert set(re.findall(r"^\| `(S3Q_\w+)`", others, re.M)) == set(OTHER_ENV)


def test_defaults() -> None:
    cfg, sources = load()
    assert set(sources.values()) == {"default"}
    assert (cfg.queue, cfg.lease_ttl, cfg.max_attempts, cfg.concurrency, cfg.grace) == (
        "./s3q-data", 30.0, 5, 4, 30.0)
    assert (cfg.filter, cfg.on_finish, cfg.worker_id, cfg.log_level, cfg.log_json) == (
        "*", "move", None, "info", None)
    assert (cfg.retry_base_delay, cfg.retry_max_delay, cfg.job_timeout, cfg.poll_interval,
            cfg.metrics_port) == (5.0, 300.0, 0.0, 10.0, 0)
    assert (cfg.endpoint_url, cfg.region, cfg.retry_mode, cfg.ssm_endpoint_url) == (
        None, None, "standard", None)
    assert (cfg.access_key_id, cfg.secret_access_key, cfg.session_token, cfg.profile) == (
        None, None, None, None)
    assert cfg.queue_config() == QueueConfig()


# --- layers, profiles, provenance ----------------------------------------------------------------

def test_every_layer_overrides_the_one_below(tmp_path: Path) -> None:
    path = write(tmp_path / "s3q.toml", LAYERED)
    file_, prof = f"file {path}", f"profile prod ({path})"
    cfg, src = load(hostname="app-prod-3")
    assert (cfg.lease_ttl, cfg.max_attempts, cfg.concurrency, cfg.grace) == (12, 7, 3, 30)
    assert (src["lease_ttl"], src["max_attempts"], src["concurrency"], src["grace"]) == (
        prof, prof, file_, "default")
    env = {"S3Q_LEASE_TTL": "20", "S3Q_MAX_ATTEMPTS": "9"}
    cfg, src = load(env=env, hostname="app-prod-3")
    assert (cfg.lease_ttl, cfg.max_attempts) == (20.0, 9)
    assert src["lease_ttl"] == "env S3Q_LEASE_TTL"
    cfg, src = load({"lease_ttl": 25.0, "max_attempts": None}, env=env, hostname="app-prod-3")
    assert (cfg.lease_ttl, cfg.max_attempts) == (25.0, 9)  # None = flag not given
    assert (src["lease_ttl"], src["max_attempts"]) == ("flag --lease-ttl", "env S3Q_MAX_ATTEMPTS")
    assert src["profile"] == f"hostname app-prod-3 matches '*-prod-*' ({path})"
    assert isinstance(cfg.lease_ttl, float) and isinstance(cfg.max_attempts, int)


@pytest.mark.parametrize(
    ("flags", "env", "hostname", "want"),
    [
        ({}, {}, "app-prod-3", ("prod", "hostname app-prod-3 matches '*-prod-*' ({path})")),
        ({}, {}, "APP-STAGING-1",
         ("staging", "hostname APP-STAGING-1 matches '*-staging-*' ({path})")),
        ({}, {}, "laptop", ("default", "profile named 'default' ({path})")),
        ({}, {"S3Q_PROFILE": "staging"}, "app-prod-3", ("staging", "env S3Q_PROFILE")),
        ({"profile": "prod"}, {"S3Q_PROFILE": "staging"}, "laptop", ("prod", "flag --profile")),
    ],
)
def test_profile_selection(tmp_path: Path, flags: dict[str, object], env: dict[str, str],
                           hostname: str, want: tuple[str, str]) -> None:
    expected, why = want
    path = write(tmp_path / "s3q.toml", LAYERED)
    cfg, src = load(flags, env=env, hostname=hostname)
    assert cfg.profile == expected
    assert src["profile"] == why.format(path=path)
    assert cfg.lease_ttl == {"prod": 12, "staging": 13, "default": 14}[expected]


def test_first_matching_profile_in_file_order_wins(tmp_path: Path) -> None:
    write(tmp_path / "s3q.toml", """\
        [profiles.b]
        when_hostname = "web-*"
        [profiles.a]
        when_hostname = "*"
    """)
    assert load(hostname="web-1")[0].profile == "b"
    assert load(hostname="db-1")[0].profile == "a"


def test_profiles_that_match_no_host_name_are_an_error(tmp_path: Path) -> None:
    """A production server whose host name matches no profile must not silently serve the
    top level (or the built-in ./s3q-data): the error names the host and the patterns."""
    path = write(tmp_path / "s3q.toml", """\
        queue = "s3://b/p"
        [profiles.prod]
        when_hostname = "*-prod-*"
        [profiles.manual]
        queue = "s3://b/manual"
    """)
    assert error(hostname="ip-10-0-0-7") == (
        f"profile: no profile of {path} matches the host name 'ip-10-0-0-7' (when_hostname: "
        "prod '*-prod-*', manual (no when_hostname)) and there is no [profiles.default]; set "
        'S3Q_PROFILE or --profile, or add a profile with when_hostname = "*"')
    assert load(hostname="ip-10-0-0-7", env={"S3Q_PROFILE": "manual"})[0].queue == \
        "s3://b/manual"
    write(tmp_path / "s3q.toml", 'queue = "s3://b/p"\n')  # no profiles: the top level
    cfg, src = load(hostname="laptop")
    assert (cfg.profile, src["profile"], cfg.queue, src["queue"]) == (
        None, "default", "s3://b/p", f"file {path}")


def test_describe_source_says_where_the_queue_came_from(tmp_path: Path) -> None:
    path = write(tmp_path / "s3q.toml", LAYERED.replace("[profiles.prod]\n",
                                                        '[profiles.prod]\nqueue = "s3://p/q"\n'))
    _, src = load(hostname="app-prod-3")
    assert describe_source("queue", src) == (
        f"profile prod ({path}); profile chosen by hostname app-prod-3 matches '*-prod-*' "
        f"({path})")
    _, src = load(hostname="app-prod-3", env={"S3Q_QUEUE": "s3://e/q"})
    assert describe_source("queue", src) == "env S3Q_QUEUE"
    (tmp_path / "s3q.toml").unlink()
    _, src = load()
    assert describe_source("queue", src).startswith(
        "built-in default: no --queue, no S3Q_QUEUE and no queue in a config file")
    assert describe_source("grace", src) == "built-in default"


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("1.5", 1.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0),
    ("7d", 604800.0), ("1h30m", 5400.0), (" 2w ", 1209600.0), ("1:30", 90.0), (0, 0.0),
    (2.5, 2.5)])
def test_durations_take_units(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5s", "-1", "inf", "nan", "5x", True, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_every_seconds_setting_takes_units(tmp_path: Path) -> None:
    durations = [s.name for s in SETTINGS if s.duration]
    assert set(durations) == {"lease_ttl", "grace", "retry_base_delay", "retry_max_delay",
                              "job_timeout", "poll_interval", "breaker_pause",
                              "processing_view_after", "probe_max_age",
                              "events_list_interval"}
    assert all(s.type is float for s in SETTINGS if s.duration)
    cfg, _ = load({"lease_ttl": "1m"}, env={"S3Q_GRACE": "2m", "S3Q_RETRY_MAX_DELAY": "1h"})
    assert (cfg.lease_ttl, cfg.grace, cfg.retry_max_delay) == (60.0, 120.0, 3600.0)
    write(tmp_path / "s3q.toml", 'job_timeout = "15m"\npoll_interval = 5\n')
    cfg, _ = load()
    assert (cfg.job_timeout, cfg.poll_interval) == (900.0, 5.0)
    assert error({"lease_ttl": "3s"}) == \
        "lease_ttl: must be at least 5 seconds (got 3.0) (flag --lease-ttl)"


def test_top_level_profile_key(tmp_path: Path) -> None:
    path = write(tmp_path / "s3q.toml", "")
    write(tmp_path / "s3q.toml", 'profile = "prod"\n[profiles.prod]\nqueue = "s3://p/q"\n')
    cfg, src = load(hostname="laptop")
    assert (cfg.profile, src["profile"], cfg.queue) == ("prod", f"file {path}", "s3://p/q")


def test_endpoint_defaults_come_from_the_standard_aws_variables(tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL": "http://minio:9000"}
    cfg, src = load(env=env)
    assert (cfg.endpoint_url, src["endpoint_url"]) == ("http://minio:9000", "env AWS_ENDPOINT_URL")
    assert (cfg.ssm_endpoint_url, src["ssm_endpoint_url"]) == (
        "http://minio:9000", "env AWS_ENDPOINT_URL")
    cfg, src = load(env={**env, "AWS_ENDPOINT_URL_SSM": "http://ssm:1"})
    assert (cfg.ssm_endpoint_url, src["ssm_endpoint_url"]) == (
        "http://ssm:1", "env AWS_ENDPOINT_URL_SSM")
    assert (cfg.sqs_endpoint_url, src["sqs_endpoint_url"]) == (
        "http://minio:9000", "env AWS_ENDPOINT_URL")
    cfg, src = load(env={**env, "AWS_ENDPOINT_URL_SQS": "http://sqs:1"})
    assert (cfg.sqs_endpoint_url, src["sqs_endpoint_url"]) == (
        "http://sqs:1", "env AWS_ENDPOINT_URL_SQS")
    path = write(tmp_path / "s3q.toml", 'endpoint_url = "http://file:9000"\n')
    cfg, src = load(env=env)
    assert (cfg.endpoint_url, src["endpoint_url"]) == ("http://file:9000", f"file {path}")


def test_the_s3_endpoint_variable_wins_over_the_generic_one_as_in_boto3() -> None:
    """AWS_ENDPOINT_URL_S3 (boto3's variable of the S3 endpoint alone) next to
    AWS_ENDPOINT_URL: boto3 sends S3 requests to the former, s3q passed the latter to it
    explicitly, so the queue was looked for on another server than every other AWS tool of
    the host uses (and `config show` named the wrong one); with AWS_ENDPOINT_URL_S3 alone
    it said '(none)'."""
    env = {"AWS_ENDPOINT_URL": "http://localstack:4566", "AWS_ENDPOINT_URL_S3": "http://s3:1"}
    cfg, src = load(env=env)
    assert (cfg.endpoint_url, src["endpoint_url"]) == ("http://s3:1", "env AWS_ENDPOINT_URL_S3")
    assert cfg.ssm_endpoint_url == cfg.sqs_endpoint_url == "http://localstack:4566"
    cfg, src = load(env={"AWS_ENDPOINT_URL_S3": "http://s3:1"})
    assert (cfg.endpoint_url, src["endpoint_url"]) == ("http://s3:1", "env AWS_ENDPOINT_URL_S3")


def test_env_and_flag_values_are_parsed() -> None:
    env = {"S3Q_LOG_JSON": "yes", "S3Q_METRICS_PORT": " 9100 ", "S3Q_ON_FINISH": "delete",
           "S3Q_CONCURRENCY": "", "S3Q_JOB_TIMEOUT": "1.5"}
    cfg, src = load({"grace": "7", "log_level": "debug"}, env=env)
    assert (cfg.log_json, cfg.metrics_port, cfg.on_finish, cfg.job_timeout) == (
        True, 9100, "delete", 1.5)
    assert (cfg.concurrency, src["concurrency"]) == (4, "default")  # empty = not set
    assert (cfg.grace, cfg.log_level, src["grace"]) == (7.0, "debug", "flag --grace")
    assert load(env={"S3Q_LOG_JSON": "auto"})[0].log_json is None
    assert load({"log_json": False})[0].log_json is False


def test_config_file_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    etc = write(tmp_path / "etc" / "s3q.toml", "concurrency = 2\n")
    monkeypatch.setattr(config_module, "SEARCH_PATH", ("s3q.toml", etc))
    assert load()[1]["concurrency"] == f"file {etc}"
    here = write(tmp_path / "s3q.toml", "concurrency = 3\n")
    assert load()[1]["concurrency"] == f"file {here}"
    named = write(tmp_path / "named.toml", "concurrency = 5\n")
    assert load(env={"S3Q_CONFIG": named})[0].concurrency == 5
    other = write(tmp_path / "other.toml", "concurrency = 6\n")
    assert load(env={"S3Q_CONFIG": named}, config_path=other)[0].concurrency == 6
    assert "missing.toml (from --config) does not exist" in error(config_path="missing.toml")
    assert "(from env S3Q_CONFIG) does not exist" in error(env={"S3Q_CONFIG": "nope.toml"})


# --- validation ----------------------------------------------------------------------------------

def test_unknown_keys_suggest_the_setting(tmp_path: Path) -> None:
    path = write(tmp_path / "s3q.toml", "[profiles.prod]\nlease_tl = 3\n")
    assert error() == (f"unknown setting 'lease_tl' in {path} [profiles.prod] "
                       "(did you mean 'lease_ttl'?)")
    write(tmp_path / "s3q.toml", "concurency = 3\n")
    assert error() == f"unknown setting 'concurency' in {path} (did you mean 'concurrency'?)"
    write(tmp_path / "s3q.toml", "[profiles.x]\nwhen_hostnme = 'a'\n")
    assert "(did you mean 'when_hostname'?)" in error()
    write(tmp_path / "s3q.toml", "[profiles.x]\nprofile = 'y'\n")
    assert error().startswith("profile: cannot be set inside a profile")
    (tmp_path / "s3q.toml").unlink()
    assert error({"lease_tl": 3}) == (
        "unknown setting 'lease_tl' in flags (did you mean 'lease_ttl'?)")


@pytest.mark.parametrize(
    ("toml", "env", "flags", "expected"),
    [
        ('lease_ttl = "abc"', {}, {}, "lease_ttl: expected a duration (seconds, or a number "
         "with a unit: 30s, 5m, 1h, 7d, 1h30m), got 'abc' (file {path})"),
        ("", {"S3Q_LEASE_TTL": "abc"}, {}, "lease_ttl: expected a duration (seconds, or a "
         "number with a unit: 30s, 5m, 1h, 7d, 1h30m), got 'abc' (env S3Q_LEASE_TTL)"),
        ("[profiles.p]\nwhen_hostname = '*'\nmax_attempts = 2.5", {}, {},
         "max_attempts: expected an integer, got 2.5 (profile p ({path}))"),
        ("log_json = 1", {}, {}, "log_json: expected true or false, got 1 (file {path})"),
        ("concurrency = true", {}, {}, "concurrency: expected an integer, got True (file {path})"),
        ('on_finish = "moved"', {}, {},
         "on_finish: expected one of 'move', 'delete', got 'moved' (file {path})"),
        ("", {"S3Q_RETRY_MODE": "legacy"}, {},
         "retry_mode: expected one of 'standard', 'adaptive', got 'legacy' (env S3Q_RETRY_MODE)"),
        ("", {}, {"log_level": "loud"},
         "log_level: expected one of 'debug', 'info', 'warning', 'error', got 'loud' "
         "(flag --log-level)"),
        ("grace = -1", {}, {}, "grace: must be at least 0, got -1 (file {path})"),
        ("", {}, {"concurrency": 0}, "concurrency: must be at least 1, got 0 (flag --concurrency)"),
        ("metrics_port = 70000", {}, {},
         "metrics_port: must be at most 65535, got 70000 (file {path})"),
        ("", {"S3Q_JOB_TIMEOUT": "nan"}, {},
         "job_timeout: expected a duration (seconds, or a number with a unit: 30s, 5m, 1h, "
         "7d, 1h30m), got 'nan' (env S3Q_JOB_TIMEOUT)"),
        ("", {}, {"max_attempts": "1.5"},
         "max_attempts: expected an integer, got '1.5' (flag --max-attempts)"),
        ('filter = ""', {}, {}, "filter: must be a non-empty single line, got '' (file {path})"),
        ("lease_ttl = 1", {}, {}, "lease_ttl: must be at least 5 seconds (got 1.0) (file {path})"),
        ("retry_base_delay = 10\nretry_max_delay = 5", {}, {},
         "retry_max_delay: must be >= retry_base_delay >= 0 (got 5.0) (file {path})"),
        ("", {"AWS_ENDPOINT_URL": "a\x01b"}, {},
         "endpoint_url: must be a non-empty single line, got 'a\\x01b' (env AWS_ENDPOINT_URL)"),
        ("[profiles.a]\n[profiles.b]", {"S3Q_PROFILE": "nope"}, {},
         "profile: 'nope' (env S3Q_PROFILE) is not defined in {path} (profiles: a, b)"),
        ('events_queue = "q.fifo"', {}, {},
         "events_queue: 'q.fifo' is a FIFO queue; S3 sends event notifications to standard "
         "queues only (file {path})"),
        ("", {"S3Q_EVENTS_QUEUE": "arn:aws:sns:x:1:t"}, {},
         "events_queue: 'arn:aws:sns:x:1:t' is not an SQS queue ARN (env S3Q_EVENTS_QUEUE)"),
        ("", {}, {"events_list_interval": "0.5"},
         "events_list_interval: must be at least 1, got '0.5' (flag --events-list-interval)"),
    ],
)
def test_bad_values_name_the_setting_and_source(tmp_path: Path, toml: str, env: dict[str, str],
                                                flags: dict[str, object], expected: str) -> None:
    path = write(tmp_path / "s3q.toml", toml + "\n")
    assert error(flags, env=env) == expected.format(path=path)


def test_a_cross_field_error_names_where_each_of_its_settings_came_from(tmp_path: Path) -> None:
    """retry_base_delay raised above the default retry_max_delay (in the environment, or a
    profile): the error said only '(default)', the source of the setting left alone, and not
    where the one that was set came from."""
    assert error(env={"S3Q_RETRY_BASE_DELAY": "10m"}) == (
        "retry_max_delay: must be >= retry_base_delay >= 0 (got 300.0) (default; "
        "retry_base_delay 600 from env S3Q_RETRY_BASE_DELAY)")
    path = write(tmp_path / "s3q.toml", "retry_max_delay = 60\n[profiles.p]\n"
                 "when_hostname = '*'\nretry_base_delay = 120\n")
    assert error() == (f"retry_max_delay: must be >= retry_base_delay >= 0 (got 60.0) (file "
                       f"{path}; retry_base_delay 120 from profile p ({path}))")


@pytest.mark.parametrize("url", ["s3://acme/requests # prod", "s3://acme/requests?x=1",
                                 "s3://acme/requests/#", "file:///srv/queue#prod"])
def test_a_queue_url_with_a_fragment_or_query_is_refused(url: str) -> None:
    """systemd's EnvironmentFile keeps a comment after a value: S3Q_QUEUE=s3://acme/requests
    # prod became the queue s3://acme/requests<space> (the URL's fragment dropped), whose
    empty wait/ the workers polled while the requests waited in requests/wait/; a query
    was dropped alike. Such a URL is refused, naming it."""
    from s3q.backends import S3Options, open_store

    with pytest.raises(ValueError, match="'#' or '\\?'") as info:
        open_store(url, S3Options(region="eu-west-1", access_key_id="a",
                                  secret_access_key="b"), create=False)
    assert repr(url) in str(info.value)
    if url.startswith("s3:"):  # nor is an IAM policy made for the prefix left
        from s3q.iam import iam_policy

        with pytest.raises(ValueError, match="'#' or '\\?'"):
            iam_policy(url, ssm_parameters=[], region=None)


def test_a_comment_after_a_value_in_the_environment_is_refused() -> None:
    """systemd's EnvironmentFile (and docker's --env-file) keep a comment after a value:
    S3Q_FILTER=*request.json # the seed's became a filter no request matches, so every
    request waited forever while status counted none waiting. A non-secret S3Q_* value with
    ' #' is refused, naming it; a secret may hold one."""
    assert error(env={"S3Q_FILTER": "*request.json # the seed's"}) == (
        "filter: a comment after the value (systemd and docker keep it in an env file: put it "
        "on a line of its own), got \"*request.json # the seed's\" (env S3Q_FILTER)")
    assert "(env S3Q_WORKER_ID)" in error(env={"S3Q_WORKER_ID": "w1  # spare"})
    cfg, _ = load(env={"S3Q_DASHBOARD_TOKEN": "a #b", "S3Q_WORKER_ID": "w#1"})
    assert cfg.dashboard_token == Secret("a #b") and cfg.worker_id == "w#1"


def test_endpoints_and_region_are_checked_where_they_are_set(tmp_path: Path) -> None:
    """An endpoint without its scheme or a region with a space was taken at load and
    refused by botocore when the first client was made: as a store error (exit 3) blaming
    where the queue came from ('cannot set up the S3 client for s3://b/x: Invalid endpoint:
    minio:9000 (queue from flag --queue)'), or for SSM naming the secrets."""
    assert error(env={"AWS_ENDPOINT_URL": "minio:9000"}) == (
        "endpoint_url: expected an http:// or https:// URL, got 'minio:9000' "
        "(env AWS_ENDPOINT_URL)")
    path = write(tmp_path / "s3q.toml", 'ssm_endpoint_url = "localhost:4566"\n')
    assert error() == ("ssm_endpoint_url: expected an http:// or https:// URL, got "
                       f"'localhost:4566' (file {path})")
    (tmp_path / "s3q.toml").unlink()
    assert error({"sqs_endpoint_url": "https://"}).startswith("sqs_endpoint_url: expected")
    assert error({"region": "eu west 1"}) == (
        "region: expected a region name such as eu-west-1, got 'eu west 1' (flag --region)")
    cfg, _ = load({"region": "garage", "endpoint_url": "http://[::1]:9000"})  # S3-compatible
    assert (cfg.region, cfg.endpoint_url) == ("garage", "http://[::1]:9000")


def test_profile_named_without_a_config_file() -> None:
    assert error({"profile": "prod"}) == (
        "profile: 'prod' (flag --profile) is not defined in a config file (profiles: none)")


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "s3q.toml", 'queue = "s3://b"\nlease_ttl = = 3\n')
    message = error()
    assert message.startswith(f"config file {path}: invalid TOML:") and "line 2" in message
    write(tmp_path / "s3q.toml", "profiles = 3\n")
    assert error().startswith("profiles: must be [profiles.NAME] tables")
    write(tmp_path / "s3q.toml", "[profiles.p]\nwhen_hostname = 3\n")
    assert error().startswith("when_hostname: expected a glob string, got 3")


# --- secrets -------------------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_secrets_are_masked(tmp_path: Path) -> None:
    path = write(tmp_path / "s3q.toml", f'secret_access_key = "{SECRET}"\n')
    env = {"S3Q_ACCESS_KEY_ID": "ssm:/app/key-id", "S3Q_SESSION_TOKEN": "tok-" + SECRET}
    cfg, src = load(env=env)
    assert isinstance(cfg.secret_access_key, Secret)
    assert cfg.secret_access_key.reveal() == SECRET
    assert repr(cfg.secret_access_key) == "'***'" and str(cfg.secret_access_key) == "***"
    assert f"{cfg.session_token}" == "***"
    assert SECRET not in repr(cfg) and SECRET not in str(cfg)
    assert "secret_access_key='***'" in repr(cfg)
    rows = {name: (value, source) for name, value, source in show_config(cfg, src)}
    assert [name for name, _, _ in show_config(cfg, src)] == [s.name for s in SETTINGS]
    assert rows["secret_access_key"] == ("***", f"file {path}")
    assert rows["session_token"] == ("***", "env S3Q_SESSION_TOKEN")
    assert rows["access_key_id"] == ("ssm:/app/key-id", "env S3Q_ACCESS_KEY_ID")
    assert rows["lease_ttl"] == ("30", "default") and rows["worker_id"][0] == "(auto)"
    assert SECRET not in repr(show_config(cfg, src))
    with pytest.raises(ConfigError, match=r"access_key_id: ssm:/app/key-id is not resolved"):
        cfg.s3_options()


def test_secret_errors_never_show_the_value(tmp_path: Path) -> None:
    write(tmp_path / "s3q.toml", f'secret_access_key = ["{SECRET}"]\n')
    message = error()
    assert message.startswith("secret_access_key: expected a string, got *** (file ")
    assert SECRET not in message
    (tmp_path / "s3q.toml").unlink()
    message = error({"secret_access_key": SECRET})
    assert SECRET not in message and "secrets cannot be flags" in message
    message = error(env={"S3Q_SECRET_ACCESS_KEY": SECRET})
    assert SECRET not in message and "give both or neither" in message
    message = error(env={"S3Q_ACCESS_KEY_ID": "a\nb", "S3Q_SECRET_ACCESS_KEY": SECRET})
    assert message == (
        "access_key_id: must be a non-empty single line, got *** (env S3Q_ACCESS_KEY_ID)")


def test_queue_config_and_s3_options() -> None:
    env = {"S3Q_ACCESS_KEY_ID": "AKID", "S3Q_SECRET_ACCESS_KEY": SECRET, "S3Q_REGION": "eu-west-1",
           "S3Q_BATCH_DELETES": "false"}
    flags: dict[str, object] = {
        "lease_ttl": 40, "max_attempts": 3, "filter": "*request.json", "on_finish": "delete",
        "retry_base_delay": 1, "retry_max_delay": 9, "concurrency": 8,
        "endpoint_url": "http://minio:9000", "retry_mode": "adaptive"}
    cfg, _ = load(flags, env=env)
    q = cfg.queue_config()
    assert (q.lease_ttl, q.max_attempts, q.filter, q.on_finish, q.retry_base_delay,
            q.retry_max_delay, q.batch_deletes) == (40.0, 3, "*request.json", "delete", 1.0,
                                                    9.0, False)
    o = cfg.s3_options()
    # a connection per slot and per settlement under way (4 a slot), and 4 more
    assert (o.endpoint_url, o.region, o.retry_mode, o.max_pool_connections) == (
        "http://minio:9000", "eu-west-1", "adaptive", 44)
    assert (o.access_key_id, o.secret_access_key, o.session_token) == ("AKID", SECRET, None)


def test_resolve_secrets_without_references_needs_no_aws() -> None:
    cfg, _ = load(env={"S3Q_ACCESS_KEY_ID": "AKID", "S3Q_SECRET_ACCESS_KEY": SECRET})
    assert resolve_secrets(cfg) is cfg



def test_ssm_references_are_resolved_and_never_logged(
        ssm: S3Endpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    prefix = f"/s3q-test/{uuid4().hex}"
    client = boto3.client("ssm", endpoint_url=ssm.endpoint_url, region_name=ssm.region)
    client.put_parameter(Name=f"{prefix}/id", Value="AKID-FROM-SSM", Type="SecureString")
    client.put_parameter(Name=f"{prefix}/secret", Value=SECRET, Type="SecureString")
    write(tmp_path / "s3q.toml", f"""\
        region = "{ssm.region}"
        ssm_endpoint_url = "{ssm.endpoint_url}"
        [profiles.prod]
        when_hostname = "*-prod-*"
        access_key_id = "ssm:{prefix}/id"
        secret_access_key = "ssm:{prefix}/secret"
    """)
    for name in ("", "s3q", "botocore", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    caplog.clear()  # put_parameter logged the value it sent

    cfg, src = load(hostname="app-prod-1")
    assert SECRET not in repr(show_config(cfg, src))
    resolved = resolve_secrets(cfg)
    assert resolved.access_key_id == Secret("AKID-FROM-SSM")
    assert resolved.s3_options().secret_access_key == SECRET
    assert SECRET not in repr(resolved)
    assert any(r.name.startswith("botocore") for r in caplog.records)  # the check below bites
    assert any(f"{prefix}/secret" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if SECRET in r.getMessage() or SECRET in str(r.args)]

    missing = dataclasses.replace(cfg, secret_access_key=Secret(f"ssm:{prefix}/missing"))
    with pytest.raises(ConfigError) as info:
        resolve_secrets(missing)
    assert str(info.value) == (f"secret_access_key: cannot read SSM parameter "
                               f"'{prefix}/missing': no such parameter in region {ssm.region} "
                               "(the one asked: set region or AWS_DEFAULT_REGION to the "
                               "parameter's)")
    assert info.value.__cause__ is None and SECRET not in str(info.value)
    assert not [r for r in caplog.records if SECRET in r.getMessage() or SECRET in str(r.args)]


# --- worker id -----------------------------------------------------------------------------------

class _Imds(http.server.BaseHTTPRequestHandler):
    requests: list[str]
    slow_first = 0.0  # seconds the first token request waits before its answer

    def do_PUT(self) -> None:
        self.requests.append("PUT " + self.path)
        if self.requests.count("PUT " + self.path) == 1:
            time.sleep(self.slow_first)
        ok = self.path == "/latest/api/token" and self.headers[
            "X-aws-ec2-metadata-token-ttl-seconds"]
        self._answer(200 if ok else 404, b"TOKEN")

    def do_GET(self) -> None:
        self.requests.append("GET " + self.path)
        ok = self.path == "/latest/meta-data/instance-id" and self.headers[
            "X-aws-ec2-metadata-token"] == "TOKEN"
        self._answer(200 if ok else 401, b"i-0123456789abcdef0")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def imds() -> Iterator[tuple[str, list[str]]]:
    instance_id.cache_clear()  # a port may be reused by a later test
    requests: list[str] = []
    handler = type("Handler", (_Imds,), {"requests": requests})
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def test_default_worker_id_with_imds(imds: tuple[str, list[str]]) -> None:
    url, requests = imds
    env = {"S3Q_IMDS_ENDPOINT": url}
    assert default_worker_id(env=env, hostname="web-1") == "web-1/i-0123456789abcdef0"
    assert default_worker_id("2", env=env, hostname="web-1") == "web-1/i-0123456789abcdef0/2"
    assert requests == ["PUT /latest/api/token", "GET /latest/meta-data/instance-id"]  # cached


def test_default_worker_id_without_imds(imds: tuple[str, list[str]]) -> None:
    url, requests = imds
    assert default_worker_id(env={"S3Q_IMDS": "off", "S3Q_IMDS_ENDPOINT": url},
                             hostname="web-1") == "web-1"
    assert requests == []
    assert default_worker_id("a", env={"S3Q_IMDS_ENDPOINT": url + "/broken"},
                             hostname="h") == "h/a"  # 404 on the token: silently none
    dead = "http://127.0.0.1:9"  # discard port: refused (or dropped within 0.3 s)
    assert default_worker_id(env={"S3Q_IMDS_ENDPOINT": dead}, hostname="h") == "h"


@pytest.fixture
def dmi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The machine's DMI data as the test writes it (imds.DMI_DIR)."""
    import s3q.imds

    monkeypatch.setattr(s3q.imds, "DMI_DIR", str(tmp_path))
    instance_id.cache_clear()
    return tmp_path


def test_a_nitro_instance_id_is_read_from_dmi_without_asking_the_imds(dmi: Path) -> None:
    (dmi / "sys_vendor").write_text("Amazon EC2\n")
    (dmi / "board_asset_tag").write_text("i-0fedcba9876543210\n")
    assert default_worker_id(env={}, hostname="web-1") == "web-1/i-0fedcba9876543210"
    instance_id.cache_clear()


@pytest.mark.parametrize("vendor", ["Amazon EC2", None])
def test_an_imds_slow_at_boot_is_waited_for_on_ec2_only(
        imds: tuple[str, list[str]], dmi: Path, vendor: str | None) -> None:
    """On EC2 a slow IMDS (its first answer after 0.6 s: a boot) is asked again, with more
    patience: a worker id without the instance id would not be the one the worker had at
    its last start, and its own recovery would miss what it held. Off EC2 one short try
    (every command that names a worker asks)."""
    url, requests = imds
    _Imds.slow_first = 0.6
    try:
        if vendor is not None:
            (dmi / "sys_vendor").write_text(vendor + "\n")
        found = default_worker_id(env={"S3Q_IMDS_ENDPOINT": url}, hostname="web-1")
    finally:
        _Imds.slow_first = 0.0
        instance_id.cache_clear()
    assert found == ("web-1/i-0123456789abcdef0" if vendor else "web-1")
    assert requests.count("PUT /latest/api/token") == (2 if vendor else 1), requests


@pytest.mark.parametrize(("addr", "endpoint"), [
    ("127.0.0.1", ("127.0.0.1", 9464)), ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:9100", ("::1", 9100)), ("::1", ("::1", 9464)),
    (":9100", "names no host"), ("[]:9100", "names no host"), ("h:0", "is not HOST"),
    ("h:x", "is not HOST")])
def test_metrics_addr(addr: str, endpoint: tuple[str, int] | str) -> None:
    cfg, _ = load({"metrics_addr": addr})
    if isinstance(endpoint, tuple):
        assert cfg.metrics_endpoint(9464) == endpoint
    else:
        with pytest.raises(ConfigError, match=endpoint):
            cfg.metrics_endpoint(9464)


def test_effective_worker_id() -> None:
    cfg, _ = load({"worker_id": "w-7"})
    assert cfg.effective_worker_id() == "w-7" and cfg.effective_worker_id("2") == "w-7/2"
    auto, _ = load()
    assert auto.effective_worker_id("x").endswith("/x")  # S3Q_IMDS=off in os.environ


@pytest.mark.parametrize("reserved", ["s3q-recover", "s3q-recover-all", "s3q-requeue",
                                      "s3q-dashboard"])
def test_a_reserved_worker_id_is_refused_at_load_naming_the_setting_and_the_ids(
        tmp_path: Path, reserved: str) -> None:
    """The Queue methods a worker calls refused these ids, but the config took them: `s3q
    worker` read SSM, opened (or created) the queue and probed the store before its first
    claim failed. Now the config refuses them, wherever they are set."""
    ids = "s3q-dashboard, s3q-recover, s3q-recover-all, s3q-requeue"
    for flags, env, toml, source in (
            ({"worker_id": reserved}, {}, "", "flag --worker-id"),
            ({}, {"S3Q_WORKER_ID": reserved}, "", "env S3Q_WORKER_ID"),
            ({}, {}, f'worker_id = "{reserved}"', "file {path}")):
        path = write(tmp_path / "s3q.toml", toml + "\n")
        message = error(flags, env=env)
        assert message.startswith(f"worker_id: {reserved!r} is the id s3q's own commands act "
                                  f"as (reserved: {ids}, "), message
        assert message.endswith(f"({source.format(path=path)})"), message
    assert error({"worker_id": "w" * 201}).startswith("worker_id: must be a non-empty single-line")
    cfg, _ = load({"worker_id": "s3q-recover-2"})  # only the ids themselves
    assert cfg.worker_id == "s3q-recover-2"


def test_setting_is_a_plain_record() -> None:
    s = Setting("x", int, 1, "help")
    assert (s.secret, s.flag, s.env_var) == (False, "--x", "S3Q_X")


def test_a_dashboard_user_name_with_a_colon_is_refused() -> None:
    """HTTP basic authentication sends ``user:password`` and the dashboard splits it at the
    first colon (RFC 7617: a user-id holds none): a dashboard_user of 'ops:admin' could
    never sign in, every request refused with 401 and nothing said anywhere why."""
    message = error(env={"S3Q_DASHBOARD_USER": "ops:admin", "S3Q_DASHBOARD_PASSWORD": SECRET})
    assert message.startswith("dashboard_user: ")
    assert "':'" in message and "env S3Q_DASHBOARD_USER" in message
    assert SECRET not in message
    cfg, _ = load(env={"S3Q_DASHBOARD_USER": "ops", "S3Q_DASHBOARD_PASSWORD": "a:b"})
    assert cfg.dashboard_user == "ops"  # (a colon in the password is fine)
