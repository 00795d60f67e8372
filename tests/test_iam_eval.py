"""The IAM evaluator of tests/iam_eval.py on AWS's own documented examples (the policies are quoted
from the pages named in each test; the requests are the cases those pages describe)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from iam_eval import Request, Unsupported, evaluate  # noqa: E402


def doc(*statements):
    return [{"Version": "2012-10-17", "Statement": list(statements)}]


def test_list_bucket_limited_to_a_folder_by_s3_prefix():
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/amazon-s3-policy-keys.html
    # ("Example 2: Getting a list of objects in a bucket with a specific prefix")
    p = doc({"Sid": "statement1", "Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": "arn:aws:s3:::amzn-s3-demo-bucket",
             "Condition": {"StringEquals": {"s3:prefix": "projects"}}})
    bucket = "arn:aws:s3:::amzn-s3-demo-bucket"
    assert evaluate(p, Request("s3:ListBucket", bucket, {"s3:prefix": "projects"})) == "Allow"
    assert evaluate(p, Request("s3:ListBucket", bucket, {"s3:prefix": "other"})) == "ImplicitDeny"
    # No prefix in the request (a whole-bucket listing, or HeadBucket): the key is missing.
    assert evaluate(p, Request("s3:ListBucket", bucket)) == "ImplicitDeny"


def test_string_like_prefix_and_delimiter():
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/walkthrough1.html (home folders):
    # ListBucket with s3:prefix "Development/*" and s3:delimiter "/".
    p = doc({"Sid": "AllowListBucketIfSpecificPrefixIsIncluded", "Action": ["s3:ListBucket"], "Effect": "Allow",
             "Resource": ["arn:aws:s3:::companybucket"],
             "Condition": {"StringLike": {"s3:prefix": ["Development/*"]}}})
    b = "arn:aws:s3:::companybucket"
    assert evaluate(p, Request("s3:ListBucket", b, {"s3:prefix": "Development/", "s3:delimiter": "/"})) == "Allow"
    assert evaluate(p, Request("s3:ListBucket", b, {"s3:prefix": "Development/project1/"})) == "Allow"
    assert evaluate(p, Request("s3:ListBucket", b, {"s3:prefix": "Finance/"})) == "ImplicitDeny"
    assert evaluate(p, Request("s3:ListBucket", b, {"s3:prefix": ""})) == "ImplicitDeny"


def test_kms_via_service_allows_only_through_the_named_services():
    # https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service
    key = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    p = doc({"Effect": "Allow",
             "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant",
                        "kms:ListGrants", "kms:DescribeKey"],
             "Resource": key,
             "Condition": {"StringEquals": {"kms:ViaService": ["ec2.us-west-2.amazonaws.com",
                                                               "rds.us-west-2.amazonaws.com"]}}})
    assert evaluate(p, Request("kms:Decrypt", key, {"kms:ViaService": "ec2.us-west-2.amazonaws.com"})) == "Allow"
    assert evaluate(p, Request("kms:ReEncryptFrom", key, {"kms:ViaService": "rds.us-west-2.amazonaws.com"})) == "Allow"
    assert evaluate(p, Request("kms:Decrypt", key, {"kms:ViaService": "s3.us-west-2.amazonaws.com"})) == "ImplicitDeny"
    # A direct call (not through a service) has no kms:ViaService.
    assert evaluate(p, Request("kms:DescribeKey", key)) == "ImplicitDeny"
    other = key.replace("1234abcd", "0000abcd")
    assert evaluate(p, Request("kms:Decrypt", other, {"kms:ViaService": "ec2.us-west-2.amazonaws.com"})) == "ImplicitDeny"


def test_if_exists_applies_the_condition_only_when_the_key_is_present():
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_IfExists
    p = doc({"Effect": "Allow", "Action": "ec2:*", "Resource": "*",
             "Condition": {"StringLikeIfExists": {"ec2:InstanceType": ["t1.*", "t2.*", "m3.*"]}}})
    assert evaluate(p, Request("ec2:RunInstances", "arn:aws:ec2:us-east-1:1:instance/*",
                               {"ec2:InstanceType": "t2.micro"})) == "Allow"
    assert evaluate(p, Request("ec2:RunInstances", "arn:aws:ec2:us-east-1:1:instance/*",
                               {"ec2:InstanceType": "m4.large"})) == "ImplicitDeny"
    assert evaluate(p, Request("ec2:DescribeInstances", "*")) == "Allow"


def test_missing_key_fails_a_condition_but_passes_a_negated_one():
    # Same page: "If the key that you specify in a policy condition is not present in the request
    # context, the values do not match and the condition is false. If the policy condition requires
    # that the key is not matched, such as StringNotLike or ArnNotLike, and the right key is not
    # present, the condition is true."
    res = "arn:aws:s3:::b/k"
    like = doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
                "Condition": {"StringLike": {"aws:PrincipalTag/team": "ops*"}}})
    not_like = doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
                    "Condition": {"StringNotLike": {"aws:PrincipalTag/team": "ops*"}}})
    assert evaluate(like, Request("s3:GetObject", res)) == "ImplicitDeny"
    assert evaluate(not_like, Request("s3:GetObject", res)) == "Allow"
    assert evaluate(not_like, Request("s3:GetObject", res, {"aws:PrincipalTag/team": "ops-1"})) == "ImplicitDeny"
    arn_not = doc({"Effect": "Allow", "Action": "sns:Publish", "Resource": "*",
                   "Condition": {"ArnNotLike": {"aws:SourceArn": "arn:aws:events:*:*:rule/x"}}})
    assert evaluate(arn_not, Request("sns:Publish", "arn:aws:sns:us-east-1:1:t")) == "Allow"


def test_explicit_deny_on_insecure_transport_overrides_allow():
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/security-best-practices.html
    # (aws:SecureTransport "false" -> Deny), combined with an Allow: an explicit Deny wins
    # (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html).
    p = doc({"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Sid": "RestrictToTLSRequestsOnly", "Action": "s3:*", "Effect": "Deny",
             "Resource": ["arn:aws:s3:::amzn-s3-demo-bucket", "arn:aws:s3:::amzn-s3-demo-bucket/*"],
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}})
    obj = "arn:aws:s3:::amzn-s3-demo-bucket/a"
    assert evaluate(p, Request("s3:GetObject", obj, {"aws:SecureTransport": "false"})) == "ExplicitDeny"
    assert evaluate(p, Request("s3:GetObject", obj, {"aws:SecureTransport": "true"})) == "Allow"
    assert evaluate(p, Request("s3:GetObject", "arn:aws:s3:::other/a", {"aws:SecureTransport": "false"})) == "Allow"


def test_not_action_and_wildcards():
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notaction.html
    p = doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
    assert evaluate(p, Request("s3:GetObject", "arn:aws:s3:::b/k")) == "Allow"
    assert evaluate(p, Request("iam:CreateUser", "arn:aws:iam::1:user/x")) == "ImplicitDeny"
    # Action names are case insensitive; resources are not; `?` matches one character.
    q = doc({"Effect": "Allow", "Action": "S3:Get*", "Resource": "arn:aws:s3:::b/logs/20??/*"})
    assert evaluate(q, Request("s3:GetObject", "arn:aws:s3:::b/logs/2024/x")) == "Allow"
    assert evaluate(q, Request("s3:GetObject", "arn:aws:s3:::b/LOGS/2024/x")) == "ImplicitDeny"
    assert evaluate(q, Request("s3:GetObject", "arn:aws:s3:::b/logs/202/x")) == "ImplicitDeny"
    assert evaluate(q, Request("s3:PutObject", "arn:aws:s3:::b/logs/2024/x")) == "ImplicitDeny"


def test_null_condition_tests_presence():
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_Null
    p = doc({"Action": "ec2:*", "Effect": "Allow", "Resource": "*", "Condition": {"Null": {"aws:TokenIssueTime": "true"}}})
    assert evaluate(p, Request("ec2:RunInstances", "*")) == "Allow"
    assert evaluate(p, Request("ec2:RunInstances", "*", {"aws:TokenIssueTime": "2026-01-01T00:00:00Z"})) == "ImplicitDeny"


def test_arn_like_matches_part_by_part():
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_ARN
    p = doc({"Effect": "Allow", "Action": "sns:Publish", "Resource": "*",
             "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:events:*:111122223333:rule/*"}}})
    ok = {"aws:SourceArn": "arn:aws:events:us-east-1:111122223333:rule/copy-failed"}
    assert evaluate(p, Request("sns:Publish", "arn:aws:sns:us-east-1:1:t", ok)) == "Allow"
    bad = {"aws:SourceArn": "arn:aws:events:us-east-1:444455556666:rule/copy-failed"}
    assert evaluate(p, Request("sns:Publish", "arn:aws:sns:us-east-1:1:t", bad)) == "ImplicitDeny"


def test_what_it_does_not_model_is_refused_not_guessed():
    with pytest.raises(Unsupported):
        evaluate(doc({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
                      "Condition": {"StringLike": {"s3:prefix": "home/${aws:username}/*"}}}),
                 Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "home/x/"}))
    with pytest.raises(Unsupported):
        evaluate(doc({"Effect": "Allow", "Action": "s3:*", "Resource": "*",
                      "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}}}),
                 Request("s3:GetObject", "arn:aws:s3:::b/k"))
