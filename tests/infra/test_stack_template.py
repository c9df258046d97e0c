"""Reading templates for the local runs: intrinsic functions resolved to the emulator's resources."""

from __future__ import annotations

from typing import Any

import pytest

from testbed.stack_template import (
    Physical,
    StackResolver,
    TemplateError,
    imports,
    role_policy_documents,
    short_name,
)

TEMPLATE: dict[str, Any] = {
    "Parameters": {"Stage": {"Type": "String", "Default": "prod"}},
    "Resources": {
        "QueueAB12CD34": {"Type": "AWS::SQS::Queue"},
        "KeyEF56AB78": {"Type": "AWS::KMS::Key"},
        "RoleC0FFEE12": {
            "Type": "AWS::IAM::Role",
            "Properties": {"Policies": [{"PolicyName": "inline", "PolicyDocument": {"Statement": []}}]},
        },
        "RoleDefaultPolicy": {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "PolicyDocument": {"Statement": [{"Action": "sqs:SendMessage"}]},
                "Roles": [{"Ref": "RoleC0FFEE12"}],
            },
        },
        "OtherPolicy": {
            "Type": "AWS::IAM::Policy",
            "Properties": {"PolicyDocument": {"Statement": []}, "Roles": [{"Ref": "SomeoneElse"}]},
        },
    },
    "Outputs": {
        "QueueArn": {"Value": {"Fn::GetAtt": ["QueueAB12CD34", "Arn"]}, "Export": {"Name": "Stack:QueueArn"}},
    },
}
QUEUE = Physical("https://sqs/q", {"Arn": "arn:aws:sqs:us-east-1:123456789012:q"})


def resolver(exports: dict[str, str] | None = None) -> StackResolver:
    made = StackResolver(TEMPLATE, exports or {}, lambda logical_id: Physical(f"made-{logical_id}", {}))
    made.physical["QueueAB12CD34"] = QUEUE
    return made


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"Ref": "QueueAB12CD34"}, "https://sqs/q"),
        ({"Fn::GetAtt": ["QueueAB12CD34", "Arn"]}, "arn:aws:sqs:us-east-1:123456789012:q"),
        ({"Fn::GetAtt": "QueueAB12CD34.Arn"}, "arn:aws:sqs:us-east-1:123456789012:q"),
        (
            {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::b/AWSLogs/", {"Ref": "AWS::AccountId"}]]},
            "arn:aws:s3:::b/AWSLogs/123456789012",
        ),
        ({"Fn::Select": [1, {"Fn::Split": [":", {"Fn::GetAtt": ["QueueAB12CD34", "Arn"]}]}]}, "aws"),
        (
            {"Fn::Sub": "${AWS::Region}/${QueueAB12CD34.Arn}/${!Literal}/${Stage}"},
            "us-east-1/arn:aws:sqs:us-east-1:123456789012:q/${Literal}/prod",
        ),
        ({"Fn::Sub": ["${X}-${AWS::AccountId}", {"X": {"Ref": "QueueAB12CD34"}}]}, "https://sqs/q-123456789012"),
        ({"Ref": "KeyEF56AB78"}, "made-KeyEF56AB78"),  # a resource the local runs do not create
        ({"Fn::ImportValue": "Other:SecretArn"}, "arn:secret"),
        (
            {"Statement": [{"Resource": [{"Ref": "QueueAB12CD34"}, "*"]}]},
            {"Statement": [{"Resource": ["https://sqs/q", "*"]}]},
        ),
    ],
)
def test_intrinsics_resolve_to_the_emulators_values(value: Any, expected: Any) -> None:
    assert resolver({"Other:SecretArn": "arn:secret"}).resolve(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"Ref": "Missing"}, "unknown resource Missing"),
        ({"Fn::GetAtt": ["QueueAB12CD34", "QueueName"]}, "has no attribute QueueName"),
        ({"Fn::ImportValue": "Nobody:Exports"}, "no stack exports Nobody:Exports"),
    ],
)
def test_what_cannot_be_resolved_is_named(value: Any, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        resolver().resolve(value)


def test_exports_are_resolved_for_the_stacks_that_import_them() -> None:
    assert resolver().exports() == {"Stack:QueueArn": "arn:aws:sqs:us-east-1:123456789012:q"}


def test_a_stack_imports_every_export_its_template_names_at_any_depth() -> None:
    queue = {
        "KmsMasterKeyId": {"Fn::ImportValue": "Key:Arn"},
        "Tags": [{"Key": "secret", "Value": {"Fn::Join": ["", [{"Fn::ImportValue": "Credentials:SecretArn"}]]}}],
    }
    assert imports({"Resources": {"Q": {"Type": "AWS::SQS::Queue", "Properties": queue}}}) == {
        "Key:Arn",
        "Credentials:SecretArn",
    }
    assert imports(TEMPLATE) == set()


def test_a_roles_policies_are_its_inline_ones_and_those_attached_to_it() -> None:
    names = [name for name, _ in role_policy_documents(TEMPLATE, "RoleC0FFEE12")]
    assert names == ["inline", "RoleDefaultPolicy"]


@pytest.mark.parametrize(
    ("logical_id", "short"),
    [("LogFilesQueue67F5A26B", "LogFilesQueue"), ("LogBucket", "LogBucket"), ("ABCDEF12", "ABCDEF12")],
)
def test_short_names_drop_cdks_hash(logical_id: str, short: str) -> None:
    assert short_name(logical_id) == short
