"""s3q.ssm: what an operator reads when an ``ssm:`` secret cannot be read (moto's SSM, and a
local endpoint answering the errors moto cannot be made to give): the setting, the
parameter, the region asked and AWS's reason, never the value."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from uuid import uuid4

import boto3
import pytest

from s3q.errors import ConfigError
from s3q.ssm import read_parameters
from tests.quietserver import QuietServer
from tests.s3server import S3Endpoint


def test_a_parameter_of_another_region_names_the_region_asked(ssm: S3Endpoint) -> None:
    """The parameter exists (in eu-west-1, where the console shows it) but the instance asks
    us-east-1 (AWS_DEFAULT_REGION or region): 'no such parameter' alone sends the operator
    looking at a parameter that is plainly there."""
    name = f"/s3q-test/{uuid4().hex}/secret"
    boto3.client("ssm", endpoint_url=ssm.endpoint_url, region_name="eu-west-1").put_parameter(
        Name=name, Value="never-shown", Type="SecureString")
    with pytest.raises(ConfigError) as info:
        read_parameters({"secret_access_key": name}, region="us-east-1",
                        endpoint_url=ssm.endpoint_url, retry_mode="standard")
    message = str(info.value)
    assert message.startswith(f"secret_access_key: cannot read SSM parameter {name!r}")
    assert "no such parameter" in message and "us-east-1" in message
    assert "never-shown" not in message


class _Denied(http.server.BaseHTTPRequestHandler):
    """SSM answering every request as AWS does when the role lacks kms:Decrypt."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"__type": "AccessDeniedException", "message": (
            "User: arn:aws:sts::123456789012:assumed-role/s3q/i-0abc is not authorized to "
            "perform: kms:Decrypt on resource: arn:aws:kms:eu-west-1:123456789012:key/k1 "
            "because no identity-based policy allows the kms:Decrypt action")}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def denying_ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = QuietServer(("127.0.0.1", 0), _Denied)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_access_denied_says_which_permission_is_missing(denying_ssm: str) -> None:
    """'AccessDeniedException' alone does not tell ssm:GetParameter from kms:Decrypt (a
    SecureString under a customer managed key): AWS's reason does, and holds no value."""
    with pytest.raises(ConfigError) as info:
        read_parameters({"access_key_id": "/app/prod/key"}, region="eu-west-1",
                        endpoint_url=denying_ssm, retry_mode="standard")
    message = str(info.value)
    assert message.startswith("access_key_id: cannot read SSM parameter '/app/prod/key'")
    assert "AccessDeniedException" in message and "kms:Decrypt" in message
    assert "eu-west-1" in message and "\n" not in message
    assert info.value.__cause__ is None


def test_a_value_written_from_a_file_loses_its_newline_and_is_checked_as_a_literal(
        ssm: S3Endpoint) -> None:
    """'aws ssm put-parameter --value file://key.txt' keeps the file's final newline. A key
    read with it failed every S3 request ('Invalid header value', taken for an unavailable
    store; a secret key: SignatureDoesNotMatch), naming neither the setting nor the
    parameter. Surrounding whitespace goes, as from an S3Q_* variable; a value of more than
    one line is refused like a literal one, without showing it."""
    name = f"/s3q-test/{uuid4().hex}"
    client = boto3.client("ssm", endpoint_url=ssm.endpoint_url, region_name=ssm.region)
    client.put_parameter(Name=f"{name}/id", Value="AKID-FROM-FILE\n", Type="SecureString")
    client.put_parameter(Name=f"{name}/two", Value="never-shown\nline-2\n", Type="SecureString")
    values = read_parameters({"access_key_id": f"{name}/id"}, region=ssm.region,
                             endpoint_url=ssm.endpoint_url, retry_mode="standard")
    assert values == {"access_key_id": "AKID-FROM-FILE"}
    with pytest.raises(ConfigError) as info:
        read_parameters({"secret_access_key": f"{name}/two"}, region=ssm.region,
                        endpoint_url=ssm.endpoint_url, retry_mode="standard")
    assert str(info.value) == (f"secret_access_key: SSM parameter '{name}/two' must be a "
                               "single line")


def test_the_parameter_is_asked_in_the_region_every_other_client_uses(
        ssm: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_REGION (what ECS, Lambda and most SDKs set) is the region of s3q's S3 and SQS
    clients and of the parameter ARNs 's3q iam-policy' allows; SSM alone was asked in
    botocore's own (AWS_DEFAULT_REGION, the profile's, else none): 'no such parameter in
    region us-east-1' for the parameter next to the bucket, or no region at all."""
    name = f"/s3q-test/{uuid4().hex}/key"
    boto3.client("ssm", endpoint_url=ssm.endpoint_url, region_name="eu-west-3").put_parameter(
        Name=name, Value="AKID-EU", Type="SecureString")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    for default in ("us-east-1", None):
        if default is None:
            monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
        else:
            monkeypatch.setenv("AWS_DEFAULT_REGION", default)
        assert read_parameters({"access_key_id": name}, region=None,
                               endpoint_url=ssm.endpoint_url, retry_mode="standard") == {
            "access_key_id": "AKID-EU"}
    with pytest.raises(ConfigError, match="no such parameter in region us-west-2"):
        read_parameters({"access_key_id": name}, region="us-west-2",  # the region setting wins
                        endpoint_url=ssm.endpoint_url, retry_mode="standard")


class _Counting(http.server.BaseHTTPRequestHandler):
    """SSM answering every GetParameter with one value, counting the requests."""

    asked: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        type(self).asked.append(body["Name"])
        answer = json.dumps({"Parameter": {"Name": body["Name"], "Type": "SecureString",
                                           "Value": "the-token", "Version": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_command_reads_each_ssm_secret_once(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """CONFIG.md: "ssm: secrets are read once, when a command or worker starts". A worker
    with events_queue read them again for its SQS client (twice the GetParameter calls at
    every fleet start, and S3 and SQS could get different keys across a rotation)."""
    import click

    from s3q.cli.options import App
    from s3q.config import resolve_secrets

    server = QuietServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Counting.asked = []
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "S3Q_QUEUE": str(tmp_path / "q"), "S3Q_REGION": "eu-west-1",
                        "S3Q_SSM_ENDPOINT_URL":
                            f"http://127.0.0.1:{server.server_address[1]}",
                        "S3Q_DASHBOARD_TOKEN": "ssm:/app/dashboard-token"}.items():
        monkeypatch.setenv(name, value)
    try:
        with click.Context(click.Command("worker")):
            app = App()
            app.open_queue(create=True)
            resolve_secrets(app.config)  # (what the worker's event source does next)
    finally:
        server.shutdown()
        server.server_close()
    assert _Counting.asked == ["/app/dashboard-token"]
