#!/usr/bin/env python3
"""Deterministic CloudTrail trail generator (stdlib only).

Writes a trail folder in the layout a trail delivers to S3:

    OUT/[PREFIX/]AWSLogs/[o-orgid/]<acct>/CloudTrail/<region>/YYYY/MM/DD/
        <acct>_CloudTrail_<region>_YYYYMMDDTHHmmZ_<16 alnum>.json.gz

with realistic events (~1-2 KB each), every event's eventTime within the 15 minutes before its
file's name timestamp, plus optional defects (non-gzip files, a file not named like a log file,
corrupt/truncated gzip, gzip of non-JSON, JSON without Records, invalid events, redelivered duplicates, stray events far outside
the file's time, digest/insight/other-service folders that must be ignored).

A ground-truth manifest (JSON, written outside the trail folder) lists every file and every event
so that tests compute the expected outcome of a copy of any [start, end) themselves (see
tests/expect.py). Same seed + same options => byte-identical output.

Defects land on the middle generated day, in files named 10:00-14:00 UTC, so any test range that
covers that day whole sees all of them (the outcome of a defect file is then unambiguous).

Events are plausible: who makes a call, from where and with which user agent follows the CALLERS
table (people in the console and on the CLI, a Lambda function's role, AWS services with invokedBy).

The README's sample trail (examples/sample-trail) is, exactly:
    python3 tests/gen_trail.py --out examples/sample-trail --seed 2026 --start-day 2026-11-01 --days 2 \\
        --files-per-day 6 --events-per-file 40 --org-id o-exampleorg1 --digest --duplicates 3
then signed digests replace the --digest decoys (tests/gen_digests.py's docstring gives the command).

Examples:
    python3 tests/gen_trail.py --out /tmp/trail --manifest /tmp/trail.json --seed 7 \\
        --accounts 3 --regions us-east-1,eu-west-1 --start-day 2024-03-01 --days 3 \\
        --org-id o-abc123defg --prefix corp/trails --all-defects
    python3 tests/gen_trail.py --out /tmp/big --target-mb 1024 --manifest /tmp/big.json \\
        --manifest-detail summary
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import random
import string
import sys
import zlib

ALNUM = string.ascii_letters + string.digits
FIFTEEN_MIN = 15 * 60

# Kinds of invalid events the contract rejects (the reason is for humans; the engine's wording may differ).
INVALID_KINDS = ("missing-eventTime", "bad-eventTime", "missing-eventName", "not-an-object")


# Who makes which call, so events read like a real trail (CloudTrail userIdentity and record contents
# references: https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-user-identity.html,
# .../cloudtrail-event-reference-record-contents.html): people sign in and click in the console with a browser,
# use the CLI and SDKs from public addresses; a Lambda function's role calls with its runtime's SDK; a call an AWS
# service makes has the service's DNS name as sourceIPAddress and userAgent, and names it in invokedBy.
BROWSERS = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
            "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0 — ünïcödé ☃")
CLI_AGENTS = ("aws-cli/2.15.30 md/awscrt#0.19.19 ua/2.0 os/linux#6.1 md/arch#x86_64 lang/python#3.11.8",
              "aws-cli/2.15.30 md/awscrt#0.19.19 ua/2.0 os/macos#23.3.0 md/arch#arm64 lang/python#3.11.8 md/prompt#off",
              "Boto3/1.34.51 md/Botocore#1.34.51 ua/2.0 os/linux#5.10 md/arch#x86_64 lang/python#3.12.2")
CI_AGENTS = ("aws-sdk-go-v2/1.25.2 os/linux lang/go#1.22.0 api/s3#1.51.1",
             "aws-cli/2.15.30 md/awscrt#0.19.19 ua/2.0 os/linux#6.1 md/arch#x86_64 lang/python#3.11.8 exec-env/CI")
LAMBDA_AGENTS = ("Boto3/1.34.51 md/Botocore#1.34.51 ua/2.0 os/linux#5.10 md/arch#x86_64 lang/python#3.12.2 "
                 "exec-env/AWS_Lambda_python3.12",
                 "aws-sdk-go-v2/1.25.2 os/linux lang/go#1.22.0 exec-env/AWS_Lambda_provided.al2023")
# actor kind -> (principals, user agents, from a public address?)
ACTORS = {
    "console": (("alice", "bob", "José", "Admin", "Root"), BROWSERS, True),
    "cli": (("alice", "bob", "José", "data-eng", "Admin", "OrganizationAccountAccessRole"), CLI_AGENTS, True),
    "ci": (("ci-deployer",), CI_AGENTS, True),
    "lambda": (("lambda-exec",), LAMBDA_AGENTS, True),
    "via": (("lambda-exec", "data-eng", "ci-deployer"), (), False),
}
# eventName -> who may make it: an actor kind, `service:<principal>` (the service itself) or `via:<principal>`
CALLERS = {
    "DescribeInstances": ("console", "cli", "ci"), "RunInstances": ("console", "cli", "ci"),
    "GetObject": ("lambda", "cli", "ci"), "PutObject": ("lambda", "ci"),
    "CreateUser": ("console", "cli"), "ListRoles": ("console", "cli", "ci"),
    "AssumeRole": ("service:lambda.amazonaws.com", "cli", "ci"),
    "GetCallerIdentity": ("cli", "ci", "lambda"),
    "Decrypt": ("via:s3.amazonaws.com", "lambda"), "GenerateDataKey": ("via:s3.amazonaws.com",),
    "Invoke": ("cli", "ci", "lambda"), "ListFunctions20150331": ("console", "cli"),
    "GetItem": ("lambda", "cli"), "LookupEvents": ("console", "cli"), "CreateLogStream": ("lambda",),
    "ConsoleLogin": ("console",),
}


def canon(v) -> str:
    """Canonical JSON text of a value (key-sorted, compact), used to compare events as JSON values."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fmt_time(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Gen:
    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        r = self.rng
        if args.account_ids:
            self.accounts = args.account_ids.split(",")
        else:
            self.accounts = sorted({"%012d" % r.randrange(10**11, 10**12) for _ in range(args.accounts)})
            while len(self.accounts) < args.accounts:  # (collisions are practically impossible)
                self.accounts = sorted(set(self.accounts) | {"%012d" % r.randrange(10**11, 10**12)})
        self.regions = [x.strip() for x in args.regions.split(",") if x.strip()]
        self.prefix = args.prefix.strip("/") + "/" if args.prefix else ""
        self.org = args.org_id
        self.start_day = dt.date.fromisoformat(args.start_day)
        self.days = [self.start_day + dt.timedelta(days=i) for i in range(args.days)]
        self.defect_day = self.days[len(self.days) // 2]
        self.files = []  # manifest file entries
        self.events = []  # manifest event entries
        self.seq = 0
        self.odd_shapes = 0
        self.bytes_uncompressed = 0
        self.bytes_written = 0
        self.detail = args.manifest_detail
        self.principals = {acct: self._principals(acct) for acct in self.accounts}
        # Accounts whose logs an account trail delivers too (AWSLogs/<acct>/...), besides the org trail.
        self.account_trail = set(self.accounts[:args.account_trail_accounts]) if args.org_id else set()
        # The account trail's own key prefix (a second trail of the bucket), by default the org trail's.
        atp = args.account_trail_prefix
        self.account_trail_prefix = (atp.strip("/") + "/" if atp.strip("/") else "") if atp is not None else self.prefix

    # ------------------------------------------------------------------ random helpers
    def uuid(self) -> str:
        h = "%032x" % self.rng.getrandbits(128)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"

    def alnum(self, n: int) -> str:
        return "".join(self.rng.choices(ALNUM, k=n))

    def ip(self) -> str:
        r = self.rng
        return "%d.%d.%d.%d" % (r.choice((3, 18, 52, 54, 198, 203)), r.randrange(256), r.randrange(256), r.randrange(1, 255))

    def key_id(self, p="AKIA") -> str:
        return p + "".join(self.rng.choices(string.ascii_uppercase + string.digits, k=16))

    # ------------------------------------------------------------------ identities
    def _principals(self, acct):
        """The account's principals by name: IAM users, assumed roles, the root user."""
        r = self.rng
        uid = lambda: "AIDA" + "".join(r.choices(string.ascii_uppercase + string.digits, k=17))
        rid = "AROA" + "".join(r.choices(string.ascii_uppercase + string.digits, k=17))
        out = {}
        for u in ("alice", "bob", "ci-deployer", "José", "data-eng"):
            out[u] = {"type": "IAMUser", "principalId": uid(), "arn": f"arn:aws:iam::{acct}:user/{u}",
                      "accountId": acct, "accessKeyId": None, "userName": u}
        for role, sess in (("Admin", "console-session"), ("OrganizationAccountAccessRole", "ops"),
                           ("lambda-exec", "fn-ingest")):
            out[role] = {"type": "AssumedRole", "principalId": f"{rid}:{sess}",
                         "arn": f"arn:aws:sts::{acct}:assumed-role/{role}/{sess}", "accountId": acct,
                         "accessKeyId": None,
                         "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": rid,
                                                              "arn": f"arn:aws:iam::{acct}:role/{role}",
                                                              "accountId": acct, "userName": role},
                                            "webIdFederationData": {},
                                            "attributes": {"creationDate": None, "mfaAuthenticated": "false"}}}
        out["Root"] = {"type": "Root", "principalId": acct, "arn": f"arn:aws:iam::{acct}:root", "accountId": acct,
                       "accessKeyId": None}
        return out

    def identity(self, acct, name: str, t: dt.datetime, version: str, console: bool = False):
        r = self.rng
        p = copy.deepcopy(self.principals[acct][name])
        if console and p["type"] != "AssumedRole":
            del p["accessKeyId"]  # a console sign-in uses no access key
        elif "accessKeyId" in p:
            p["accessKeyId"] = self.key_id("ASIA" if p["type"] == "AssumedRole" else "AKIA")
        if p["type"] == "AssumedRole":
            p["sessionContext"]["attributes"]["creationDate"] = fmt_time(t - dt.timedelta(minutes=r.randrange(1, 600)))
            if console or r.random() < 0.3:
                p["sessionContext"]["attributes"]["mfaAuthenticated"] = "true"
            if version >= "1.09" and name != "lambda-exec" and r.random() < 0.2:
                p["sessionContext"]["sourceIdentity"] = "alice@example.com"
        elif p["type"] == "IAMUser" and version >= "1.08" and not console and r.random() < 0.5:
            p["sessionContext"] = {"sessionIssuer": {}, "webIdFederationData": {},
                                   "attributes": {"creationDate": fmt_time(t - dt.timedelta(minutes=5)),
                                                  "mfaAuthenticated": "false"}}
        return p

    def caller(self, acct, name: str, t: dt.datetime, version: str):
        """(userIdentity, sourceIPAddress, userAgent, console) of a call, from the CALLERS table."""
        r = self.rng
        kind, _, service = r.choice(CALLERS[name]).partition(":")
        if kind == "service":  # an AWS service acting with its own service principal
            return {"type": "AWSService", "invokedBy": service}, service, service, False
        principals, agents, ip = ACTORS[kind]
        ui = self.identity(acct, r.choice(principals), t, version, console=kind == "console")
        if kind == "via":  # a principal's call that an AWS service made on its behalf (e.g. S3 → KMS)
            ui["invokedBy"] = service
            return ui, service, service, False
        return ui, self.ip() if ip else "AWS Internal", r.choice(agents), kind == "console"

    # ------------------------------------------------------------------ API call catalog
    def api_call(self, acct, region):
        """(eventSource, eventName, readOnly, category, requestParameters, responseElements, resources, extra)"""
        r = self.rng
        k = r.randrange(16)
        bucket = f"{acct}-data-{region}"
        if k == 0:
            return ("ec2.amazonaws.com", "DescribeInstances", True, "Management",
                    {"instancesSet": {}, "filterSet": {"items": [{"name": "tag:Name", "valueSet": {"items": [{"value": "web-*"}]}}]}},
                    None, None, {})
        if k == 1:
            iid = "i-" + "%017x" % r.getrandbits(68)
            return ("ec2.amazonaws.com", "RunInstances", False, "Management",
                    {"instancesSet": {"items": [{"imageId": "ami-0abcdef1234567890", "minCount": 1, "maxCount": r.randrange(1, 4)}]},
                     "instanceType": r.choice(["t3.micro", "m6i.large", "c7g.xlarge"]), "blockDeviceMapping": {},
                     "monitoring": {"enabled": False}, "disableApiTermination": False, "ebsOptimized": r.random() < 0.5},
                    {"requestId": self.uuid(), "reservationId": "r-" + "%017x" % r.getrandbits(68), "ownerId": acct,
                     "groupSet": {}, "instancesSet": {"items": [{"instanceId": iid, "currentState": {"code": 0, "name": "pending"},
                                                                   "privateIpAddress": "10.0.%d.%d" % (r.randrange(256), r.randrange(256)),
                                                                   "cpuOptions": {"coreCount": 1, "threadsPerCore": 2}}]}},
                    [{"accountId": acct, "type": "AWS::EC2::Instance", "ARN": f"arn:aws:ec2:{region}:{acct}:instance/{iid}"}], {})
        if k in (2, 3):
            key = f"raw/{r.randrange(2020, 2025)}/{self.alnum(8)}.parquet"
            name = "GetObject" if k == 2 else "PutObject"
            return ("s3.amazonaws.com", name, k == 2, "Data",
                    {"bucketName": bucket, "Host": f"{bucket}.s3.{region}.amazonaws.com", "key": key},
                    None if k == 2 else {"x-amz-server-side-encryption": "aws:kms", "x-amz-version-id": self.alnum(32)},
                    [{"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
                     {"accountId": acct, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}],
                    {"additionalEventData": {"SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256",
                                             "bytesTransferredIn": 0 if k == 2 else r.randrange(1, 2**34),
                                             "AuthenticationMethod": "AuthHeader",
                                             "x-amz-id-2": self.alnum(60),
                                             "bytesTransferredOut": r.randrange(1, 2**34) if k == 2 else 0}})
        if k == 4:
            u = r.choice(["svc-" + self.alnum(5).lower(), "contractor-ü", "backup"])
            return ("iam.amazonaws.com", "CreateUser", False, "Management", {"userName": u},
                    {"user": {"path": "/", "userName": u, "userId": "AIDA" + self.alnum(17).upper(),
                              "arn": f"arn:aws:iam::{acct}:user/{u}", "createDate": "Mar 1, 2024 9:25:09 PM"}}, None, {})
        if k == 5:
            return ("iam.amazonaws.com", "ListRoles", True, "Management", {"maxItems": 100}, None, None, {})
        if k == 6:
            return ("sts.amazonaws.com", "AssumeRole", False, "Management",
                    {"roleArn": f"arn:aws:iam::{acct}:role/Admin", "roleSessionName": "s-" + self.alnum(6),
                     "durationSeconds": 3600},
                    {"credentials": {"accessKeyId": self.key_id("ASIA"), "sessionToken": self.alnum(200),
                                     "expiration": "Mar 1, 2024, 10:30:00 PM"},
                     "assumedRoleUser": {"assumedRoleId": "AROA" + self.alnum(17).upper() + ":s",
                                         "arn": f"arn:aws:sts::{acct}:assumed-role/Admin/s"}},
                    [{"accountId": acct, "type": "AWS::IAM::Role", "ARN": f"arn:aws:iam::{acct}:role/Admin"}],
                    {"sharedEventID": self.uuid()} if r.random() < 0.5 else {})
        if k == 7:
            return ("sts.amazonaws.com", "GetCallerIdentity", True, "Management", None, None, None, {})
        if k in (8, 9):
            kid = self.uuid()
            return ("kms.amazonaws.com", "Decrypt" if k == 8 else "GenerateDataKey", True, "Management",
                    {"encryptionAlgorithm": "SYMMETRIC_DEFAULT",
                     "encryptionContext": {"aws:s3:arn": f"arn:aws:s3:::{bucket}/x", "ratio": 0.25}}
                    if k == 8 else {"keyId": f"alias/{self.alnum(6)}", "keySpec": "AES_256", "numberOfBytes": 32},
                    None,
                    [{"accountId": acct, "type": "AWS::KMS::Key", "ARN": f"arn:aws:kms:{region}:{acct}:key/{kid}"}],
                    {"sharedEventID": self.uuid()} if r.random() < 0.3 else {})
        if k == 10:
            fn = r.choice(["ingest", "report", "thumbnail"])
            return ("lambda.amazonaws.com", "Invoke", False, "Data",
                    {"functionName": f"arn:aws:lambda:{region}:{acct}:function:{fn}", "invocationType": "Event"},
                    None,
                    [{"accountId": acct, "type": "AWS::Lambda::Function", "ARN": f"arn:aws:lambda:{region}:{acct}:function:{fn}"}],
                    {"additionalEventData": {"functionVersion": f"arn:aws:lambda:{region}:{acct}:function:{fn}:$LATEST"}})
        if k == 11:
            return ("lambda.amazonaws.com", "ListFunctions20150331", True, "Management", None, None, None,
                    {"apiVersion": "2015-03-31"})
        if k == 12:
            tbl = r.choice(["orders", "users", "sessions"])
            return ("dynamodb.amazonaws.com", "GetItem", True, "Data",
                    {"tableName": tbl, "key": {"pk": "HIDDEN_DUE_TO_SECURITY_REASONS"}, "consistentRead": r.random() < 0.5,
                     "projectionExpression": "a, b, #c"},
                    None, [{"accountId": acct, "type": "AWS::DynamoDB::Table", "ARN": f"arn:aws:dynamodb:{region}:{acct}:table/{tbl}"}],
                    {})
        if k == 13:
            return ("cloudtrail.amazonaws.com", "LookupEvents", True, "Management",
                    {"maxResults": 50, "lookupAttributes": [{"attributeKey": "EventName", "attributeValue": "ConsoleLogin"}],
                     "startTime": "Mar 1, 2024, 12:00:00 AM"}, None, None, {})
        if k == 14:
            return ("logs.amazonaws.com", "CreateLogStream", False, "Management",
                    {"logGroupName": "/aws/lambda/ingest", "logStreamName": "2024/03/01/[$LATEST]" + self.alnum(32).lower()},
                    None, None, {})
        return ("signin.amazonaws.com", "ConsoleLogin", False, "Management", None,
                {"ConsoleLogin": "Success"}, None,
                {"additionalEventData": {"LoginTo": "https://console.aws.amazon.com/console/home", "MobileVersion": "No",
                                         "MFAUsed": r.choice(["Yes", "No"])}, "eventType": "AwsConsoleSignIn"})

    # ------------------------------------------------------------------ events
    def version(self) -> str:
        x = self.rng.random()
        if x < 0.03:
            return self.rng.choice(("1.0", "1.01", "1.02"))
        if x < 0.43:
            return "1.08"
        if x < 0.73:
            return "1.09"
        return "1.10"

    def event(self, acct, region, t: dt.datetime) -> dict:
        r = self.rng
        v = self.version()
        src, name, ro, cat, req, resp, res, extra = self.api_call(acct, region)
        ui, ip, agent, console = self.caller(acct, name, t, v)
        if name == "AssumeRole" and ui["type"] == "AWSService":  # Lambda assumes a function's execution role
            req.update(roleArn=f"arn:aws:iam::{acct}:role/lambda-exec", roleSessionName="fn-ingest")
            resp["assumedRoleUser"]["arn"] = f"arn:aws:sts::{acct}:assumed-role/lambda-exec/fn-ingest"
        e = {"eventVersion": v, "userIdentity": ui, "eventTime": fmt_time(t), "eventSource": src, "eventName": name,
             "awsRegion": "us-east-1" if src in ("iam.amazonaws.com", "signin.amazonaws.com") else region,
             "sourceIPAddress": ip, "userAgent": agent, "requestParameters": req, "responseElements": resp}
        if name == "ConsoleLogin" and r.random() < 0.08:
            e["errorMessage"] = "Failed authentication"
            e["responseElements"] = {"ConsoleLogin": "Failure"}
        elif name != "ConsoleLogin" and ui["type"] != "AWSService" and r.random() < 0.08:
            e["errorCode"] = r.choice(("AccessDenied", "ThrottlingException", "NoSuchKey", "Client.UnauthorizedOperation"))
            e["errorMessage"] = f"User: {ui.get('arn', 'service')} is not authorized to perform: {src.split('.')[0]}:{name} \"quoted\""
            e["responseElements"] = None
        if v >= "1.01":
            e["requestID"] = self.uuid()
            e["eventID"] = self.uuid()
            e["readOnly"] = ro
        if res is not None and v >= "1.01":
            e["resources"] = res
        if v >= "1.02":
            e["eventType"] = "AwsApiCall"
            e["recipientAccountId"] = acct
        for k2, v2 in extra.items():
            if k2 == "eventType" and v < "1.02":
                continue
            e[k2] = v2
        if v >= "1.06":
            e["managementEvent"] = cat == "Management"
        if v >= "1.07":
            e["eventCategory"] = cat
        if v >= "1.08" and (v >= "1.09" or r.random() < 0.7):
            e["tlsDetails"] = {"tlsVersion": r.choice(("TLSv1.2", "TLSv1.3")),
                               "cipherSuite": r.choice(("ECDHE-RSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256")),
                               "clientProvidedHostHeader": f"{src.split('.')[0]}.{region}.amazonaws.com"}
            if src == "s3.amazonaws.com":
                e["vpcEndpointId"] = "vpce-" + "%017x" % r.getrandbits(68)
        if console and ui["type"] == "AssumedRole" and name != "ConsoleLogin" and v >= "1.08":
            e["sessionCredentialFromConsole"] = "true"
        if v >= "1.10" and r.random() < 0.05:
            e["addendum"] = {"reason": "DELIVERY_DELAY", "originalEventID": self.uuid()}
        x = r.random()
        if x < 0.01:
            e["futureField"] = {"x": 1}
        elif x < 0.015:
            e["errorCode"] = None  # present but null: does not fit the VARCHAR column -> otherFields
        elif x < 0.025:
            # userIdentity shapes the struct does not hold (-> otherFields; the event is kept as it is):
            # unknown and oddly typed subfields, a null or absent userIdentity, a non-object one.
            odd, self.odd_shapes = self.odd_shapes % 10, self.odd_shapes + 1  # each shape in turn
            if odd == 0:
                e["userIdentity"] = None
            elif odd == 1:
                del e["userIdentity"]
            elif odd == 2:
                e["userIdentity"] = "odd-identity"
            elif odd == 3:
                ui["futureSubfield"] = {"n": [1, 2.5, 12345678901234567890]}
            elif odd == 4:
                ui["accountId"] = 123456789012
            elif odd == 5:
                ui["arn"] = None
            elif odd == 6:
                ui["sessionContext"] = {"attributes": {"mfaAuthenticated": True, "extra": "x"}, "sessionIssuer": "odd"}
            elif odd == 7:
                ui["sessionContext"] = {"webIdFederationData": {"federatedProvider": "accounts.google.com",
                                                                "attributes": {"aud": "x", "n": 1}}}
            elif odd == 8:
                ui["onBehalfOf"] = {"userId": "u-1", "identityStoreArn": "arn:aws:identitystore::1:identitystore/d-1"}
            else:
                e["tlsDetails"] = {"tlsVersion": None, "keyExchange": "X25519"}
        return e

    # ------------------------------------------------------------------ layout
    def acct_root(self, acct):
        return f"{self.prefix}AWSLogs/{self.org + '/' if self.org else ''}{acct}"

    def day_prefix(self, acct, region, day: dt.date):
        return f"{self.acct_root(acct)}/CloudTrail/{region}/{day:%Y/%m/%d}/"

    def trail_name(self, acct, region, ts: dt.datetime, ext=".json.gz"):
        return f"{acct}_CloudTrail_{region}_{ts:%Y%m%dT%H%MZ}_{self.alnum(16)}{ext}"

    def write(self, key: str, data: bytes):
        path = os.path.join(self.a.out, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.bytes_written += len(data)

    def gz(self, data: bytes) -> bytes:
        # wbits=31: gzip container; header mtime 0 and no name -> deterministic bytes.
        c = zlib.compressobj(self.a.gzip_level, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()

    # ------------------------------------------------------------------ generation
    def file_times(self, day: dt.date, n: int):
        """n file timestamps (minute precision) in the day; the first in 00:01-00:10 so that it holds
        events of the previous day (delivery into the next day's folder)."""
        r = self.rng
        base = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        if n <= 0:
            return []
        mins = [r.randrange(1, 11)]
        if n > 1:
            pool = range(11, 1440)
            if n - 1 <= len(pool):
                mins += r.sample(pool, n - 1)
            else:
                mins += [r.randrange(11, 1440) for _ in range(n - 1)]
        return [base + dt.timedelta(minutes=m) for m in sorted(mins)]

    def make_events(self, acct, region, ts: dt.datetime, n: int):
        out = []
        for _ in range(n):
            t = ts - dt.timedelta(seconds=self.rng.randrange(1, FIFTEEN_MIN))
            out.append(self.event(acct, region, t))
        out.sort(key=lambda e: e["eventTime"])
        return out

    def emit_records_file(self, key, dayp, ts, records, meta, *, raw_override: bytes | None = None,
                          error_type=None, fatal=False):
        """records: list of (value, info) where info = dict(valid, invalidReason, duplicateOf)."""
        values = [v for v, _ in records]
        if raw_override is None:
            text = '{"Records":[' + ",".join(json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in values) + "]}"
            raw = text.encode()
            self.bytes_uncompressed += len(raw)
            data = self.gz(raw)
        else:
            data = raw_override
        self.write(key, data)
        fentry = {"key": key, "kind": "trail", "dayPrefix": dayp, "day": dayp.rstrip("/")[-10:].replace("/", "-"),
                  "fileTime": fmt_time(ts) if ts else None, "errorType": error_type, "fatal": fatal,
                  "events": 0 if fatal else len(values), "size": len(data), **meta}
        self.files.append(fentry)
        if not fatal and self.detail != "summary":
            for i, (v, info) in enumerate(records):
                ent = {"seq": info.get("seq"), "file": key, "index": i,
                       "eventID": v.get("eventID") if isinstance(v, dict) else None,
                       "eventTime": v.get("eventTime") if isinstance(v, dict) else None,
                       "valid": info.get("valid", True), "invalidReason": info.get("invalidReason"),
                       "duplicateOf": info.get("duplicateOf"), "json": canon(v)}
                self.events.append(ent)
        acct = key[len(self.prefix):].split("/")[2] if self.org else None
        if acct in self.account_trail and not fatal and raw_override is None:
            self.emit_account_trail_copy(key, dayp, data, fentry, records)

    def emit_account_trail_copy(self, key, dayp, data, fentry, records):
        """The same file as an account trail delivers it too (AWSLogs/<acct>/..., another unique
        name part): every event in it is a cross-trail duplicate of the organization trail's."""
        rel = key[len(self.prefix) + len("AWSLogs/") + len(self.org) + 1:]
        name = rel.rsplit("/", 1)[1]
        unique = "%016x" % (zlib.crc32(key.encode()) * 2654435761 % 2**64)
        stem, ext = name.split(".", 1)
        parts = stem.split("_")
        parts[-1] = unique[:16]
        key2 = f"{self.account_trail_prefix}AWSLogs/{rel.rsplit('/', 1)[0]}/{'_'.join(parts)}.{ext}"
        dayp2 = key2.rsplit("/", 1)[0] + "/"
        self.write(key2, data)
        self.files.append({**fentry, "key": key2, "dayPrefix": dayp2, "trail": "account"})
        if self.detail == "summary":
            return
        for i, (v, info) in enumerate(records):
            self.events.append({"seq": self.next_seq(), "file": key2, "index": i,
                                "eventID": v.get("eventID") if isinstance(v, dict) else None,
                                "eventTime": v.get("eventTime") if isinstance(v, dict) else None,
                                "valid": info.get("valid", True), "invalidReason": info.get("invalidReason"),
                                "duplicateOf": info.get("seq"), "crossTrail": True, "json": canon(v)})

    def next_seq(self):
        self.seq += 1
        return self.seq

    def gen_day_prefix(self, acct, region, day, files_per_day, epf):
        r = self.rng
        a = self.a
        dayp = self.day_prefix(acct, region, day)
        base = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        # [ts, key, [(event, info)] or None (made when written: memory stays one file), meta, n events]
        files = []
        for ts in self.file_times(day, files_per_day):
            n = max(1, r.randrange(max(1, epf // 2), epf + epf // 2 + 1)) if epf > 1 else epf
            files.append([ts, dayp + self.trail_name(acct, region, ts), None, {}, n])

        is_defect = day == self.defect_day
        fatal_files = []
        not_log_files = []  # (key, body): files in the day folder not named like log files
        if is_defect:
            slots = self.defect_slots.get((acct, region), {})

            def midday():
                return base + dt.timedelta(minutes=r.randrange(10 * 60, 14 * 60))

            # invalid events and stray (far out of range) events: extra normal files at mid-day
            for _ in range(slots.get("invalid", 0)):
                ts = midday()
                recs = [(e, {"seq": self.next_seq(), "valid": True}) for e in self.make_events(acct, region, ts, 3)]
                kinds = list(INVALID_KINDS)
                for kind in kinds:
                    e = self.make_events(acct, region, ts, 1)[0]
                    if kind == "missing-eventTime":
                        del e["eventTime"]
                    elif kind == "bad-eventTime":
                        e["eventTime"] = r.choice(("2024-02-30T25:61:00Z", "yesterday", "1709251200"))
                    elif kind == "missing-eventName":
                        del e["eventName"]
                    else:
                        e = r.choice(("not an event", 42, ["eventName", "x"], None))
                    recs.insert(r.randrange(len(recs) + 1), (e, {"seq": self.next_seq(), "valid": False, "invalidReason": kind}))
                files.append([ts, dayp + self.trail_name(acct, region, ts), recs, {"defect": "invalid-events"}, len(recs)])
            for _ in range(slots.get("stray", 0)):
                ts = midday()
                recs = [(e, {"seq": self.next_seq(), "valid": True}) for e in self.make_events(acct, region, ts, 3)]
                old = self.make_events(acct, region, ts - dt.timedelta(days=400), 2)
                for e in old:
                    recs.append((e, {"seq": self.next_seq(), "valid": True, "stray": True}))
                files.append([ts, dayp + self.trail_name(acct, region, ts), recs, {"defect": "stray-events"}, len(recs)])
            # file-level defects
            for _ in range(slots.get("non_gzip", 0)):
                ts = midday()
                body = json.dumps({"Records": self.make_events(acct, region, ts, 2)}).encode()
                fatal_files.append((dayp + self.trail_name(acct, region, ts, ext=".json"), ts, body, "UnsupportedFileType", "non-gzip-json"))
                # Not named like a log file: skipped by name (filesSkipped, filesNotLogFiles), not a failure.
                not_log_files.append((dayp + f"notes-{self.alnum(6)}.txt", b"not a log file\n"))
            for _ in range(slots.get("corrupt", 0)):
                ts = midday()
                body = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(r.getrandbits(8) for _ in range(300))
                fatal_files.append((dayp + self.trail_name(acct, region, ts), ts, body, "CorruptGzip", "corrupt-gzip"))
            for _ in range(slots.get("truncated", 0)):
                ts = midday()
                full = self.gz(json.dumps({"Records": self.make_events(acct, region, ts, 10)}).encode())
                # Cut inside the first record: nothing is salvageable, so the file yields no events
                # (tests/test_bad_input.py covers a cut after whole records, which are salvaged).
                fatal_files.append((dayp + self.trail_name(acct, region, ts), ts, full[:30], "CorruptGzip", "truncated-gzip"))
            for _ in range(slots.get("non_json", 0)):
                ts = midday()
                fatal_files.append((dayp + self.trail_name(acct, region, ts), ts,
                                    self.gz(b"2024-03-01 12:00:00 INFO this is not JSON at all\n{\"Records\": ["),
                                    "InvalidJson", "gzip-non-json"))
            for i in range(slots.get("no_records", 0)):
                ts = midday()
                body = (b'{"records":[]}', b'{"Records":{"eventName":"x"}}', b'[{"eventName":"x"}]')[i % 3]
                fatal_files.append((dayp + self.trail_name(acct, region, ts), ts, self.gz(body), "InvalidLogFile", "no-records"))

        # duplicates: an event redelivered, identical, in a later file (later name timestamp) of the same
        # day prefix. Files are written in key order (= name timestamp order within a day prefix), so the
        # original is picked when its file is made and carried to the later file.
        ndup = self.dup_slots.get((acct, region, day), 0)
        files.sort(key=lambda f: f[1])
        pairs = []  # (source index, target index)
        tries = 0
        while ndup > 0 and tries < 100 and len(files) >= 2:
            tries += 1
            i = r.randrange(len(files) - 1)
            later = [j for j in range(i + 1, len(files)) if files[j][0] > files[i][0] and not files[j][3]]
            if later:
                pairs.append((i, r.choice(later)))
                ndup -= 1
        carry = {}  # target index -> [(event, info)]
        for idx, (ts, key, recs, meta, n) in enumerate(files):
            if recs is None:
                recs = [(e, {"seq": self.next_seq(), "valid": True}) for e in self.make_events(acct, region, ts, n)]
            for si, tj in pairs:
                if si == idx:
                    cands = [x for x in recs if x[1]["valid"] and not x[1].get("stray")]
                    v, info = r.choice(cands)
                    carry.setdefault(tj, []).append(
                        (copy.deepcopy(v), {"seq": self.next_seq(), "valid": True, "duplicateOf": info["seq"]}))
            for d in carry.pop(idx, []):
                recs.insert(r.randrange(len(recs) + 1), d)
            err = "InvalidEvents" if meta.get("defect") == "invalid-events" else None
            self.emit_records_file(key, dayp, ts, recs, meta, error_type=err)
        for key, ts, body, err, kind in fatal_files:
            self.write(key, body)
            self.files.append({"key": key, "kind": "trail", "dayPrefix": dayp,
                               "day": f"{day:%Y-%m-%d}", "fileTime": fmt_time(ts) if ts else None,
                               "errorType": err, "fatal": True, "events": 0, "size": len(body), "defect": kind})
        for key, body in not_log_files:
            self.write(key, body)
            self.files.append({"key": key, "kind": "trail", "dayPrefix": dayp, "day": f"{day:%Y-%m-%d}",
                               "fileTime": None, "errorType": None, "fatal": False, "notLogFile": True, "events": 0,
                               "size": len(body), "defect": "non-gzip-txt"})

        if self.a.digest:
            for h in (0, 8, 16):
                ts = base + dt.timedelta(hours=h, minutes=r.randrange(60))
                key = (f"{self.acct_root(acct)}/CloudTrail-Digest/{region}/{day:%Y/%m/%d}/"
                       f"{acct}_CloudTrail-Digest_{region}_management-events_{region}_{ts:%Y%m%dT%H%M%S}Z.json.gz")
                body = self.gz(json.dumps({"awsAccountId": acct, "digestStartTime": fmt_time(ts - dt.timedelta(hours=1)),
                                           "digestEndTime": fmt_time(ts), "digestS3Bucket": "trail-bucket",
                                           "logFiles": [], "digestSignatureAlgorithm": "SHA256withRSA"}).encode())
                self.write(key, body)
                self.files.append({"key": key, "kind": "digest", "size": len(body)})
        if self.a.insight:
            ts = base + dt.timedelta(hours=12, minutes=5)
            key = (f"{self.acct_root(acct)}/CloudTrail-Insight/{region}/{day:%Y/%m/%d}/"
                   f"{self.trail_name(acct, region, ts).replace('_CloudTrail_', '_CloudTrail-Insight_')}")
            recs = self.make_events(acct, region, ts, 2)
            for e in recs:
                e["eventType"] = "AwsCloudTrailInsight"
                e["insightDetails"] = {"state": "Start", "eventName": e["eventName"]}
            body = self.gz(json.dumps({"Records": recs}).encode())
            self.write(key, body)
            self.files.append({"key": key, "kind": "insight", "size": len(body)})
        if self.a.other_services:
            ts = base + dt.timedelta(hours=9)
            key = (f"{self.prefix}AWSLogs/{acct}/elasticloadbalancing/{region}/{day:%Y/%m/%d}/"
                   f"{acct}_elasticloadbalancing_{region}_app.web.{self.alnum(16).lower()}_{ts:%Y%m%dT%H%MZ}_10.0.1.5_{self.alnum(8).lower()}.log.gz")
            body = self.gz(b'h2 2024-03-01T09:00:00.000000Z app/web/abc 1.2.3.4:5 10.0.0.1:80 0.001 0.002 0.000 200 200 34 366 "GET https://x/ HTTP/2.0" "curl" - - arn - "-" "-" "-" 0 2024-03-01T09:00:00Z "forward" "-" "-" "10.0.0.1:80" "200" "-" "-"\n')
            self.write(key, body)
            self.files.append({"key": key, "kind": "other-service", "size": len(body)})
            # a CloudTrail-looking gzip file directly under an ELB day folder: still not a CloudTrail folder
            key2 = key.rsplit("/", 1)[0] + "/" + self.trail_name(acct, region, ts)
            body2 = self.gz(json.dumps({"Records": self.make_events(acct, region, ts, 1)}).encode())
            self.write(key2, body2)
            self.files.append({"key": key2, "kind": "other-service", "size": len(body2)})

    def plan_defects(self):
        a = self.a
        r = self.rng
        pairs = [(acct, reg) for acct in self.accounts for reg in self.regions]
        self.defect_slots = {}
        for name in ("invalid", "stray", "non_gzip", "corrupt", "truncated", "non_json", "no_records"):
            for _ in range(getattr(a, name)):
                p = r.choice(pairs)
                self.defect_slots.setdefault(p, {}).setdefault(name, 0)
                self.defect_slots[p][name] += 1
        self.dup_slots = {}
        for _ in range(a.duplicates):
            acct, reg = r.choice(pairs)
            day = r.choice(self.days)
            self.dup_slots[(acct, reg, day)] = self.dup_slots.get((acct, reg, day), 0) + 1

    def estimate_event_bytes(self):
        saved = self.rng
        self.rng = random.Random(self.a.seed ^ 0x5EED)
        t = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        n = 300
        size = sum(len(json.dumps(self.event(self.accounts[0], self.regions[0], t), ensure_ascii=False, separators=(",", ":")).encode()) + 1
                   for _ in range(n)) / n
        self.rng = saved
        return size

    def run(self):
        a = self.a
        fpd, epf = a.files_per_day, a.events_per_file
        if a.target_mb:
            per_event = self.estimate_event_bytes()
            nprefix = len(self.accounts) * len(self.regions) * len(self.days)
            events = a.target_mb * 1024 * 1024 / per_event
            fpd = max(1, math.ceil(events / (nprefix * epf)))
            if fpd > 1000:  # keep file counts sane: grow the files instead
                epf = math.ceil(events / (nprefix * 1000))
                fpd = max(1, math.ceil(events / (nprefix * epf)))
        self.fpd, self.epf = fpd, epf
        self.plan_defects()
        for day in self.days:
            for acct in self.accounts:
                for region in self.regions:
                    self.gen_day_prefix(acct, region, day, fpd, epf)

    def manifest(self):
        return {
            "generator": "tests/gen_trail.py", "version": 1,
            "args": {k: v for k, v in vars(self.a).items() if k not in ("out", "manifest")},
            "root": os.path.abspath(self.a.out), "prefix": self.prefix, "orgId": self.org,
            "accounts": self.accounts, "regions": self.regions,
            "days": [d.isoformat() for d in self.days], "defectDay": self.defect_day.isoformat(),
            "filesPerDay": self.fpd, "eventsPerFile": self.epf,
            "bytesUncompressed": self.bytes_uncompressed, "bytesWritten": self.bytes_written,
            "files": sorted(self.files, key=lambda f: f["key"]),
            "events": self.events,
        }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="trail folder to write (the prefix and AWSLogs/ go inside)")
    p.add_argument("--manifest", help="ground-truth manifest JSON path (outside the trail folder)")
    p.add_argument("--manifest-detail", choices=("full", "summary"), default="full",
                   help="summary omits the per-event list (for big benchmark trails)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--accounts", type=int, default=2, help="number of 12-digit accounts (random from the seed)")
    p.add_argument("--account-ids", help="comma-separated account ids (overrides --accounts)")
    p.add_argument("--regions", default="us-east-1,eu-west-1")
    p.add_argument("--start-day", default="2024-03-01")
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--files-per-day", type=int, default=4, help="per account, region and day")
    p.add_argument("--events-per-file", type=int, default=20, help="mean; each file holds 50%%-150%% of it")
    p.add_argument("--org-id", default=None, help="organization trail layout: AWSLogs/<org-id>/<acct>/...")
    p.add_argument("--prefix", default="", help="key prefix before AWSLogs/")
    p.add_argument("--account-trail-accounts", type=int, default=0,
                   help="with --org-id: the first N accounts are also delivered by an account trail "
                        "(AWSLogs/<acct>/..., the same events in files of other names: cross-trail duplicates)")
    p.add_argument("--account-trail-prefix", default=None,
                   help="key prefix before the account trail's AWSLogs/ (default: --prefix, the same AWSLogs/)")
    p.add_argument("--target-mb", type=int, default=0, help="size the trail by uncompressed MiB (overrides --files-per-day)")
    p.add_argument("--gzip-level", type=int, default=6)
    g = p.add_argument_group("defects (all on the middle day, in files named 10:00-14:00 UTC)")
    g.add_argument("--non-gzip", type=int, default=0,
                   help="pairs of a log-file-named .json (UnsupportedFileType) + a notes-*.txt (not a log file: "
                        "skipped) in day folders")
    g.add_argument("--corrupt", type=int, default=0, help="corrupt gzip files")
    g.add_argument("--truncated", type=int, default=0, help="truncated gzip files")
    g.add_argument("--non-json", type=int, default=0, help="gzip files of non-JSON text")
    g.add_argument("--no-records", type=int, default=0, help="gzip JSON files that are not {\"Records\":[...]}")
    g.add_argument("--invalid", type=int, default=0,
                   help="files each holding one invalid event of every kind (" + ", ".join(INVALID_KINDS) + ")")
    g.add_argument("--duplicates", type=int, default=0, help="events redelivered in a later file of the same day prefix")
    g.add_argument("--stray", type=int, default=0, help="files each holding 2 events 400 days before the file time")
    g.add_argument("--digest", action="store_true", help="CloudTrail-Digest files (must be ignored)")
    g.add_argument("--insight", action="store_true", help="CloudTrail-Insight files (must be ignored)")
    g.add_argument("--other-services", action="store_true", help="AWSLogs/<acct>/elasticloadbalancing files (ignored)")
    g.add_argument("--all-defects", action="store_true", help="one or two of each defect")
    a = p.parse_args(argv)
    if a.all_defects:
        for k, n in (("non_gzip", 1), ("corrupt", 1), ("truncated", 1), ("non_json", 1), ("no_records", 2),
                     ("invalid", 2), ("duplicates", 10), ("stray", 1)):
            if not getattr(a, k):
                setattr(a, k, n)
        a.digest = a.insight = a.other_services = True
    if a.org_id and not a.org_id.startswith("o-"):
        p.error("--org-id must look like o-xxxxxxxxxx")
    if a.manifest and os.path.abspath(a.manifest).startswith(os.path.abspath(a.out) + os.sep):
        p.error("--manifest must be outside --out")
    return a


def main(argv=None):
    a = parse_args(argv)
    g = Gen(a)
    g.run()
    if a.manifest:
        os.makedirs(os.path.dirname(os.path.abspath(a.manifest)), exist_ok=True)
        with open(a.manifest, "w") as f:
            json.dump(g.manifest(), f, ensure_ascii=False)
    nfiles = sum(1 for f in g.files if f["kind"] == "trail")
    nevents = sum(f["events"] for f in g.files if f["kind"] == "trail")
    print(f"gen_trail: {nfiles} trail files, {nevents} events, {g.bytes_uncompressed / 2**20:.1f} MiB uncompressed, "
          f"{g.bytes_written / 2**20:.1f} MiB written to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
