"""template.yaml as CloudFormation would deploy it: SAM's own transform (aws-sam-translator, the
library `sam deploy` runs server-side as AWS::Serverless-2016-10-31), then the intrinsic functions
resolved with concrete parameter values and pseudo parameters (Ref, Fn::Sub, Fn::If and the
conditions, Fn::Join, Fn::Split, Fn::Select, Fn::GetAtt, AWS::NoValue).

    stack = expand(stack_name="trailcopy", params={"SourceBucket": "trail-src", ...})
    stack.resources["CopyFunctionRole"]["Properties"]...     # resolved
    stack.role_policies("CopyFunction")                      # the policy documents of its role

Resources CloudFormation names itself get the name CloudFormation would give (`<stack>-<logical
id>-<suffix>`, cut to the type's length limit), so two expansions with different stack names can be
compared for shared physical names.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm_harness as h  # noqa: E402

PARTITION = "aws"

# Where a resource type keeps its physical name, the name's length limit, and what Ref returns.
NAME_PROPERTIES = {
    "AWS::S3::Bucket": ("BucketName", 63),
    "AWS::Lambda::Function": ("FunctionName", 64),
    "AWS::IAM::Role": ("RoleName", 64),
    "AWS::IAM::ManagedPolicy": ("ManagedPolicyName", 128),
    "AWS::Logs::LogGroup": ("LogGroupName", 512),
    "AWS::StepFunctions::StateMachine": ("StateMachineName", 80),
    "AWS::Scheduler::Schedule": ("Name", 64),
    "AWS::SQS::Queue": ("QueueName", 80),
    "AWS::SNS::Topic": ("TopicName", 256),
    "AWS::Events::Rule": ("Name", 64),
    "AWS::Glue::Database": ("DatabaseInput.Name", 255),
}


class Unresolvable(Exception):
    pass


def sam_transform(params: dict, region: str) -> dict:
    """The SAM-transformed template (CodeUri/DefinitionUri as `sam package` would leave them)."""
    from samtranslator.translator.transform import transform

    template = h.load_template()
    template["Globals"]["Function"]["CodeUri"] = "s3://artifacts/code.zip"
    for res in template["Resources"].values():
        if res["Type"] == "AWS::Serverless::StateMachine":
            res["Properties"]["Definition"] = json.loads(h.ASL_PATH.read_text())
            del res["Properties"]["DefinitionUri"]

    class NoManagedPolicies:  # the template names no AWS managed policy by name
        def load(self):
            return {}

    old = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region
    try:
        return transform(template, dict(params), NoManagedPolicies())
    finally:
        if old is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = old


@dataclass
class Stack:
    name: str
    region: str
    account: str
    params: dict
    resources: dict  # logical id -> resolved resource (conditions applied: absent when false)
    physical: dict  # logical id -> physical name / id (what Ref returns for most types)

    def role_policies(self, logical: str) -> list[dict]:
        """The policy documents attached to a function's or state machine's role (inline and the
        stack's managed policies; AWS managed policy ARNs are left out: the functions only use them
        for CloudWatch Logs, which the recorded requests do not include)."""
        props = self.resources[logical]["Properties"]
        role_arn = props.get("Role") or props.get("RoleArn")
        role_logical = next(k for k, v in self.resources.items()
                            if v["Type"] == "AWS::IAM::Role" and self.arn_of(k) == role_arn)
        role = self.resources[role_logical]["Properties"]
        docs = [p["PolicyDocument"] for p in role.get("Policies", [])]
        managed = {f"arn:{PARTITION}:iam::{self.account}:policy/{self.physical[k]}": k
                   for k, v in self.resources.items() if v["Type"] == "AWS::IAM::ManagedPolicy"}
        for arn in role.get("ManagedPolicyArns", []):
            if arn in managed:
                docs.append(self.resources[managed[arn]]["Properties"]["PolicyDocument"])
        return docs

    def role_trust_policy(self, role_logical: str) -> dict:
        return self.resources[role_logical]["Properties"]["AssumeRolePolicyDocument"]

    def arn_of(self, logical: str) -> str | None:
        return _arn(self, logical)


def _suffix(stack: str, logical: str) -> str:
    return hashlib.sha1(f"{stack}/{logical}".encode()).hexdigest()[:12].upper()


def _generated_name(stack: str, logical: str, limit: int) -> str:
    """CloudFormation's generated physical name: stack name, logical id and a random suffix, the
    first two cut so the whole fits the limit."""
    suffix = _suffix(stack, logical)
    room = max(limit - len(suffix) - 2, 2)
    head = f"{stack}-{logical}"[:room]
    return f"{head}-{suffix}"


def _get_path(props: dict, dotted: str):
    node = props
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _arn(stack: Stack, logical: str) -> str | None:
    res = stack.resources.get(logical)
    if res is None:
        return None
    t, name, r, a = res["Type"], stack.physical[logical], stack.region, stack.account
    return {
        "AWS::S3::Bucket": f"arn:{PARTITION}:s3:::{name}",
        "AWS::Lambda::Function": f"arn:{PARTITION}:lambda:{r}:{a}:function:{name}",
        "AWS::IAM::Role": f"arn:{PARTITION}:iam::{a}:role/{name}",
        "AWS::IAM::ManagedPolicy": f"arn:{PARTITION}:iam::{a}:policy/{name}",
        "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{r}:{a}:log-group:{name}:*",
        "AWS::StepFunctions::StateMachine": f"arn:{PARTITION}:states:{r}:{a}:stateMachine:{name}",
        "AWS::SQS::Queue": f"arn:{PARTITION}:sqs:{r}:{a}:{name}",
        "AWS::SNS::Topic": f"arn:{PARTITION}:sns:{r}:{a}:{name}",
        "AWS::Events::Rule": f"arn:{PARTITION}:events:{r}:{a}:rule/{name}",
        "AWS::Scheduler::Schedule": f"arn:{PARTITION}:scheduler:{r}:{a}:schedule/default/{name}",
    }.get(t)


class _Resolver:
    def __init__(self, template: dict, stack_name: str, region: str, account: str, params: dict):
        self.t = template
        self.region, self.account = region, account
        self.stack_id = (f"arn:{PARTITION}:cloudformation:{region}:{account}:stack/{stack_name}/"
                         + str(_uuid(stack_name)))
        self.pseudo = {"AWS::StackName": stack_name, "AWS::Region": region, "AWS::AccountId": account,
                       "AWS::Partition": PARTITION, "AWS::StackId": self.stack_id, "AWS::URLSuffix": "amazonaws.com",
                       "AWS::NotificationARNs": []}
        self.params = {}
        for name, spec in template.get("Parameters", {}).items():
            value = params.get(name, spec.get("Default"))
            if value is None:
                raise Unresolvable(f"parameter {name} has no value")
            if spec.get("Type") == "CommaDelimitedList":
                value = [v for v in str(value).split(",")] if not isinstance(value, list) else value
                value = value if value != [""] else [""]
            elif spec.get("Type") == "Number":
                value = str(value)
            self.params[name] = value
        self.stack_name = stack_name
        self.conditions: dict[str, bool] = {}
        self.physical: dict[str, str] = {}

    # -- conditions
    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.t["Conditions"][name]))
        return self.conditions[name]

    # -- intrinsics
    def value(self, node):
        if isinstance(node, list):
            out = [self.value(v) for v in node]
            return [v for v in out if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (k, v), = node.items()
            fn = _FUNCTIONS.get(k)
            if fn is not None:
                return fn(self, v)
        out = {}
        for k, v in node.items():
            r = self.value(v)
            if r is not _NO_VALUE:
                out[k] = r
        return out

    def ref(self, name: str):
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.physical:
            return self.ref_value(name)
        raise Unresolvable(f"Ref {name}")

    def ref_value(self, logical: str):
        t = self.t["Resources"][logical]["Type"]
        name = self.physical[logical]
        r, a = self.region, self.account
        if t == "AWS::SQS::Queue":
            return f"https://sqs.{r}.amazonaws.com/{a}/{name}"
        if t == "AWS::StepFunctions::StateMachine":
            return f"arn:{PARTITION}:states:{r}:{a}:stateMachine:{name}"
        if t == "AWS::SNS::Topic":
            return f"arn:{PARTITION}:sns:{r}:{a}:{name}"
        if t == "AWS::IAM::ManagedPolicy":
            return f"arn:{PARTITION}:iam::{a}:policy/{name}"
        return name

    def get_att(self, logical: str, attr: str):
        t = self.t["Resources"][logical]["Type"]
        name = self.physical[logical]
        r, a = self.region, self.account
        table = {
            ("AWS::S3::Bucket", "Arn"): f"arn:{PARTITION}:s3:::{name}",
            ("AWS::Lambda::Function", "Arn"): f"arn:{PARTITION}:lambda:{r}:{a}:function:{name}",
            ("AWS::IAM::Role", "Arn"): f"arn:{PARTITION}:iam::{a}:role/{name}",
            ("AWS::Logs::LogGroup", "Arn"): f"arn:{PARTITION}:logs:{r}:{a}:log-group:{name}:*",
            ("AWS::SQS::Queue", "Arn"): f"arn:{PARTITION}:sqs:{r}:{a}:{name}",
            ("AWS::SNS::Topic", "TopicArn"): f"arn:{PARTITION}:sns:{r}:{a}:{name}",
            ("AWS::Events::Rule", "Arn"): f"arn:{PARTITION}:events:{r}:{a}:rule/{name}",
            ("AWS::StepFunctions::StateMachine", "Name"): name,
            ("AWS::StepFunctions::StateMachine", "Arn"): f"arn:{PARTITION}:states:{r}:{a}:stateMachine:{name}",
        }
        if (t, attr) not in table:
            raise Unresolvable(f"Fn::GetAtt {logical}.{attr} ({t})")
        return table[(t, attr)]

    def sub(self, v):
        text, local = (v, {}) if isinstance(v, str) else (v[0], {k: self.value(x) for k, x in v[1].items()})
        out, i = [], 0
        while i < len(text):
            j = text.find("${", i)
            if j < 0:
                out.append(text[i:])
                break
            out.append(text[i:j])
            k = text.index("}", j)
            name = text[j + 2:k]
            if name.startswith("!"):
                out.append("${" + name[1:] + "}")
            elif name in local:
                out.append(str(local[name]))
            elif "." in name and name.split(".")[0] in self.physical:
                logical, attr = name.split(".", 1)
                out.append(self.get_att(logical, attr))
            else:
                val = self.ref(name)
                out.append(",".join(val) if isinstance(val, list) else str(val))
            i = k + 1
        return "".join(out)


class _NoValue:
    def __repr__(self):
        return "AWS::NoValue"


_NO_VALUE = _NoValue()


def _uuid(seed: str):
    import uuid
    return uuid.UUID(hashlib.md5(seed.encode()).hexdigest())


def _fn_if(r: _Resolver, v):
    return r.value(v[1] if r.condition(v[0]) else v[2])


def _fn_getatt(r: _Resolver, v):
    logical, attr = (v.split(".", 1) if isinstance(v, str) else v)
    return r.get_att(logical, attr)


_FUNCTIONS = {
    "Ref": lambda r, v: r.ref(v),
    "Fn::Sub": lambda r, v: r.sub(v),
    "Fn::If": _fn_if,
    "Fn::Equals": lambda r, v: _scalar(r.value(v[0])) == _scalar(r.value(v[1])),
    "Fn::Not": lambda r, v: not r.value(v[0]),
    "Fn::And": lambda r, v: all(r.value(x) for x in v),
    "Fn::Or": lambda r, v: any(r.value(x) for x in v),
    "Condition": lambda r, v: r.condition(v),
    "Fn::Join": lambda r, v: v[0].join(str(x) for x in r.value(v[1])),
    "Fn::Split": lambda r, v: r.value(v[1]).split(v[0]),
    "Fn::Select": lambda r, v: r.value(v[1])[int(r.value(v[0]))],
    "Fn::GetAtt": _fn_getatt,
}


def _scalar(v):
    return str(v) if not isinstance(v, (list, dict, bool)) else v


def expand(stack_name: str = "trailcopy", params: dict | None = None, region: str = "us-east-1",
           account: str = "111122223333", physical: dict | None = None) -> Stack:
    """`physical`: names to give resources CloudFormation would name (e.g. {"StoreBucket": "b"})."""
    params = {"SourceBucket": "trail-src", **(params or {})}
    template = sam_transform(params, region)
    r = _Resolver(template, stack_name, region, account, params)
    resources = template["Resources"]
    live = {k: v for k, v in resources.items() if "Condition" not in v or r.condition(v["Condition"])}
    # Physical names first (explicit names may reference other resources: resolve until stable).
    for logical, res in live.items():
        prop, limit = NAME_PROPERTIES.get(res["Type"], (None, 64))
        r.physical[logical] = _generated_name(stack_name, logical, limit).lower() \
            if res["Type"] == "AWS::S3::Bucket" else _generated_name(stack_name, logical, limit)
    r.physical.update({k: v for k, v in (physical or {}).items() if k in live})
    for logical, res in live.items():
        prop, _ = NAME_PROPERTIES.get(res["Type"], (None, 0))
        explicit = _get_path(res.get("Properties", {}), prop) if prop else None
        if explicit is not None:
            r.physical[logical] = r.value(explicit)
    resolved = {}
    for logical, res in live.items():
        resolved[logical] = {k: (r.value(v) if k == "Properties" else v) for k, v in res.items()}
    return Stack(stack_name, region, account, params, resolved, dict(r.physical))


def physical_names(stack: Stack) -> dict[str, str]:
    """logical id -> the physical name of every resource whose type has one (explicit or generated)."""
    return {k: stack.physical[k] for k, res in stack.resources.items() if res["Type"] in NAME_PROPERTIES}


def explicit_names(stack: Stack) -> dict[str, str]:
    """logical id -> names the template (or SAM) sets explicitly, not left to CloudFormation."""
    out = {}
    for k, res in stack.resources.items():
        prop = NAME_PROPERTIES.get(res["Type"], (None,))[0]
        v = _get_path(res.get("Properties", {}), prop) if prop else None
        if v is not None:
            out[k] = v
    return out


def state_machine_definition(stack: Stack) -> dict:
    """The definition as deployed: DefinitionSubstitutions applied."""
    sm = next(v for v in stack.resources.values() if v["Type"] == "AWS::StepFunctions::StateMachine")
    p = sm["Properties"]
    text = json.dumps(p["Definition"]) if "Definition" in p else p["DefinitionString"]
    for k, v in p.get("DefinitionSubstitutions", {}).items():
        text = text.replace("${" + k + "}", str(v))
    return json.loads(text)


if __name__ == "__main__":
    s = expand(sys.argv[1] if len(sys.argv) > 1 else "trailcopy")
    print(json.dumps(explicit_names(s), indent=1))
