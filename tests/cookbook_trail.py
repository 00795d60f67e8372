"""A small trail for the query cookbook (docs/queries.md): planted events each cookbook query must
find, and near misses it must not (an MFA console login, a security group opened to 10.0.0.0/8,
four AccessDenied errors, ...). `write(root)` writes the trail and returns the expected answer of
every query, keyed by the query's id in docs/queries.md.
"""

from __future__ import annotations

import gzip
import json
import os

ACCT, OTHER_ACCT = "111122223333", "444455556666"
DAY = "2024-05-01"
RANGE = ("2024-05-01", "2024-05-02")
APPROVED = ("us-east-1", "eu-west-1")


def user(name, acct=ACCT, key="AKIAEXAMPLEUSERKEY01"):
    return {"type": "IAMUser", "principalId": "AIDA" + name.upper().ljust(17, "X")[:17], "arn": f"arn:aws:iam::{acct}:user/{name}",
            "accountId": acct, "accessKeyId": key, "userName": name}


def role(role_name, session, acct=ACCT, key="ASIAEXAMPLESESSION01", mfa="false"):
    rid = "AROA" + role_name.upper().ljust(17, "X")[:17]
    return {"type": "AssumedRole", "principalId": f"{rid}:{session}",
            "arn": f"arn:aws:sts::{acct}:assumed-role/{role_name}/{session}", "accountId": acct, "accessKeyId": key,
            "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": rid, "arn": f"arn:aws:iam::{acct}:role/{role_name}",
                                                 "accountId": acct, "userName": role_name},
                               "webIdFederationData": {},
                               "attributes": {"creationDate": "2024-05-01T11:00:00Z", "mfaAuthenticated": mfa}}}


ROOT = {"type": "Root", "principalId": ACCT, "arn": f"arn:aws:iam::{ACCT}:root", "accountId": ACCT, "accessKeyId": ""}
ALICE, BOB, MALLORY = user("alice"), user("bob", key="AKIAEXAMPLEBOBKEY002"), user("mallory", key="AKIAEXAMPLELEAKED03")
ADMIN, DEPLOY = role("Admin", "alice-console", mfa="true"), role("deploy", "ci-run-17", key="ASIAEXAMPLEDEPLOY004")
PARTNER = role("PartnerAudit", "auditor", acct=OTHER_ACCT, key="ASIAEXAMPLEPARTNER05")
SERVICE = {"type": "AWSService", "invokedBy": "cloudtrail.amazonaws.com"}


class Trail:
    def __init__(self):
        self.events = {}  # region -> [event]
        self.n = 0

    def add(self, name, source, who, region="us-east-1", ip="203.0.113.10", params=None, response=None, **extra):
        self.n += 1
        e = {"eventVersion": "1.10", "userIdentity": who, "eventTime": f"{DAY}T11:{45 + self.n % 14:02d}:{self.n % 60:02d}Z",
             "eventSource": source, "eventName": name, "awsRegion": region, "sourceIPAddress": ip,
             "userAgent": "aws-cli/2.15.30", "requestParameters": params, "responseElements": response,
             "requestID": f"req-{self.n:04d}", "eventID": f"00000000-0000-4000-8000-{self.n:012d}",
             "readOnly": name.startswith(("Describe", "Get", "List")), "eventType": "AwsApiCall",
             "managementEvent": True, "recipientAccountId": ACCT, "eventCategory": "Management"}
        e.update(extra)
        self.events.setdefault(region, []).append(e)
        return e

    def login(self, who, mfa, ok=True, ip="203.0.113.10"):
        e = self.add("ConsoleLogin", "signin.amazonaws.com", who, ip=ip, response={"ConsoleLogin": "Success" if ok else "Failure"},
                     additionalEventData={"LoginTo": "https://console.aws.amazon.com/", "MobileVersion": "No",
                                          "MFAUsed": "Yes" if mfa else "No"}, eventType="AwsConsoleSignIn")
        if not ok:
            e["errorMessage"] = "Failed authentication"
        return e


def build() -> tuple[Trail, dict]:
    t = Trail()
    exp = {}
    # who-deleted-bucket
    t.add("DeleteBucket", "s3.amazonaws.com", MALLORY, params={"bucketName": "finance-reports", "Host": "s3.amazonaws.com"})
    t.add("DeleteBucket", "s3.amazonaws.com", ALICE, params={"bucketName": "scratch-tmp"})
    exp["who-deleted-bucket"] = {(MALLORY["arn"], "203.0.113.10")}
    # access-key-activity: what the leaked key did
    for name in ("ListBuckets", "ListBuckets", "GetCallerIdentity"):
        t.add(name, "s3.amazonaws.com" if name == "ListBuckets" else "sts.amazonaws.com", MALLORY, ip="198.51.100.23")
    # root-usage (a service acting for root is not root usage)
    t.add("CreateAccessKey", "iam.amazonaws.com", ROOT, params={})
    t.login(ROOT, mfa=True)
    exp["root-usage"] = {("ConsoleLogin", 1), ("CreateAccessKey", 1)}
    # console-login-without-mfa
    t.login(BOB, mfa=False)
    t.login(ALICE, mfa=True)
    t.login(MALLORY, mfa=False, ok=False, ip="198.51.100.23")
    exp["console-login-without-mfa"] = {(BOB["arn"],)}
    exp["failed-console-logins"] = {(MALLORY["arn"], "198.51.100.23", 1)}
    # access-denied-bursts: 6 for deploy, 4 for bob (below the threshold of 5)
    for _ in range(6):
        t.add("GetSecretValue", "secretsmanager.amazonaws.com", DEPLOY, params={"secretId": "prod/db"}, errorCode="AccessDenied",
              errorMessage="not authorized")
    for _ in range(4):
        t.add("ListUsers", "iam.amazonaws.com", BOB, errorCode="AccessDenied", errorMessage="not authorized")
    exp["access-denied-bursts"] = {(DEPLOY["arn"], 6)}
    # security-group-open-to-world
    perm = lambda cidr: {"groupId": "sg-0a1b2c3d", "ipPermissions": {"items": [
        {"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "ipRanges": {"items": [{"cidrIp": cidr}]}}]}}
    t.add("AuthorizeSecurityGroupIngress", "ec2.amazonaws.com", DEPLOY, params=perm("0.0.0.0/0"))
    t.add("AuthorizeSecurityGroupIngress", "ec2.amazonaws.com", DEPLOY, params=perm("10.0.0.0/8") | {"groupId": "sg-0private"})
    exp["security-group-open-to-world"] = {("sg-0a1b2c3d", DEPLOY["arn"])}
    # iam-policy-changes
    t.add("PutUserPolicy", "iam.amazonaws.com", ADMIN, params={"userName": "bob", "policyName": "inline-admin"})
    t.add("AttachRolePolicy", "iam.amazonaws.com", DEPLOY, params={"roleName": "deploy", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"})
    t.add("GetPolicy", "iam.amazonaws.com", ADMIN, params={"policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"})
    exp["iam-policy-changes"] = {("PutUserPolicy", ADMIN["arn"]), ("AttachRolePolicy", DEPLOY["arn"])}
    # s3-bucket-policy-changes
    t.add("PutBucketPolicy", "s3.amazonaws.com", ADMIN, params={"bucketName": "finance-reports", "bucketPolicy": {"Version": "2012-10-17"}})
    t.add("DeleteBucketPublicAccessBlock", "s3.amazonaws.com", MALLORY, params={"bucketName": "public-site"})
    t.add("GetBucketPolicy", "s3.amazonaws.com", ADMIN, params={"bucketName": "finance-reports"})
    exp["s3-bucket-policy-changes"] = {("finance-reports", "PutBucketPolicy"), ("public-site", "DeleteBucketPublicAccessBlock")}
    # activity-from-ip: 198.51.100.23 = the ListBuckets x2, GetCallerIdentity, failed login
    # cross-account-access
    t.add("GetObject", "s3.amazonaws.com", PARTNER, params={"bucketName": "shared-audit", "key": "q1.csv"}, eventCategory="Data",
          managementEvent=False)
    exp["cross-account-access"] = {(PARTNER["arn"], OTHER_ACCT, 1)}
    # logging-stopped
    t.add("StopLogging", "cloudtrail.amazonaws.com", MALLORY, params={"name": "org-trail"})
    t.add("DeleteTrail", "cloudtrail.amazonaws.com", MALLORY, params={"name": "arn:aws:cloudtrail:us-east-1:111122223333:trail/backup"})
    t.add("StartLogging", "cloudtrail.amazonaws.com", ADMIN, params={"name": "org-trail"})
    exp["logging-stopped"] = {("StopLogging", "org-trail"), ("DeleteTrail", "arn:aws:cloudtrail:us-east-1:111122223333:trail/backup")}
    # unapproved-regions
    t.add("RunInstances", "ec2.amazonaws.com", MALLORY, region="ap-east-1", ip="198.51.100.23")
    t.add("RunInstances", "ec2.amazonaws.com", MALLORY, region="ap-east-1", ip="198.51.100.23")
    t.add("DescribeInstances", "ec2.amazonaws.com", DEPLOY, region="eu-west-1")
    exp["unapproved-regions"] = {("ap-east-1", 2)}
    # new-access-keys (by whom, for whom)
    t.add("CreateAccessKey", "iam.amazonaws.com", ADMIN, params={"userName": "mallory"})
    exp["new-access-keys"] = {(ROOT["arn"], None), (ADMIN["arn"], "mallory")}
    # kms-key-deletion
    t.add("ScheduleKeyDeletion", "kms.amazonaws.com", MALLORY, params={"keyId": "arn:aws:kms:us-east-1:111122223333:key/k-1", "pendingWindowInDays": 7})
    t.add("DisableKey", "kms.amazonaws.com", MALLORY, params={"keyId": "arn:aws:kms:us-east-1:111122223333:key/k-2"})
    t.add("DescribeKey", "kms.amazonaws.com", ADMIN, params={"keyId": "arn:aws:kms:us-east-1:111122223333:key/k-1"})
    exp["kms-key-deletion"] = {("ScheduleKeyDeletion", "arn:aws:kms:us-east-1:111122223333:key/k-1"),
                               ("DisableKey", "arn:aws:kms:us-east-1:111122223333:key/k-2")}
    # a service acting in the account (not root usage, not a principal of ours)
    t.add("LookupEvents", "cloudtrail.amazonaws.com", SERVICE, ip="cloudtrail.amazonaws.com")
    # access-key-activity (the leaked key) and activity-from-ip (the attacker's address): by event name
    def by_name(pred):
        n = {}
        for evs in t.events.values():
            for e in evs:
                if pred(e):
                    n[e["eventName"]] = n.get(e["eventName"], 0) + 1
        return set(n.items())
    exp["access-key-activity"] = by_name(lambda e: e["userIdentity"].get("accessKeyId") == MALLORY["accessKeyId"])
    exp["activity-from-ip"] = by_name(lambda e: e["sourceIPAddress"] == "198.51.100.23")
    # role-sessions-by-issuer: every AssumedRole event, by the role that issued the session
    counts = {}
    for evs in t.events.values():
        for e in evs:
            ui = e["userIdentity"]
            if ui.get("type") == "AssumedRole":
                k = ui["sessionContext"]["sessionIssuer"]["arn"]
                counts[k] = counts.get(k, 0) + 1
    exp["role-sessions-by-issuer"] = set(counts.items())
    # tls-versions: every event above carries tlsDetails in us-east-1 except the console logins
    for evs in t.events.values():
        for e in evs:
            if e["eventSource"] != "signin.amazonaws.com":
                e["tlsDetails"] = {"tlsVersion": "TLSv1.2" if e["awsRegion"] == "ap-east-1" else "TLSv1.3",
                                   "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": "x.amazonaws.com"}
    exp["old-tls-clients"] = {(MALLORY["arn"], "TLSv1.2", 2)}
    exp["source-of-event"] = {(True,)}
    return t, exp


def write(root: str) -> dict:
    """Writes the trail under root/AWSLogs/...; returns {query id: expected rows as a set of tuples}."""
    t, exp = build()
    for region, evs in t.events.items():
        d = os.path.join(root, "AWSLogs", ACCT, "CloudTrail", region, *DAY.split("-"))
        os.makedirs(d, exist_ok=True)
        name = f"{ACCT}_CloudTrail_{region}_{DAY.replace('-', '')}T1200Z_cookbook{len(evs):08d}.json.gz"
        with gzip.open(os.path.join(d, name), "wt") as f:
            json.dump({"Records": evs}, f)
    return exp
