"""Static checks of template.yaml, statemachine/copy-trail-events.asl.json and samconfig.toml:
names agree on both sides (substitutions, functions, binaries, parameters, conditions, env vars),
least-privilege IAM, the store bucket's protections, the Glue table, the Distributed Map features
moto and AWS both accept. Also runs cfn-lint and asl-validator (installed by .ci/setup)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm_harness as h  # noqa: E402

ROOT = h.ROOT
TEMPLATE = h.load_template()
RESOURCES = TEMPLATE["Resources"]
PARAMETERS = TEMPLATE["Parameters"]
CONDITIONS = TEMPLATE["Conditions"]
ASL_TEXT = h.ASL_PATH.read_text()
ASL = json.loads(ASL_TEXT)
SM_NAME, SM = h.state_machine_resource(TEMPLATE)
PSEUDO = {"AWS::AccountId", "AWS::Region", "AWS::Partition", "AWS::StackName", "AWS::StackId",
          "AWS::URLSuffix", "AWS::NoValue", "AWS::NotificationARNs"}
# Every Lambda task retries Lambda's transient service errors and throttling
# (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html).
RETRYABLE = {"Retryable", "Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
             "Lambda.TooManyRequestsException"}
# Prepare and Copy are idempotent from their checkpoints: they also retry what kills an invocation
# (Lambda.Unknown: out of memory; Sandbox.Timedout: the function's timeout; Runtime.ExitError: a crash).
ITEM_RETRYABLE = RETRYABLE | {"Lambda.Unknown", "Sandbox.Timedout", "Runtime.ExitError", "States.Timeout"}
# The only statements that may name Resource "*": CloudWatch Logs delivery for the state machine's
# logging has no resource-level permissions (AWS requires "*").
# Actions without resource types, where AWS requires Resource "*": CloudWatch Logs delivery (Step
# Functions docs) and cloudtrail:ListPublicKeys
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awscloudtrail.html).
# lambda:GetAccountSettings has no resource type (the Service Authorization Reference lists none).
STAR_ALLOWED = {(SM_NAME, "LogDelivery"), ("DigestReadPolicy", "GetCloudTrailPublicKeys"),
                ("EnumerateFunction", "ReadAccountConcurrency")}


def functions() -> dict[str, dict]:
    return {n: r for n, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}


def walk(node, path=()):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


def sub_names(text: str) -> set[str]:
    """Variables of an Fn::Sub string (${!x} is a literal)."""
    return {m for m in re.findall(r"\$\{([^}!][^}]*)\}", text)}


def asl_states(states: dict | None = None):
    for name, st in (states or ASL["States"]).items():
        yield name, st
        if st["Type"] == "Map":
            yield from asl_states(st["ItemProcessor"]["States"])


def lambda_tasks() -> dict[str, dict]:
    return {n: s for n, s in asl_states() if s["Type"] == "Task"
            and s["Resource"] == "arn:${Partition}:states:::lambda:invoke"}


# ----------------------------------------------------------------------------- names on both sides
def test_substitutions_match_on_both_sides():
    assert h.asl_substitution_names() == h.template_substitution_names(TEMPLATE)


def test_every_function_is_a_lambda_task_of_the_definition_and_invokable():
    subs = SM["Properties"]["DefinitionSubstitutions"]
    arn_subs = {k: v["Fn::GetAtt"][0] for k, v in subs.items() if k.endswith("FunctionArn")}
    assert set(arn_subs.values()) == set(functions()), "one substitution per function"
    for k, v in subs.items():
        if k.endswith("FunctionArn"):
            assert v == {"Fn::GetAtt": [arn_subs[k], "Arn"]}
    used = {t["Parameters"]["FunctionName"] for t in lambda_tasks().values()}
    assert used == {"${" + k + "}" for k in arn_subs}
    invokable = {p["LambdaInvokePolicy"]["FunctionName"]["Ref"]
                 for p in SM["Properties"]["Policies"] if isinstance(p, dict) and "LambdaInvokePolicy" in p}
    assert invokable == set(functions())


def test_function_binaries_exist_in_the_workspace():
    binaries = {n: f["Metadata"]["BuildProperties"]["Binary"] for n, f in functions().items()}
    assert binaries == h.FUNCTIONS
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    declared = set()
    for member in workspace["workspace"]["members"]:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        declared |= {b["name"] for b in manifest.get("bin", [])}
        if (ROOT / member / "src" / "main.rs").exists():
            declared.add(manifest["package"]["name"])
    missing = set(binaries.values()) - declared
    if missing == set(binaries.values()) and not (ROOT / "functions" / "enumerate").exists():
        pytest.skip("the Lambda crates are not written yet")
    assert not missing, f"binaries named by template.yaml but not in the workspace: {missing}"


def test_every_ref_names_a_parameter_resource_or_pseudo_parameter():
    known = set(PARAMETERS) | set(RESOURCES) | PSEUDO
    bad = []
    for path, node in walk(TEMPLATE):
        if not isinstance(node, dict) or len(node) != 1:
            continue
        (k, v), = node.items()
        if k == "Ref" and v not in known:
            bad.append((path, v))
        elif k == "Fn::GetAtt" and v[0] not in RESOURCES:
            bad.append((path, v))
        elif k == "Fn::Sub":
            text = v if isinstance(v, str) else v[0]
            local = set(v[1]) if isinstance(v, list) else set()
            for name in sub_names(text):
                if name.split(".")[0] not in known | local:
                    bad.append((path, name))
    assert not bad


def test_every_parameter_and_condition_is_used_and_defined():
    refs, conds = set(), set()
    for path, node in walk({k: v for k, v in TEMPLATE.items() if k != "Parameters"}):
        if isinstance(node, dict) and len(node) == 1:
            (k, v), = node.items()
            if k == "Ref":
                refs.add(v)
            elif k == "Fn::Sub":
                refs |= sub_names(v if isinstance(v, str) else v[0])
            elif k == "Fn::If":
                conds.add(v[0])
            elif k == "Condition" and isinstance(v, str):
                conds.add(v)
    for res in RESOURCES.values():
        if "Condition" in res:
            conds.add(res["Condition"])
    assert set(PARAMETERS) <= refs, f"unused parameters: {set(PARAMETERS) - refs}"
    assert conds == set(CONDITIONS), (conds ^ set(CONDITIONS))
    expected = {"SourceBucket", "SourcePrefix", "StoreBucketName", "StorePrefix", "RetentionDays",
                "SourceKmsKeyArns", "StoreKmsKeyArn", "ScheduleExpression", "ScheduleEnabled",
                "MaxConcurrency"}
    assert expected <= set(PARAMETERS)
    assert PARAMETERS["RetentionDays"]["Default"] == 2557
    assert PARAMETERS["SourceKmsKeyArns"]["Type"] == "CommaDelimitedList"
    assert PARAMETERS["ScheduleEnabled"]["Default"] == "false"


def test_environment_variables_are_read_by_the_functions():
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert env["DEFAULT_LAST"] == "PT1H"
    assert {"DEFAULT_SOURCE", "DEFAULT_STORE", "RETENTION_DAYS", "RUST_LOG"} <= set(env)
    sources = "".join(p.read_text() for p in (ROOT / "functions").glob("*/src/**/*.rs"))
    if "lambda_runtime" not in sources:
        pytest.skip("the Lambda crates are not written yet")
    unread = {v for v in env if v != "RUST_LOG" and f'"{v}"' not in sources}
    assert not unread, f"set by template.yaml, read by no function: {unread}"
    assert TEMPLATE["Globals"]["Function"]["LoggingConfig"]["LogFormat"] == "JSON"


# ----------------------------------------------------------------------------- functions
def test_functions_runtime_build_memory_and_timeout():
    g = TEMPLATE["Globals"]["Function"]
    assert g["Runtime"] == "provided.al2023" and g["Architectures"] == ["arm64"] and g["CodeUri"] == "."
    for name, f in functions().items():
        assert f["Metadata"]["BuildMethod"] == "rust-cargolambda"
        p = f["Properties"]
        if name == "CopyFunction":
            assert (p["MemorySize"], p["Timeout"]) == (1024, 900)
        elif name == "EnumerateFunction":
            # Planning an organization's year: up to 3 M buffered listed files, minutes of listing.
            assert (p["MemorySize"], p["Timeout"]) == (2048, 900)
        else:
            assert p["MemorySize"] == 256 and 60 <= p["Timeout"] <= 300
    # A Task's TimeoutSeconds outlasts its function's timeout (a Lambda timeout is the function's error).
    timeouts = {f"${{{n}Arn}}": f["Properties"]["Timeout"] for n, f in functions().items()}
    for name, task in lambda_tasks().items():
        assert task["TimeoutSeconds"] > timeouts[task["Parameters"]["FunctionName"]], name


# ----------------------------------------------------------------------------- IAM
def policy_statements():
    """(owner, sid, statement) for every IAM statement the stack creates."""
    for name, res in RESOURCES.items():
        if res["Type"] == "AWS::IAM::ManagedPolicy":
            docs = [res["Properties"]["PolicyDocument"]]
        elif res["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            docs = [p for p in res["Properties"].get("Policies", []) if isinstance(p, dict) and "Statement" in p]
        elif res["Type"] == "AWS::IAM::Role":
            docs = [p["PolicyDocument"] for p in res["Properties"].get("Policies", [])]
        else:
            continue
        for doc in docs:
            for st in doc["Statement"]:
                branches = st["Fn::If"][1:] if "Fn::If" in st else [st]
                for b in branches:
                    if isinstance(b, dict) and "Effect" in b:
                        yield name, b.get("Sid"), b


def as_list(v):
    return v if isinstance(v, list) else [v]


def test_no_wildcard_resources_or_actions_except_where_aws_requires_them():
    stars = set()
    for owner, sid, st in policy_statements():
        assert st["Effect"] == "Allow"
        for a in as_list(st["Action"]):
            assert "*" not in a, (owner, sid, a)
        if "*" in as_list(st["Resource"]):
            stars.add((owner, sid))
    assert stars == STAR_ALLOWED


def statement(owner: str, sid: str) -> dict:
    found = [st for o, s, st in policy_statements() if (o, s) == (owner, sid)]
    assert len(found) == 1, (owner, sid)
    return found[0]


def test_source_access_is_read_only_under_the_prefix_and_kms_only_via_s3():
    actions = {a for o, s, st in policy_statements() for a in as_list(st["Action"])
               if "SourceBucket" in json.dumps(st["Resource"])}
    assert actions == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:RestoreObject"}
    lst = statement("SourceListPolicy", "ListSourcePrefix")
    assert lst["Condition"]["Fn::If"][1]["StringLike"]["s3:prefix"] == {"Fn::Sub": "${SourcePrefix}*"}
    get = statement("SourceReadPolicy", "ReadSourceObjects")
    assert get["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${SourceBucket}/${SourcePrefix}*"}
    dec = statement("SourceReadPolicy", "DecryptSourceObjectsThroughS3")
    assert dec["Action"] == "kms:Decrypt" and dec["Resource"] == {"Ref": "SourceKmsKeyArns"}
    assert "kms:ViaService" in dec["Condition"]["StringLike"]
    assert statement("PrepareFunction", "RestoreArchivedSourceObjects")["Action"] == "s3:RestoreObject"


def test_store_access_is_limited_to_the_store_prefix():
    rw = statement("StorePolicy", "ReadWriteStoreObjects")
    assert set(as_list(rw["Action"])) == {"s3:GetObject", "s3:PutObject"}
    for branch in rw["Resource"]["Fn::If"][1:]:
        assert branch["Fn::Sub"].endswith("/${StorePrefix}*")
    # Deletes reach only a completed item's resume-only objects (copy.rs tidies them); the one
    # DeleteObject call in the sources is the storage seam's (grep to keep it so).
    rm = statement("StorePolicy", "DeleteResumeOnlyObjects")
    assert as_list(rm["Action"]) == ["s3:DeleteObject"]
    for branch in rm["Resource"]["Fn::If"][1:]:
        assert branch["Fn::Sub"].endswith("/${StorePrefix}copies/*/items/*")
    callers = [p.name for p in (ROOT / "functions").glob("*/src/**/*.rs") if ".delete_object()" in p.read_text()]
    assert callers == ["storage.rs"], callers
    assert not any("delete_objects" in p.read_text() for p in (ROOT / "functions").glob("*/src/**/*.rs"))
    kms = statement("StorePolicy", "EncryptStoreObjectsThroughS3")
    assert set(kms["Action"]) == {"kms:GenerateDataKey", "kms:Decrypt"}
    assert kms["Resource"] == {"Ref": "StoreKmsKeyArn"}


def test_state_machine_role_covers_the_distributed_map():
    # The statements exist; tests/test_stack_iam.py evaluates them against the requests AWS documents.
    for sid in ("RunChildExecutions", "ManageChildExecutions", "ReadWorkItems", "WriteMapRunResults"):
        statement(SM_NAME, sid)
    reader = statement(SM_NAME, "ReadWorkItems")
    assert all(b["Fn::Sub"].endswith("${StorePrefix}copies/*") for b in reader["Resource"]["Fn::If"][1:])
    writer = statement(SM_NAME, "WriteMapRunResults")
    prefix = next(s for _, s in asl_states() if s["Type"] == "Map")["ResultWriter"]["Parameters"]["Prefix"]
    assert all(b["Fn::Sub"].endswith(prefix + "/*") for b in writer["Resource"]["Fn::If"][1:])
    assert {"s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"} == \
        set(writer["Action"])


# ----------------------------------------------------------------------------- store, Glue, logs
def test_store_bucket_is_private_encrypted_tls_only_and_retained():
    b = RESOURCES["StoreBucket"]
    assert b["DeletionPolicy"] == "Retain"
    pab = b["Properties"]["PublicAccessBlockConfiguration"]
    assert pab == {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
                   "RestrictPublicBuckets": True}
    enc = b["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    kms, aes = enc["ServerSideEncryptionByDefault"]["Fn::If"][1:]
    assert kms["SSEAlgorithm"] == "aws:kms" and aes == {"SSEAlgorithm": "AES256"}
    policy = RESOURCES["StoreBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in policy if s["Effect"] == "Deny"
            and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
    assert len(deny) == 1 and deny[0]["Principal"] == "*" and deny[0]["Action"] == "s3:*"
    assert len(deny[0]["Resource"]) == 2  # the bucket and its objects


def test_glue_table_projects_the_date_partition_over_events():
    t = RESOURCES["EventsTable"]["Properties"]["TableInput"]
    p = t["Parameters"]
    assert p["projection.enabled"] == "true" and p["projection.date.type"] == "date"
    assert p["projection.date.format"] == "yyyy-MM-dd" and p["projection.date.range"] == "2013-01-01,NOW"
    for branch in p["storage.location.template"]["Fn::If"][1:]:
        assert branch["Fn::Sub"].endswith("events/date=${!date}/")
    assert t["PartitionKeys"][0]["Name"] == "date" and t["PartitionKeys"][0]["Type"] == "string"
    sd = t["StorageDescriptor"]
    assert sd["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
    cols = {c["Name"]: c["Type"] for c in sd["Columns"]}
    assert cols["eventTime"] == "timestamp"
    assert cols["readOnly"] == cols["managementEvent"] == "boolean"
    assert cols["requestParameters"] == cols["otherFields"] == cols["sourceLogFile"] == "string"
    assert cols["userIdentity"].startswith("struct<type:string,principalId:string,arn:string,")


def test_state_machine_is_standard_and_logs_to_its_log_group():
    p = SM["Properties"]
    assert p["Type"] == "STANDARD" and p["DefinitionUri"] == "statemachine/copy-trail-events.asl.json"
    dest = p["Logging"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]
    assert RESOURCES[dest["Fn::GetAtt"][0]]["Type"] == "AWS::Logs::LogGroup"


def test_schedule_is_off_by_default_and_copies_the_window_ending_at_the_scheduled_time():
    ev = SM["Properties"]["Events"]["ScheduledSnapshot"]
    assert ev["Type"] == "ScheduleV2"
    assert ev["Properties"]["State"] == {"Fn::If": ["ScheduleOn", "ENABLED", "DISABLED"]}
    p = ev["Properties"]
    # A second stack in the account must deploy: no fixed schedule name (SAM would set one).
    assert p["OmitName"] is True and "Name" not in p
    # Runs Scheduler cannot start go to a dead-letter queue after bounded retries.
    assert p["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}}
    assert RESOURCES["ScheduleDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    assert p["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    # Our own role, whose trust policy carries the confused-deputy condition.
    assert p["RoleArn"] == {"Fn::GetAtt": ["ScheduleRole", "Arn"]}
    trust = RESOURCES["ScheduleRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [{"Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"}, "Action": "sts:AssumeRole",
                      "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}}]
    text = ev["Properties"]["Input"]["Fn::Sub"]
    doc = json.loads(text.replace("${ScheduleWindow}", "P1D"))
    assert doc["request"] == {"scheduledTime": "<aws.scheduler.scheduled-time>", "window": "P1D"}
    assert isinstance(doc["settleSeconds"], int)


def test_outputs():
    assert {"StateMachineArn", "StoreLocation", "AthenaTable", "ConsoleLink"} <= set(TEMPLATE["Outputs"])


# ----------------------------------------------------------------------------- the definition
def test_definition_uses_only_what_moto_and_aws_both_run():
    assert "QueryLanguage" not in ASL_TEXT and "JSONata" not in ASL_TEXT
    assert "ItemBatcher" not in ASL_TEXT
    maps = [s for _, s in asl_states() if s["Type"] == "Map"]
    assert len(maps) == 1
    m = maps[0]
    assert m["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert m["ItemReader"]["Resource"] == "arn:${Partition}:states:::s3:getObject"
    assert m["ItemReader"]["ReaderConfig"]["InputType"] == "JSON"
    assert isinstance(m["ToleratedFailurePercentage"], float)
    assert "ResultWriter" in m  # keeps child outputs out of the state, whatever the item count
    # Any failure of the Map itself reaches Finalize (the record must not stay IN_PROGRESS).
    assert m["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.mapError", "Next": "Finalize"}]


def test_the_execution_has_an_overall_timeout_that_outlasts_the_longest_restore_wait():
    rust = (ROOT / "functions" / "core" / "src" / "serverless.rs").read_text()
    timeout = int(re.search(r"EXECUTION_TIMEOUT_SECONDS: u64 = ([0-9_]+) \* ([0-9_]+);", rust).group(1)) * 86_400
    assert ASL["TimeoutSeconds"] == timeout, "the ASL and serverless.rs disagree on the execution timeout"
    # The default Bulk wait (Deep Archive: 48 h + a quarter) fits with room to copy.
    assert timeout > 60 * 3600 + 86_400


def retry_wait_seconds(r: dict) -> float:
    """The longest total wait of a retrier: Step Functions waits IntervalSeconds, then multiplies by
    BackoffRate, capped by MaxDelaySeconds
    (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html)."""
    interval, rate, cap = r.get("IntervalSeconds", 1), r.get("BackoffRate", 2.0), r.get("MaxDelaySeconds", 10**9)
    return sum(min(interval * rate ** i, cap) for i in range(r.get("MaxAttempts", 3)))


def retry_budget(r: dict) -> tuple[float, float]:
    """(longest, average) total wait. With JitterStrategy FULL each wait is drawn uniformly between 0
    and its backoff interval, so the total averages half the longest (issue 31 point 1)."""
    longest = retry_wait_seconds(r)
    return longest, longest / 2 if r.get("JitterStrategy") == "FULL" else longest


def test_the_docs_state_the_retry_budget_with_jitter():
    budgets = {retry_budget(t["Retry"][0]) for t in lambda_tasks().values()}
    assert len(budgets) == 1, budgets
    longest, average = budgets.pop()
    assert (round(longest / 60), round(average / 60)) == (32, 16), (longest, average)
    said = f"up to about {round(longest / 60)} minutes in all, about {round(average / 60)} on average"
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert said in readme, said
    assert said in PARAMETERS["MaxConcurrency"]["Description"], said
    assert "half an hour" not in readme


def test_every_lambda_task_retries_retryable_errors_with_bounded_backoff():
    for name, task in lambda_tasks().items():
        retry = task["Retry"][0]
        wanted = ITEM_RETRYABLE if name in ("Prepare", "Copy") else RETRYABLE
        assert wanted <= set(retry["ErrorEquals"]), (name, wanted - set(retry["ErrorEquals"]))
        assert retry["BackoffRate"] > 1 and retry["MaxAttempts"] <= 10, name
        # Long enough for a throttled, saturated account: minutes, not seconds.
        assert retry_wait_seconds(retry) >= 15 * 60, (name, retry_wait_seconds(retry))
        assert retry["IntervalSeconds"] <= 5, f"{name}: the first retry of a transient fault should be quick"
        assert "InvalidRequest" not in json.dumps(task["Retry"]), name
        assert "ResultSelector" in task, f"{name}: keep only the fields the state needs"


def test_payloads_match_the_function_contract():
    tasks = lambda_tasks()
    assert tasks["Enumerate"]["Parameters"]["Payload"] == {
        "input.$": "$", "executionArn.$": "$$.Execution.Id",
        "maxConcurrency.$": "States.StringToJson('${MaxConcurrency}')"}
    # The Map runs as many items as Enumerate found the account can invoke (issue 31 point 1).
    assert tasks["Enumerate"]["ResultSelector"]["maxConcurrency.$"] == "$.Payload.maxConcurrency"
    keys = lambda n: {k.removesuffix(".$") for k in tasks[n]["Parameters"]["Payload"]}
    # Prepare and Copy get the work item as workitems.json holds it (the ItemSelector passes it whole).
    assert keys("Prepare") == {"item", "waitedSeconds"}
    assert keys("Copy") == {"item", "cursor"}
    assert keys("Finalize") == {"copyId", "store", "mapError"}


def test_samconfig_defaults():
    cfg = tomllib.loads((ROOT / "samconfig.toml").read_text())["default"]
    assert cfg["global"]["parameters"]["stack_name"] == "trailcopy"
    deploy = cfg["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True and deploy["confirm_changeset"] is True
    # Issue 31 point 7: no per-function "does not support value False for building in source" warning.
    assert cfg["build"]["parameters"]["build_in_source"] is True


def test_athena_is_ready_in_a_fresh_account():
    """Issue 31 point 6: a region where the account never used Athena has no query result location;
    the stack's work group brings one (engine version 3, results in the store bucket under their own
    prefix, expiring, encrypted, the configuration enforced)."""
    wg = RESOURCES["AthenaWorkGroup"]["Properties"]
    cfg = wg["WorkGroupConfiguration"]
    assert cfg["EnforceWorkGroupConfiguration"] is True
    assert cfg["EngineVersion"] == {"SelectedEngineVersion": "Athena engine version 3"}
    loc = cfg["ResultConfiguration"]["OutputLocation"]["Fn::If"]
    assert loc == ["CreateStoreBucket", {"Fn::Sub": "s3://${StoreBucket}/${StorePrefix}athena-results/"},
                   {"Fn::Sub": "s3://${StoreBucketName}/${StorePrefix}athena-results/"}]
    enc = cfg["ResultConfiguration"]["EncryptionConfiguration"]["Fn::If"]
    assert enc[0] == "HasStoreKmsKey" and enc[1]["EncryptionOption"] == "SSE_KMS" and enc[2]["EncryptionOption"] == "SSE_S3"
    assert "Condition" not in RESOURCES["AthenaWorkGroup"]
    rules = {r["Id"]: r for r in RESOURCES["StoreBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-athena-results"]["Prefix"] == {"Fn::Sub": "${StorePrefix}athena-results/"}
    assert 1 <= rules["expire-athena-results"]["ExpirationInDays"] <= 30
    assert TEMPLATE["Outputs"]["AthenaWorkGroup"]["Value"] == {"Ref": "AthenaWorkGroup"}
    # The README's smoke test queries in this work group, not `primary`.
    readme = (ROOT / "README.md").read_text()
    assert "--work-group primary" not in readme and "--work-group \"$WG\"" in readme


def test_the_source_bucket_is_required_in_the_guided_deploy():
    """Issue 31 point 7: `sam deploy --guided` offered SourceBucket as `[]`; an empty answer must be
    refused by the parameter's own constraints, and a real bucket name accepted."""
    import re
    p = PARAMETERS["SourceBucket"]
    assert "Default" not in p and p["MinLength"] == 3 and p["MaxLength"] == 63
    for name, ok in [("", False), ("ab", False), ("my-cloudtrail-bucket", True), ("a.b-c", True),
                     ("My_Bucket", False), ("-bucket", False), ("b" * 64, False)]:
        fits = p["MinLength"] <= len(name) <= p["MaxLength"] and re.fullmatch(p["AllowedPattern"].strip("^$"), name)
        assert bool(fits) == ok, name
    assert "required" in p["ConstraintDescription"]


# ----------------------------------------------------------------------------- linters
def run_tool(argv: list[str]) -> subprocess.CompletedProcess:
    exe = Path(argv[0])
    if not exe.exists():
        pytest.fail(f"{exe} missing: run bash .ci/setup")
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cfn_lint_is_clean():
    r = run_tool([str(h.VENV_BIN / "cfn-lint"), "template.yaml"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_asl_validator_is_clean(tmp_path):
    # asl-validator checks Resource ARNs as written; AWS applies the DefinitionSubstitutions first
    # (the service integrations are `arn:${Partition}:states:::...`), so the definition is checked
    # as deployed, in each partition.
    for partition in ("aws", "aws-cn", "aws-us-gov"):
        values = {n: f"arn:{partition}:lambda:us-east-1:123456789012:function:{n}" for n in
                  h.template_substitution_names(TEMPLATE) if n.endswith("FunctionArn")}
        values.update({"StoreBucket": "store-bucket", "StorePrefix": "eds/", "MaxConcurrency": 40,
                       "Partition": partition})
        path = tmp_path / f"definition-{partition}.json"
        path.write_text(h.definition(values))
        r = run_tool([str(ROOT / ".ci" / "node_modules" / ".bin" / "asl-validator"), "--json-path", str(path)])
        assert r.returncode == 0, partition + "\n" + r.stdout + r.stderr


def test_nothing_is_named_in_one_partition_only():
    """Issue 31 point 5: ARNs and service principals follow the stack's partition and URL suffix
    (AWS::Partition: aws, aws-cn, aws-us-gov; AWS::URLSuffix: amazonaws.com, amazonaws.com.cn)."""
    asl = h.ASL_PATH.read_text()
    assert "arn:aws:" not in asl, "the definition names the aws partition"
    resources = {s.get("Resource") for _, s in asl_states() if s.get("Type") == "Task"}
    assert resources and all(r.startswith("arn:${Partition}:states:::") for r in resources), resources
    assert SM["Properties"]["DefinitionSubstitutions"]["Partition"] == {"Ref": "AWS::Partition"}
    vias = []

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "kms:ViaService":
                    vias.append(x)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(TEMPLATE)
    assert vias and all(v == {"Fn::Sub": "s3.*.${AWS::URLSuffix}"} for v in vias), vias
