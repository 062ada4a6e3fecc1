"""Profiles by host name, credentials from SSM SecureStrings (moto), secrets kept out of
every output, and bad configuration failing with one clear line."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from uuid import uuid4

import boto3
import pytest

from tests.acceptance.conftest import Cli, kill_tree, wait_for
from tests.s3server import S3Endpoint

ACCESS_KEY = "AKIAS3QTESTSECRET0001"
SECRET_KEY = "s3q-never-print-this-secret-Zx81"


@pytest.fixture
def ssm_profile(cli: Cli, s3_endpoint: S3Endpoint) -> Path:
    if not s3_endpoint.is_moto:
        pytest.skip("creates SSM parameters: moto only")
    path = f"/s3q-test/{uuid4().hex[:8]}"
    ssm = boto3.client("ssm", endpoint_url=s3_endpoint.endpoint_url,
                       region_name=s3_endpoint.region, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    ssm.put_parameter(Name=f"{path}/access-key", Value=ACCESS_KEY, Type="SecureString")
    ssm.put_parameter(Name=f"{path}/secret-key", Value=SECRET_KEY, Type="SecureString")
    config = cli.tmp / "s3q.toml"
    config.write_text(f"""
max_attempts = 4

[profiles.prod]
when_hostname = "*-prod-*"
lease_ttl = 120

[profiles.here]
when_hostname = "*"
lease_ttl = 45
access_key_id = "ssm:{path}/access-key"
secret_access_key = "ssm:{path}/secret-key"
""")
    return config


def test_credentials_from_ssm_never_appear_in_any_output(cli: Cli, ssm_profile: Path) -> None:
    cli.submit(3)
    env = {"S3Q_CONFIG": str(ssm_profile), "S3Q_LOG_LEVEL": "debug"}
    outputs = [
        cli.run("config", "show", env=env),
        cli.run("config", "show", "--json", env=env),
        cli.run("worker", "--exec", "true", "--burst", env=env),
        cli.run("status", "--json", env=env),
    ]
    shown = json.loads(outputs[1].stdout)
    text = json.dumps(shown)
    assert "ssm:/s3q-test/" in text and "profile here" in text
    assert '"45' in text or "45.0" in text  # lease_ttl from the selected profile
    for out in outputs:
        for secret in (ACCESS_KEY, SECRET_KEY):
            assert secret not in out.stdout and secret not in out.stderr
    assert json.loads(outputs[3].stdout)["counts"]["finish"] == 3


def test_a_missing_ssm_parameter_fails_at_start_naming_it(cli: Cli, ssm_profile: Path) -> None:
    broken = ssm_profile.read_text().replace("/secret-key", "/no-such-key")
    ssm_profile.write_text(broken)
    t0 = time.monotonic()
    out = cli.run("worker", "--exec", "true", "--burst", check=False,
                  env={"S3Q_CONFIG": str(ssm_profile)})
    assert out.returncode == 2
    assert time.monotonic() - t0 < 30
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "secret_access_key" in lines[0] and "no-such-key" in lines[0]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(("setting", "message"), [
    ("lease_tl = 10\n", "lease_ttl"),  # typo: unknown setting, with a suggestion
    ('max_attempts = "three"\n', "max_attempts"),  # wrong type
    ('on_finish = "archive"\n', "on_finish"),  # bad choice
])
def test_bad_configuration_is_one_clear_line(cli: Cli, setting: str, message: str) -> None:
    config = cli.tmp / "bad.toml"
    config.write_text(setting)
    out = cli.run("status", check=False, env={"S3Q_CONFIG": str(config)})
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_an_unreachable_bucket_fails_at_start(cli: Cli) -> None:
    out = cli.run("worker", "--exec", "true", "--burst", check=False,
                  env={"S3Q_QUEUE": f"s3://no-such-bucket-{uuid4().hex[:8]}/q"})
    assert out.returncode == 3
    assert "no-such-bucket" in out.stderr and "Traceback" not in out.stderr


def test_status_check_fails_while_nobody_takes_an_expired_lease_over(
        cli: Cli, procs: list[subprocess.Popen[str]]) -> None:
    [name] = cli.submit(1)
    worker = cli.worker("--lease-ttl", "5", env={"S3Q_TEST_SLEEP": "60"})
    procs.append(worker)
    wait_for(lambda: cli.runs("start")[name] == 1, 30, "the job to start")

    def check() -> int:
        return cli.run("status", "--check", "--lease-ttl", "5", check=False).returncode

    assert check() == 0
    kill_tree(worker, signal.SIGKILL)  # the only worker: nobody will take its lease over
    # 5 s lease + 2 s margin + two 2.5 s scan intervals
    wait_for(lambda: check() == 1, 60, "the lease to be overdue")
    survivor = cli.worker("--lease-ttl", "5", "--burst")
    procs.append(survivor)
    assert survivor.wait(60) == 0
    assert check() == 0
    assert cli.runs("done") == {name: 1}


@pytest.mark.parametrize("url", ["s3//bucket/app", "S3//bucket", "file//srv/queue"])
def test_a_mistyped_url_is_not_taken_for_a_local_directory(local: Cli, url: str) -> None:
    """``s3//bucket/app`` (a lost colon) is no path anyone means: it must not become a local
    queue ``./s3/bucket/app`` that submit fills and a worker drains, unnoticed."""
    request = local.tmp / "a_request.json"
    request.write_text("{}")
    for args in (["submit", str(request)], ["worker", "--exec", "true", "--burst"]):
        out = local.run(*args, check=False, env={"S3Q_QUEUE": url})
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert url in out.stderr and "Traceback" not in out.stderr
    assert list(Path.cwd().iterdir()) == []  # no directory made
