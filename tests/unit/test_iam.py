"""The worker's IAM policy (s3q.iam): well-formed, and covering exactly what the queue code
touches — checked by running every queue operation on a recording store and evaluating
each S3 call it would make against the policy."""

from __future__ import annotations

import fnmatch
import json
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.config import load_config
from s3q.iam import QUEUE_PREFIXES, config_ssm_parameters, iam_policy, iam_policy_for
from s3q.records import CLOCK_MARGIN
from tests.unit.harness import FakeClock

T = TypeVar("T")

STATES = ["wait/", "processing/", "finish/", "failed/", ".s3q/"]


def statements(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in policy["Statement"]}


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def allowed(policy: dict[str, Any], action: str, resource: str,
            context: dict[str, str] | None = None) -> bool:
    """A tiny IAM evaluator for what these policies use: Allow statements, exact actions,
    ``*`` wildcards in resources, StringLike / StringEquals conditions."""
    context = context or {}
    for s in policy["Statement"]:
        assert s["Effect"] == "Allow"
        if action not in as_list(s["Action"]):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in as_list(s["Resource"])):
            continue
        ok = True
        for operator, conditions in s.get("Condition", {}).items():
            for key, values in conditions.items():
                have = context.get(key)
                if have is None:
                    ok = False
                elif operator == "StringLike":
                    ok &= any(fnmatch.fnmatchcase(have, v) for v in as_list(values))
                elif operator == "StringEquals":
                    ok &= have in as_list(values)
                else:  # pragma: no cover
                    raise AssertionError(f"unexpected condition operator {operator}")
        if ok:
            return True
    return False


def test_policy_document_structure() -> None:
    policy = iam_policy("s3://acme/requests", ssm_parameters=[], region="eu-west-1")
    assert json.loads(json.dumps(policy)) == policy
    assert set(policy) == {"Version", "Statement"} and policy["Version"] == "2012-10-17"
    for s in policy["Statement"]:
        assert set(s) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        assert s["Effect"] == "Allow" and s["Sid"].isalnum()
        for action in as_list(s["Action"]):
            assert ":" in action and "*" not in action, action
    by_sid = statements(policy)
    assert set(by_sid) == {"ListQueuePrefixes", "ReadWriteQueueObjects"}
    listing = by_sid["ListQueuePrefixes"]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Resource"] == "arn:aws:s3:::acme"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [
        f"requests/{p}*" for p in STATES]}}
    objects = by_sid["ReadWriteQueueObjects"]
    assert set(objects["Action"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                      "s3:AbortMultipartUpload"}
    assert objects["Resource"] == [f"arn:aws:s3:::acme/requests/{p}*" for p in STATES]
    assert list(QUEUE_PREFIXES) == STATES


@pytest.mark.parametrize(("url", "root"), [
    ("s3://acme", ""), ("s3://acme/", ""), ("s3://acme/a/b", "a/b/"), ("s3://acme/a/b/", "a/b/"),
])
def test_prefixes_follow_the_queue_root(url: str, root: str) -> None:
    by_sid = statements(iam_policy(url, ssm_parameters=[], region=None))
    assert by_sid["ListQueuePrefixes"]["Condition"]["StringLike"]["s3:prefix"] == \
        [f"{root}{p}*" for p in STATES]
    assert by_sid["ReadWriteQueueObjects"]["Resource"] == \
        [f"arn:aws:s3:::acme/{root}{p}*" for p in STATES]


def test_nothing_outside_the_queue_is_allowed() -> None:
    policy = iam_policy("s3://acme/requests", ssm_parameters=[], region="eu-west-1")
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert allowed(policy, action, "arn:aws:s3:::acme/requests/wait/a_request.json")
        for other in ("arn:aws:s3:::acme/other/wait/a", "arn:aws:s3:::acme/requests/x",
                      "arn:aws:s3:::acme/requests/waiting/a", "arn:aws:s3:::acme/wait/a",
                      "arn:aws:s3:::acme-2/requests/wait/a", "arn:aws:s3:::acme"):
            assert not allowed(policy, action, other), (action, other)
    bucket = "arn:aws:s3:::acme"
    assert allowed(policy, "s3:ListBucket", bucket, {"s3:prefix": "requests/wait/"})
    assert allowed(policy, "s3:ListBucket", bucket, {"s3:prefix": "requests/.s3q/lease/a"})
    for prefix in ("", "requests/", "requests/waiting", "other/wait/"):
        assert not allowed(policy, "s3:ListBucket", bucket, {"s3:prefix": prefix}), prefix
    assert not allowed(policy, "s3:ListBucket", bucket)  # a listing without a prefix
    for action in ("s3:ListAllMyBuckets", "s3:DeleteBucket", "s3:PutBucketPolicy",
                   "ssm:GetParameter", "kms:Decrypt"):
        assert not any(action in as_list(s["Action"]) for s in policy["Statement"])


def test_ssm_parameters_add_get_parameter_and_kms_decrypt_through_ssm() -> None:
    policy = iam_policy("s3://acme/requests", region="eu-west-1", account="123456789012",
                        ssm_parameters=["/app/prod/key", "ssm:/app/prod/secret", "plain",
                                        "/app/prod/key"])
    by_sid = statements(policy)
    assert by_sid["ReadSecretParameters"]["Action"] == "ssm:GetParameter"
    assert by_sid["ReadSecretParameters"]["Resource"] == [
        "arn:aws:ssm:eu-west-1:123456789012:parameter/app/prod/key",
        "arn:aws:ssm:eu-west-1:123456789012:parameter/app/prod/secret",
        "arn:aws:ssm:eu-west-1:123456789012:parameter/plain",
    ]
    kms = by_sid["DecryptSecretParametersThroughSSM"]
    assert kms["Action"] == "kms:Decrypt" and kms["Resource"] == "*"
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "ssm.eu-west-1.amazonaws.com"}}
    assert allowed(policy, "kms:Decrypt", "arn:aws:kms:eu-west-1:123456789012:key/k",
                   {"kms:ViaService": "ssm.eu-west-1.amazonaws.com"})
    assert not allowed(policy, "kms:Decrypt", "arn:aws:kms:eu-west-1:123456789012:key/k",
                       {"kms:ViaService": "s3.eu-west-1.amazonaws.com"})
    assert not allowed(policy, "kms:Decrypt", "arn:aws:kms:eu-west-1:123456789012:key/k")


def test_unknown_region_and_account_are_wildcards_but_kms_stays_behind_ssm() -> None:
    by_sid = statements(iam_policy("s3://acme", ssm_parameters=["/k"], region=None))
    assert by_sid["ReadSecretParameters"]["Resource"] == ["arn:aws:ssm:*:*:parameter/k"]
    assert by_sid["DecryptSecretParametersThroughSSM"]["Condition"] == \
        {"StringLike": {"kms:ViaService": "ssm.*.amazonaws.com"}}


def test_parameter_arns_and_partitions() -> None:
    arn = "arn:aws:ssm:eu-west-1:1:parameter/x"
    by_sid = statements(iam_policy("s3://b", ssm_parameters=[arn], region="eu-west-1"))
    assert by_sid["ReadSecretParameters"]["Resource"] == [arn]
    cn = statements(iam_policy("s3://b/p", ssm_parameters=["/k"], region="cn-north-1"))
    assert cn["ListQueuePrefixes"]["Resource"] == "arn:aws-cn:s3:::b"
    assert cn["ReadSecretParameters"]["Resource"] == ["arn:aws-cn:ssm:cn-north-1:*:parameter/k"]


def test_no_ssm_statements_without_ssm_parameters() -> None:
    params: list[str] | tuple[str, ...]
    for params in ([], ()):
        policy = iam_policy("s3://acme/q", ssm_parameters=params, region="us-east-1")
        assert all(not a.startswith(("ssm:", "kms:"))
                   for s in policy["Statement"] for a in as_list(s["Action"]))


@pytest.mark.parametrize("url", ["./s3q-data", "/srv/queue", "file:///srv/queue",
                                 "memory://x", "https://acme.s3.amazonaws.com/q", "s3://",
                                 "s3:///prefix", "s3://acme/req*"])
def test_non_s3_queues_are_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        iam_policy(url, ssm_parameters=[], region=None)


def test_policy_for_a_config_uses_its_queue_region_and_ssm_secrets(tmp_path: Any) -> None:
    path = tmp_path / "s3q.toml"
    path.write_text('queue = "s3://acme/requests"\nregion = "eu-west-1"\n'
                    'access_key_id = "ssm:/app/key"\nsecret_access_key = "ssm:/app/secret"\n')
    cfg, _ = load_config(config_path=str(path), env={}, hostname="h")
    assert config_ssm_parameters(cfg) == ["/app/key", "/app/secret"]
    policy = iam_policy_for(cfg, env={})
    assert statements(policy)["ReadSecretParameters"]["Resource"] == [
        "arn:aws:ssm:eu-west-1:*:parameter/app/key",
        "arn:aws:ssm:eu-west-1:*:parameter/app/secret"]
    plain, _ = load_config(env={"S3Q_QUEUE": "s3://acme/requests"}, hostname="h")
    assert config_ssm_parameters(plain) == []
    by_sid = statements(iam_policy_for(plain, env={"AWS_DEFAULT_REGION": "us-west-2"}))
    assert set(by_sid) == {"ListQueuePrefixes", "ReadWriteQueueObjects"}


#: What the event source calls on SQS, and the action that authorizes each (the batch
#: calls are authorized by the single ones); tests/acceptance/test_events.py checks that a
#: worker makes no other SQS call.
SQS_ACTIONS = {"GetQueueUrl": "sqs:GetQueueUrl", "ReceiveMessage": "sqs:ReceiveMessage",
               "DeleteMessageBatch": "sqs:DeleteMessage",
               "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility"}


@pytest.mark.parametrize(("events_queue", "arn", "by_name"), [
    ("https://sqs.eu-west-1.amazonaws.com/123456789012/s3q-events",
     "arn:aws:sqs:eu-west-1:123456789012:s3q-events", False),
    ("arn:aws:sqs:eu-west-1:123456789012:s3q-events",
     "arn:aws:sqs:eu-west-1:123456789012:s3q-events", True),
    ("s3q-events", "arn:aws:sqs:eu-west-1:*:s3q-events", True),
])
def test_an_events_queue_adds_receiving_from_that_queue_only(
        events_queue: str, arn: str, by_name: bool) -> None:
    policy = iam_policy("s3://acme/requests", ssm_parameters=[], region="eu-west-1",
                        events_queue=events_queue)
    sqs = statements(policy)["ReceiveBucketNotifications"]
    assert sqs["Resource"] == arn
    needed = {a for op, a in SQS_ACTIONS.items() if op != "GetQueueUrl" or by_name}
    assert set(sqs["Action"]) == needed
    for action in needed:
        assert allowed(policy, action, arn)
        assert not allowed(policy, action, arn.replace("s3q-events", "other"))
    for action in ("sqs:SendMessage", "sqs:PurgeQueue", "sqs:SetQueueAttributes",
                   "sqs:CreateQueue", "sqs:DeleteQueue", "sqs:GetQueueAttributes"):
        assert not allowed(policy, action, arn), action
    account = statements(iam_policy("s3://acme", ssm_parameters=[], region="eu-west-1",
                                    account="123456789012", events_queue="s3q-events"))
    assert account["ReceiveBucketNotifications"]["Resource"] == (
        "arn:aws:sqs:eu-west-1:123456789012:s3q-events")


def test_no_sqs_statement_without_an_events_queue() -> None:
    policy = iam_policy("s3://acme/q", ssm_parameters=[], region="us-east-1")
    assert all(not a.startswith("sqs:") for s in policy["Statement"]
               for a in as_list(s["Action"]))
    cfg, _ = load_config(env={"S3Q_QUEUE": "s3://acme/q", "S3Q_EVENTS_QUEUE": "s3q-ev"},
                         hostname="h")
    by_sid = statements(iam_policy_for(cfg, env={"AWS_REGION": "us-east-2"}))
    assert by_sid["ReceiveBucketNotifications"]["Resource"] == "arn:aws:sqs:us-east-2:*:s3q-ev"


# --------------------------------------------------------------------------- coverage

#: The S3 action that authorizes each store operation (HeadObject: s3:GetObject).
ACTIONS = {"get": "s3:GetObject", "open": "s3:GetObject", "head": "s3:GetObject",
           "put": "s3:PutObject", "delete": "s3:DeleteObject"}


@dataclass
class RecordingStore(DelegatingStore):
    """A MemoryStore that records the S3 calls (action, ARN, context) the S3 backend would
    make for each operation, under the queue root ``root`` of bucket ``bucket``."""

    inner: MemoryStore
    bucket: str
    root: str
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        DelegatingStore.__init__(self, self.inner)

    def _obj(self, action: str, key: str) -> None:
        self.calls.append((action, f"arn:aws:s3:::{self.bucket}/{self.root}{key}", {}))

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "copy":  # CopyObject: read the source, write the target
            self._obj("s3:GetObject", args["src"])
            self._obj("s3:PutObject", args["dst"])
        elif op == "list":
            self.calls.append(("s3:ListBucket", f"arn:aws:s3:::{self.bucket}",
                               {"s3:prefix": self.root + args["prefix"]}))
        else:  # conditions (If-Match, If-None-Match) need no other permission
            self._obj(ACTIONS[op], args["key"])
        return fn()


@contextmanager
def recording(root: str) -> Iterator[tuple[RecordingStore, FakeClock]]:
    clock = FakeClock()
    store = RecordingStore(MemoryStore("iam", clock=clock), "acme", root)
    yield store, clock


def exercise(store: RecordingStore, clock: FakeClock) -> None:
    """Every queue operation: submit, claim, complete (with result), retry, dead letter,
    requeue, release, takeover of an expired lease, recover, status reads, a purge."""
    cfg = QueueConfig(lease_ttl=10, max_attempts=2, retry_base_delay=0, retry_max_delay=0,
                      filter="*request.json")
    q = Queue(store, cfg, rng=random.Random(1))
    names = [f"2026/11/{i}_request.json" for i in range(6)]
    for name in names:
        q.submit(name, b'{"n": 1}')
    store.inner.put("wait/readme.txt", b"not a request")
    released = False
    while (job := q.claim("w1")) is not None:
        job.read()
        job.renew()  # a heartbeat
        if job.name.startswith("2026/11/0"):
            job.complete(b"result")
        elif job.name.startswith("2026/11/1"):
            job.fail("transient")  # retried, then dead letter
        elif job.name.startswith("2026/11/2"):
            job.fail("poison", retry=False)
        elif job.name.startswith("2026/11/3") and not released:
            job.release()
            released = True
        elif not job.name.startswith("2026/11/4"):  # 4 stays held: its worker "dies"
            job.complete()
        clock.advance(1)
    clock.advance(cfg.lease_ttl + CLOCK_MARGIN + cfg.lease_ttl)
    taken = q.claim("w2")  # takes the dead worker's expired lease over
    assert taken is not None and taken.name == "2026/11/4_request.json"
    taken.complete()
    q.counts()
    list(q.leases())
    for name in names:
        q.error_record(name)
        q.result(name)
    failed = list(q.ls("failed"))
    assert len(failed) == 2
    for info in failed:
        assert q.requeue(info.key)
    q.submit("2026/11/9_request.json", b"{}")
    job = q.claim("w3")
    assert job is not None
    q.recover_own("w3")
    q.recover_stale()
    q.recover_all("*request.json")
    while (job := q.claim("w4")) is not None:
        job.complete()
    q.close()


@pytest.mark.parametrize("root", ["", "requests/", "a/b/"])
def test_policy_allows_every_call_the_queue_makes_and_covers_exactly_its_prefixes(
        root: str) -> None:
    with recording(root) as (store, clock):
        exercise(store, clock)
    url = "s3://acme/" + root
    policy = iam_policy(url, ssm_parameters=[], region="eu-west-1")
    assert store.calls
    for action, resource, context in store.calls:
        assert allowed(policy, action, resource, context), (action, resource, context)
    # exactly: every prefix the policy opens is one the queue uses, for objects and lists
    objects = {r for _, r, ctx in store.calls if not ctx}
    prefixes = {ctx["s3:prefix"] for _, _, ctx in store.calls if ctx}
    for state in STATES:
        assert any(r.startswith(f"arn:aws:s3:::acme/{root}{state}") for r in objects), state
        assert any(p.startswith(f"{root}{state}") for p in prefixes), state
    used_actions = {a for a, _, _ in store.calls}
    granted = {a for s in policy["Statement"] for a in as_list(s["Action"])}
    # AbortMultipartUpload: only when a managed copy of a request over 5 GiB fails
    assert granted - used_actions == {"s3:AbortMultipartUpload"}
