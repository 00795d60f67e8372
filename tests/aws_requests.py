"""Recorded AWS requests (tests/fault_proxy.py with record=True) as the IAM authorization requests
AWS evaluates for them: which function made each (its User-Agent carries `app/trailcopy-<function>`),
the IAM action, the resource ARN and the condition keys.

Actions and condition keys per the Service Authorization Reference:
- S3 (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html):
  ListObjectsV2 and HeadBucket are s3:ListBucket on the bucket, with s3:prefix / s3:delimiter /
  s3:max-keys only when the request carries them
  (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html,
  https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html); GetObject and HeadObject are
  s3:GetObject; PutObject and the multipart calls s3:PutObject; RestoreObject s3:RestoreObject;
  GetBucketLocation s3:GetBucketLocation; DeleteObject(s) s3:DeleteObject.
- SSE-KMS: S3 calls KMS for the caller. Reading an SSE-KMS object needs kms:Decrypt on its key, writing
  one kms:GenerateDataKey, both with kms:ViaService = s3.<region>.amazonaws.com and kms:CallerAccount
  (https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html#require-sse-kms,
  https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service).
- KMS JSON calls (X-Amz-Target TrentService.<Op>) are kms:<Op> on the key ARN, without kms:ViaService.
- Lambda GetAccountSettings (GET /2016-08-19/account-settings/) is lambda:GetAccountSettings, which has
  no resource type (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awslambda.html).
- Step Functions JSON calls (X-Amz-Target AWSStepFunctions.<Op>) are states:<Op> on the executionArn they
  name (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsstepfunctions.html).
"""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, unquote, urlsplit

from iam_eval import Request

PARTITION = "aws"


class Unmapped(Exception):
    pass


def function_of(rec: dict) -> str | None:
    ua = rec["headers"].get("x-amz-user-agent", "") + " " + rec["headers"].get("user-agent", "")
    m = re.search(r"\bapp/trailcopy-([a-z]+)\b", ua)
    return m.group(1) if m else None


def _scope(rec: dict) -> tuple[str, str]:
    """(region, service) from the SigV4 credential scope."""
    m = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request", rec["headers"].get("authorization", ""))
    if not m:
        raise Unmapped(f"unsigned request {rec['method']} {rec['path']}")
    return m.group(1), m.group(2)


def to_iam(rec: dict, account: str) -> list[Request]:
    """The authorization requests AWS evaluates for one recorded HTTP request."""
    region, service = _scope(rec)
    who = function_of(rec) or "?"
    if service == "kms":
        return [_kms(rec, region, account, who)]
    if service == "lambda":
        if rec["method"] == "GET" and urlsplit(rec["path"]).path.rstrip("/").endswith("/account-settings"):
            return [Request("lambda:GetAccountSettings", "*", {}, f"{who}: GetAccountSettings")]
        raise Unmapped(f"lambda request {rec['method']} {rec['path']}")
    if service == "states":
        target = rec["headers"].get("x-amz-target", "")
        op = target.split(".", 1)[1] if target.startswith("AWSStepFunctions.") else None
        arn = json.loads(rec["body"] or b"{}").get("executionArn")
        if op != "DescribeExecution" or not arn:
            raise Unmapped(f"states request {target} {rec['path']}")
        return [Request("states:DescribeExecution", arn, {}, f"{who}: states:DescribeExecution {arn}")]
    if service != "s3":
        raise Unmapped(f"{service} request {rec['method']} {rec['path']}")
    url = urlsplit(rec["path"])
    q = parse_qs(url.query, keep_blank_values=True)
    parts = url.path.lstrip("/").split("/", 1)
    bucket = unquote(parts[0])
    key = unquote(parts[1]) if len(parts) > 1 and parts[1] else None
    m = rec["method"]
    note = f"{who}: {m} {rec['path'][:160]}"
    bucket_arn = f"arn:{PARTITION}:s3:::{bucket}"
    if key is None:
        if m == "GET" and "list-type" in q:
            ctx = {f"s3:{k}": q[k][0] for k in ("prefix", "delimiter", "max-keys") if k in q}
            return [Request("s3:ListBucket", bucket_arn, ctx, note)]
        if m == "GET" and "location" in q:
            return [Request("s3:GetBucketLocation", bucket_arn, {}, note)]
        if m == "HEAD":
            return [Request("s3:ListBucket", bucket_arn, {}, note)]
        if m == "POST" and "delete" in q:
            return [Request("s3:DeleteObject", bucket_arn + "/*", {}, note)]
        raise Unmapped(note)
    obj = f"{bucket_arn}/{key}"
    resp = rec["response_headers"]
    via = {"kms:ViaService": f"s3.{region}.amazonaws.com", "kms:CallerAccount": account}
    kms_key = resp.get("x-amz-server-side-encryption-aws-kms-key-id") \
        if resp.get("x-amz-server-side-encryption") == "aws:kms" else None
    if m in ("GET", "HEAD") and "uploadId" in q:
        return [Request("s3:ListMultipartUploadParts", obj, {}, note)]
    if m == "GET":
        out = [Request("s3:GetObject", obj, {}, note)]
        if kms_key and rec["status"] < 300:
            out.append(Request("kms:Decrypt", _key_arn(kms_key, region, account), via, note + " (S3 decrypts)"))
        return out
    if m == "HEAD":
        return [Request("s3:GetObject", obj, {}, note)]
    if m == "PUT" or (m == "POST" and ("uploads" in q or "uploadId" in q)):
        out = [Request("s3:PutObject", obj, {}, note)]
        if kms_key:
            out.append(Request("kms:GenerateDataKey", _key_arn(kms_key, region, account), via, note + " (S3 encrypts)"))
        return out
    if m == "POST" and "restore" in q:
        return [Request("s3:RestoreObject", obj, {}, note)]
    if m == "DELETE" and "uploadId" in q:
        return [Request("s3:AbortMultipartUpload", obj, {}, note)]
    if m == "DELETE":
        return [Request("s3:DeleteObject", obj, {}, note)]
    raise Unmapped(note)


def _key_arn(key_id: str, region: str, account: str) -> str:
    if key_id.startswith("arn:"):
        return key_id
    if key_id.startswith("alias/"):
        raise Unmapped(f"KMS alias {key_id}: the key policy decides, not an ARN")
    return f"arn:{PARTITION}:kms:{region}:{account}:key/{key_id}"


def _kms(rec: dict, region: str, account: str, who: str) -> Request:
    target = rec["headers"].get("x-amz-target", "")
    if not target.startswith("TrentService."):
        raise Unmapped(f"KMS call without X-Amz-Target: {rec['path']}")
    op = target.split(".", 1)[1]
    body = json.loads(rec["body"] or b"{}")
    key = body.get("KeyId")
    if not key:
        raise Unmapped(f"kms:{op} without KeyId")
    key_arn = _key_arn(key, region, account)
    return Request(f"kms:{op}", key_arn, {"kms:CallerAccount": account}, f"{who}: kms:{op} {key}")
