"""template.yaml as CloudFormation deploys it (SAM's transform, intrinsics resolved: tests/cfn_expand.py):
two stacks side by side share no physical name, every name fits its limit for any legal stack name,
and the roles allow what the services do on the stack's behalf as AWS documents it (the Distributed
Map's child executions, ItemReader and ResultWriter; the schedule), evaluated with tests/iam_eval.py.
What the Lambdas themselves request is recorded and evaluated in test_statemachine.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cfn_expand as cfn  # noqa: E402
from iam_eval import Request, evaluate  # noqa: E402

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
PARAMS = {"SourceBucket": "trail-src", "SourcePrefix": "AWSLogs/o-abc123/", "StoreBucketName": "trail-store",
          "StorePrefix": "eds/", "SourceKmsKeyArns": KEY, "ScheduleEnabled": "true",
          "NotificationEmail": "ops@example.com", "CopyReservedConcurrency": "50"}
# The longest stack name CloudFormation accepts: 128 characters, a letter then letters, digits, "-"
# (https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_CreateStack.html).
LONGEST = "T" + "x-9" * 42 + "z"


@pytest.fixture(scope="module")
def stack():
    return cfn.expand("trailcopy", PARAMS, account=ACCOUNT)


def test_two_stacks_share_no_physical_name():
    for params in (PARAMS, {"SourceBucket": "trail-src"}):
        a = cfn.expand("trailcopy", params, account=ACCOUNT)
        b = cfn.expand("trailcopy-eu", params, account=ACCOUNT)
        names_a, names_b = cfn.physical_names(a), cfn.physical_names(b)
        shared = {k: v for k, v in names_a.items() if v in set(names_b.values())}
        assert not shared, f"both stacks would create {shared}"
        # Only these are named by the template itself; everything else CloudFormation names.
        assert set(cfn.explicit_names(a)) <= {"GlueDatabase", "FunctionLogGroup", "StateMachineLogGroup",
                                              "CopyTrailEventsStateMachine"}, cfn.explicit_names(a)


@pytest.mark.parametrize("stack_name", ["a", "trailcopy", LONGEST])
def test_names_fit_their_limits_for_any_legal_stack_name(stack_name):
    assert len(LONGEST) == 128
    s = cfn.expand(stack_name, PARAMS, account=ACCOUNT)
    for logical, name in cfn.explicit_names(s).items():
        _, limit = cfn.NAME_PROPERTIES[s.resources[logical]["Type"]]
        assert 1 <= len(name) <= limit, (logical, len(name), limit, name)
    sm = s.resources["CopyTrailEventsStateMachine"]["Properties"]["StateMachineName"]
    assert len(sm) <= 80 and all(c.isalnum() or c == "-" for c in sm), sm
    db = s.resources["GlueDatabase"]["Properties"]["DatabaseInput"]["Name"]
    assert db.replace("_", "").isalnum(), f"Athena needs letters, digits and underscores: {db}"


def allows(policies, action, resource, **context) -> bool:
    return evaluate(policies, Request(action, resource, {k.replace("__", ":"): v for k, v in context.items()})) == "Allow"


def test_state_machine_role_allows_what_the_distributed_map_does(stack):
    p = stack.role_policies("CopyTrailEventsStateMachine")
    sm_arn = stack.resources["CopyTrailEventsStateMachine"]["Properties"]["StateMachineName"]
    arn = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{sm_arn}"
    defn = cfn.state_machine_definition(stack)
    label = defn["States"]["CopyWorkItems"]["Label"]
    # https://docs.aws.amazon.com/step-functions/latest/dg/iam-policies-eg-dist-map.html: StartExecution on
    # the state machine; DescribeExecution/StopExecution on its executions, which a Map Run's child
    # executions name as <state machine>/<label>:<id>.
    assert allows(p, "states:StartExecution", arn)
    for execution in (f"{arn.replace(':stateMachine:', ':execution:')}:6f1c0b8e",
                      f"{arn.replace(':stateMachine:', ':execution:')}/{label}:0b9e4c1a-3b1f-4a77-9d0f-2f7b0f1e8c11"):
        for action in ("states:DescribeExecution", "states:StopExecution"):
            assert allows(p, action, execution), (action, execution)
    assert allows(p, "states:RedriveExecution", f"{arn.replace(':stateMachine:', ':execution:')}/{label}:x")
    other = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:someone-else"
    assert not allows(p, "states:StartExecution", other)
    # ItemReader reads the work items; ResultWriter writes (in parts) the manifest and results.
    reader = defn["States"]["CopyWorkItems"]["ItemReader"]
    assert reader["Parameters"] == {"Bucket.$": "$.storeBucket", "Key.$": "$.workItemsKey"}
    assert allows(p, "s3:GetObject", "arn:aws:s3:::trail-store/eds/copies/c1/workitems.json")
    writer = defn["States"]["CopyWorkItems"]["ResultWriter"]["Parameters"]
    assert writer == {"Bucket": "trail-store", "Prefix": "eds/map-runs"}
    for action in ("s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"):
        assert allows(p, action, "arn:aws:s3:::trail-store/eds/map-runs/0b9e4c1a/manifest.json"), action
    assert not allows(p, "s3:PutObject", "arn:aws:s3:::trail-store/eds/events/x.parquet")
    assert not allows(p, "s3:GetObject", "arn:aws:s3:::trail-src/AWSLogs/o-abc123/x.json.gz")
    # It invokes exactly the four functions.
    for fn in ("EnumerateFunction", "PrepareFunction", "CopyFunction", "FinalizeFunction"):
        fn_arn = stack.arn_of(fn)
        assert allows(p, "lambda:InvokeFunction", fn_arn) and allows(p, "lambda:InvokeFunction", fn_arn + ":1")
    assert not allows(p, "lambda:InvokeFunction", f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:other")


def test_schedule_role_starts_only_this_state_machine_and_trusts_only_this_account(stack):
    role = next(k for k in stack.resources if k == "ScheduleRole")
    docs = [x["PolicyDocument"] for x in stack.resources[role]["Properties"]["Policies"]]
    sm = stack.resources["CopyTrailEventsStateMachine"]["Properties"]["StateMachineName"]
    assert allows(docs, "states:StartExecution", f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{sm}")
    assert not allows(docs, "states:StartExecution", f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:x")
    assert allows(docs, "sqs:SendMessage", stack.arn_of("ScheduleDeadLetterQueue"))
    trust = stack.role_trust_policy(role)["Statement"][0]
    # https://docs.aws.amazon.com/scheduler/latest/UserGuide/setting-up.html (confused deputy)
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    sched = next(v for v in stack.resources.values() if v["Type"] == "AWS::Scheduler::Schedule")["Properties"]
    assert sched["Target"]["RoleArn"] == stack.arn_of(role)
    assert sched["Target"]["DeadLetterConfig"] == {"Arn": stack.arn_of("ScheduleDeadLetterQueue")}
    assert "Name" not in sched


def test_notifications_are_off_by_default_and_publish_only_from_the_rule(stack):
    plain = cfn.expand("trailcopy", {"SourceBucket": "trail-src"}, account=ACCOUNT)
    assert not any(v["Type"] == "AWS::SNS::Topic" for v in plain.resources.values())
    # The only rule without notifications is the one that finalizes every end (below).
    assert [k for k, v in plain.resources.items() if v["Type"] == "AWS::Events::Rule"] == ["ExecutionEndedRule"]
    rule = stack.resources["CopyFailedRule"]["Properties"]
    sm_ref = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:" + \
        stack.resources["CopyTrailEventsStateMachine"]["Properties"]["StateMachineName"]
    assert rule["EventPattern"] == {"source": ["aws.states"], "detail-type": ["Step Functions Execution Status Change"],
                                    "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"], "stateMachineArn": [sm_ref]}}
    topic = stack.arn_of("NotificationTopic")
    assert rule["Targets"][0]["Arn"] == topic
    st = stack.resources["NotificationTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert st == [{"Sid": "PublishCopyFailures", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                   "Action": "sns:Publish", "Resource": topic,
                   "Condition": {"ArnEquals": {"aws:SourceArn": stack.arn_of("CopyFailedRule")}}}]
    sub = stack.resources["NotificationSubscription"]["Properties"]
    assert sub == {"TopicArn": topic, "Protocol": "email", "Endpoint": "ops@example.com"}


def test_every_end_of_an_execution_reaches_finalize(stack):
    """Issue 31 point 4: an always-on rule sends this state machine's FAILED, TIMED_OUT and ABORTED
    executions (a console Stop never reaches the Finalize state) to the Finalize function, which only
    this rule may invoke through EventBridge."""
    rule = stack.resources["ExecutionEndedRule"]["Properties"]
    sm_ref = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:" + \
        stack.resources["CopyTrailEventsStateMachine"]["Properties"]["StateMachineName"]
    assert rule["EventPattern"] == {"source": ["aws.states"], "detail-type": ["Step Functions Execution Status Change"],
                                    "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"], "stateMachineArn": [sm_ref]}}
    assert "Condition" not in stack.resources["ExecutionEndedRule"], "always on, not only with NotificationEmail"
    finalize = stack.arn_of("FinalizeFunction")
    assert [t["Arn"] for t in rule["Targets"]] == [finalize]
    perm = stack.resources["ExecutionEndedPermission"]["Properties"]
    assert perm["Principal"] == "events.amazonaws.com" and perm["Action"] == "lambda:InvokeFunction"
    assert perm["SourceArn"] == stack.arn_of("ExecutionEndedRule")


def test_function_roles_deny_what_no_code_path_needs(stack):
    for fn in ("EnumerateFunction", "PrepareFunction", "CopyFunction", "FinalizeFunction"):
        p = stack.role_policies(fn)
        assert not allows(p, "s3:DeleteObject", "arn:aws:s3:::trail-store/eds/copies/c1/record.json"), fn
        assert not allows(p, "s3:PutObject", "arn:aws:s3:::trail-src/AWSLogs/o-abc123/x"), fn
        # A whole-bucket listing (no s3:prefix, as HeadBucket too) and listing above the prefix.
        assert not allows(p, "s3:ListBucket", "arn:aws:s3:::trail-src"), fn
        assert not allows(p, "s3:ListBucket", "arn:aws:s3:::trail-src", s3__prefix="AWSLogs/"), fn
        assert not allows(p, "s3:ListBucket", "arn:aws:s3:::trail-store", s3__prefix=""), fn
    # Enumerate lists the source (issue 11 freezes each item's file list at planning). Prepare and
    # Copy may list under the source prefix too, only so that S3 answers 404, not 403, for a log file
    # deleted since planning (issue 31 point 3, API_GetObject "Permissions"); Finalize never.
    enum = stack.role_policies("EnumerateFunction")
    assert allows(enum, "s3:ListBucket", "arn:aws:s3:::trail-src", s3__prefix="AWSLogs/o-abc123/", s3__delimiter="/")
    prep = stack.role_policies("PrepareFunction")
    for fn in ("PrepareFunction", "CopyFunction"):
        assert allows(stack.role_policies(fn), "s3:ListBucket", "arn:aws:s3:::trail-src",
                      s3__prefix="AWSLogs/o-abc123/111122223333/CloudTrail/"), fn
    assert not allows(stack.role_policies("FinalizeFunction"), "s3:ListBucket", "arn:aws:s3:::trail-src",
                      s3__prefix="AWSLogs/o-abc123/", s3__delimiter="/")
    assert allows(prep, "s3:RestoreObject", "arn:aws:s3:::trail-src/AWSLogs/o-abc123/1/x.json.gz")
    assert not allows(stack.role_policies("CopyFunction"), "s3:RestoreObject",
                      "arn:aws:s3:::trail-src/AWSLogs/o-abc123/1/x.json.gz")
    copy = stack.role_policies("CopyFunction")
    assert allows(copy, "s3:GetObject", "arn:aws:s3:::trail-src/AWSLogs/o-abc123/1/x.json.gz")
    assert not allows(copy, "s3:GetObject", "arn:aws:s3:::trail-src/AWSLogs/o-other/1/x.json.gz")
    # The source key decrypts only through S3, and the key may be described directly.
    assert allows(copy, "kms:Decrypt", KEY, kms__ViaService="s3.eu-west-1.amazonaws.com")
    assert not allows(copy, "kms:Decrypt", KEY)
    assert not allows(copy, "kms:Decrypt", KEY, kms__ViaService="ec2.us-east-1.amazonaws.com")
    assert allows(copy, "kms:DescribeKey", KEY)
    assert not allows(copy, "kms:Decrypt", KEY.replace("1234abcd", "9999abcd"), kms__ViaService="s3.us-east-1.amazonaws.com")


def test_copy_reserved_concurrency_is_optional(stack):
    assert stack.resources["CopyFunction"]["Properties"]["ReservedConcurrentExecutions"] == "50"
    plain = cfn.expand("trailcopy", {"SourceBucket": "trail-src"}, account=ACCOUNT)
    assert "ReservedConcurrentExecutions" not in plain.resources["CopyFunction"]["Properties"]
    assert not any("ReservedConcurrentExecutions" in plain.resources[f]["Properties"]
                   for f in ("EnumerateFunction", "PrepareFunction", "FinalizeFunction"))


def test_created_store_bucket_keeps_versions_for_a_while(stack):
    created = cfn.expand("trailcopy", {"SourceBucket": "trail-src"}, account=ACCOUNT)
    b = created.resources["StoreBucket"]["Properties"]
    assert b["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {r["Id"]: r for r in b["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": "30"}
    assert rules["remove-expired-delete-markers"]["ExpiredObjectDeleteMarker"] is True
    assert "StoreBucket" not in stack.resources  # an existing bucket is the user's to configure


DIGEST_DAY = "CloudTrail-Digest/us-east-1/2024/03/01/"
DIGEST_NAME = "111122223333_CloudTrail-Digest_us-east-1_t_us-east-1_20240301T013148Z.json.gz"


@pytest.mark.parametrize("source_prefix,account_root", [
    ("", "AWSLogs/111122223333/"),
    ("AWSLogs/o-abc123/", "AWSLogs/o-abc123/111122223333/"),
    ("AWSLogs/o-abc123/111122223333/", "AWSLogs/o-abc123/111122223333/"),
    # Narrowed inside the account: the digests are beside CloudTrail/, outside the prefix.
    ("AWSLogs/o-abc123/111122223333/CloudTrail/us-east-1/", "AWSLogs/o-abc123/111122223333/"),
    ("corp/AWSLogs/111122223333/CloudTrail/", "corp/AWSLogs/111122223333/"),
], ids=["whole-bucket", "org", "account", "account-region", "trail-prefix-service"])
def test_only_copy_reads_digests_and_only_digests(source_prefix, account_root):
    s = cfn.expand("trailcopy", {**PARAMS, "SourcePrefix": source_prefix}, account=ACCOUNT)
    copy = s.role_policies("CopyFunction")
    digest = f"arn:aws:s3:::trail-src/{account_root}{DIGEST_DAY}{DIGEST_NAME}"
    assert allows(copy, "s3:GetObject", digest)
    assert allows(copy, "s3:ListBucket", "arn:aws:s3:::trail-src", s3__prefix=account_root + DIGEST_DAY)
    assert allows(copy, "cloudtrail:ListPublicKeys", "*")
    # Nothing else of the account becomes listable or readable through the digest grants (what lies
    # under the source prefix Copy may list: SourceListPolicy).
    for prefix in (account_root + "CloudTrail/", account_root):
        if not prefix.startswith(source_prefix):
            assert not allows(copy, "s3:ListBucket", "arn:aws:s3:::trail-src", s3__prefix=prefix), prefix
    if "/CloudTrail/" in source_prefix:
        assert not allows(copy, "s3:GetObject", f"arn:aws:s3:::trail-src/{account_root}CloudTrail-Insight/x.json.gz")
    if source_prefix.endswith("/us-east-1/"):
        assert not allows(copy, "s3:GetObject", f"arn:aws:s3:::trail-src/{account_root}CloudTrail/eu-west-1/x.json.gz")
    other = "AWSLogs/o-other/999999999999/" if source_prefix else None
    if other:
        assert not allows(copy, "s3:GetObject", f"arn:aws:s3:::trail-src/{other}{DIGEST_DAY}{DIGEST_NAME}")
        assert not allows(copy, "s3:ListBucket", "arn:aws:s3:::trail-src", s3__prefix=other + DIGEST_DAY)
    for fn in ("EnumerateFunction", "PrepareFunction", "FinalizeFunction"):
        assert not allows(s.role_policies(fn), "cloudtrail:ListPublicKeys", "*"), fn
    # (Enumerate, Prepare and Copy list everything under SourcePrefix; digest days outside it only Copy.)
    fns = ("FinalizeFunction",) if (account_root + DIGEST_DAY).startswith(source_prefix) else \
        ("PrepareFunction", "FinalizeFunction")
    for fn in fns:
        assert not allows(s.role_policies(fn), "s3:ListBucket", "arn:aws:s3:::trail-src",
                          s3__prefix=account_root + DIGEST_DAY), fn
