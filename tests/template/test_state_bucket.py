"""The state bucket (state of any size): private, encrypted, TLS only, expiring with the
run retention, and reachable by the API and step functions alone, on runs/* only."""

from __future__ import annotations

import json
from typing import Any

from tests.template.sam_template import resources_of_type, sam_template, translate

#: What each function may do with the state bucket; every other function nothing.
S3_GRANTS = {
    # runs start (and redrives patch) with large values; GET .../values/{key} reads them
    "ApiFunctionRole": {
        ("s3:PutObject", '{"Fn::Sub": "${StateBucket.Arn}/runs/*"}'),
        ("s3:GetObject", '{"Fn::Sub": "${StateBucket.Arn}/runs/*"}'),
        ("s3:ListBucket", '{"Fn::GetAtt": ["StateBucket", "Arn"]}'),
    },
    "StepFunctionRole": {
        ("s3:PutObject", '{"Fn::Sub": "${StateBucket.Arn}/runs/*"}'),
        ("s3:GetObject", '{"Fn::Sub": "${StateBucket.Arn}/runs/*"}'),
        ("s3:ListBucket", '{"Fn::GetAtt": ["StateBucket", "Arn"]}'),
    },
}


def s3_grants(role: dict[str, Any]) -> set[tuple[str, str]]:
    found = set()
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            for action in actions:
                if action.startswith("s3:"):
                    assert "Condition" not in statement or action == "s3:ListBucket"
                    found |= {(action, json.dumps(r, sort_keys=True)) for r in resources}
    return found


def test_only_the_api_and_step_functions_reach_the_bucket_and_only_runs_objects():
    roles = resources_of_type(translate(), "AWS::IAM::Role")

    grants = {name: s3_grants(role) for name, role in roles.items()}

    assert {name: found for name, found in grants.items() if found} == S3_GRANTS


def test_the_bucket_is_private_encrypted_and_expires_run_values_with_the_retention():
    resources = sam_template()["Resources"]
    props = resources["StateBucket"]["Properties"]

    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    expiring = [r for r in props["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    assert expiring == [
        {
            "Id": "ExpireRunValues",
            "Status": "Enabled",
            "Prefix": "runs/",
            "ExpirationInDays": {"Ref": "RetentionDays"},
        }
    ]


def test_the_bucket_refuses_requests_without_tls():
    policy = sam_template()["Resources"]["StateBucketPolicy"]["Properties"]

    assert policy["Bucket"] == {"Ref": "StateBucket"}
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::Sub": "${StateBucket.Arn}/*"} in statement["Resource"]


def test_the_offload_parameters_reach_every_function():
    template = sam_template()
    parameters = template["Parameters"]
    variables = template["Globals"]["Function"]["Environment"]["Variables"]

    assert parameters["OffloadThresholdBytes"]["Default"] == 32768
    assert parameters["MaxTotalStateBytes"]["Default"] == 100 * 1024 * 1024
    assert variables["FLOWFORGE_STATE_BUCKET"] == {"Ref": "StateBucket"}
    assert variables["FLOWFORGE_OFFLOAD_THRESHOLD_BYTES"] == {"Ref": "OffloadThresholdBytes"}
    assert variables["FLOWFORGE_MAX_TOTAL_STATE_BYTES"] == {"Ref": "MaxTotalStateBytes"}
