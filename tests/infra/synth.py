"""Synthesize the CDK app in process the way `cdk synth` does (cdk.json context, cdk-nag on), and read templates."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import App, Validations, assertions
from cdk_nag import AwsSolutionsChecks

from infra.application import AuditStacks, build_stacks
from metering.ledger import DYNAMODB_ACTIONS

REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_JSON = REPO_ROOT / "cdk.json"
IMPORTED_SECRET_ARN = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:ogc-audit/client-credentials"


def cdk_json_context() -> dict[str, Any]:
    """The context defaults of cdk.json, as the CLI would pass them."""
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


@dataclass(frozen=True)
class SynthesizedApp:
    """An app synthesized with cdk-nag: its stacks and their templates by stack name."""

    stacks: AuditStacks
    templates: Mapping[str, Mapping[str, Any]]

    def template(self, stack_name: str) -> assertions.Template:
        """The CDK assertions view of one stack's template."""
        return assertions.Template.from_json(dict(self.templates[stack_name]))


def synthesize(tmp_dir: Path, **context: Any) -> SynthesizedApp:
    """Synthesize with cdk.json's context overridden by ``context``; bundling skipped (the CLI test bundles).

    Raises RuntimeError containing ValidationFailed when cdk-nag reports an unacknowledged finding.
    """
    app = App(
        context={**cdk_json_context(), "aws:cdk:bundling-stacks": [], **context},
        outdir=str(tmp_dir),
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    stacks = build_stacks(app)
    assembly = app.synth()
    return SynthesizedApp(stacks=stacks, templates={s.stack_name: s.template for s in assembly.stacks})


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, Mapping[str, Any]]:
    """The resources of one CloudFormation type, by logical id."""
    resources: dict[str, Mapping[str, Any]] = template["Resources"]
    return {name: body for name, body in resources.items() if body["Type"] == resource_type}


def only_resource(template: Mapping[str, Any], resource_type: str) -> Mapping[str, Any]:
    """The single resource of a type; fails when there are zero or several."""
    matches = resources_of_type(template, resource_type)
    assert len(matches) == 1, f"expected one {resource_type}, found {sorted(matches)}"
    return next(iter(matches.values()))


def logical_id(template: Mapping[str, Any], resource_type: str, path_fragment: str) -> str:
    """The logical id of the resource of ``resource_type`` whose id starts with ``path_fragment``."""
    matches = [name for name in resources_of_type(template, resource_type) if name.startswith(path_fragment)]
    assert len(matches) == 1, f"expected one {resource_type} named {path_fragment}*, found {matches}"
    return matches[0]


def policy_statements(template: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every IAM statement of the template's policies and roles, with the owning logical id."""
    for name, body in template["Resources"].items():
        properties = body.get("Properties", {})
        if body["Type"] == "AWS::IAM::Policy":
            for statement in properties["PolicyDocument"]["Statement"]:
                yield name, statement
        if body["Type"] == "AWS::IAM::Role":
            for policy in properties.get("Policies", []):
                for statement in policy["PolicyDocument"]["Statement"]:
                    yield name, statement


def as_list(value: Any) -> list[Any]:
    """IAM allows a single value or a list; always a list."""
    return value if isinstance(value, list) else [value]


def render(value: Any) -> str:
    """A CloudFormation string value flattened for reading: ``Fn::Join`` joined, ``Ref``/``GetAtt`` as ``${...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(render(part) for part in parts)
        if function == "Ref":
            return f"${{{argument}}}"
        if function == "Fn::GetAtt":
            return f"${{{'.'.join(argument)}}}"
        if function == "Fn::ImportValue":
            return f"${{Import:{render(argument)}}}"
    raise ValueError(f"cannot render {value!r}")


# What a function may do in its delivery ledger: exactly the calls metering.ledger makes (defined there, once).
LEDGER_ACTIONS = DYNAMODB_ACTIONS


# Active tracing: the only statement of a function's role allowed on "*" (X-Ray has no resource-level permissions).
# Sorted, as cdk.json's @aws-cdk/aws-iam:minimizePolicies writes actions.
XRAY_ACTIONS = ("xray:PutTelemetryRecords", "xray:PutTraceSegments")


def ledger_table(template: Mapping[str, Any]) -> str:
    """Logical id of the stack's delivery ledger table."""
    return logical_id(template, "AWS::DynamoDB::Table", "DeliveryLedger")


def get_att_arn(logical: str) -> dict[str, Any]:
    """The template's reference to the ARN of resource ``logical``."""
    return {"Fn::GetAtt": [logical, "Arn"]}


def queue_ids(template: Mapping[str, Any], label: str) -> tuple[str, str]:
    """Logical ids of the durable queue ``label`` (e.g. "LogFiles") and of its dead-letter queue."""
    return (
        logical_id(template, "AWS::SQS::Queue", f"{label}Queue"),
        logical_id(template, "AWS::SQS::Queue", f"{label}DeadLetterQueue"),
    )


def function(template: Mapping[str, Any], prefix: str) -> tuple[str, Mapping[str, Any]]:
    """Logical id and properties of the Lambda function whose id starts with ``prefix``, e.g. "DeliverFunction"."""
    name = logical_id(template, "AWS::Lambda::Function", prefix)
    properties: Mapping[str, Any] = template["Resources"][name]["Properties"]
    return name, properties


def function_statements(template: Mapping[str, Any], function_prefix: str) -> list[Mapping[str, Any]]:
    """Every statement of the policies attached to the function's role."""
    _, properties = function(template, function_prefix)
    role = properties["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for body in resources_of_type(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in body["Properties"]["Roles"]
        for statement in body["Properties"]["PolicyDocument"]["Statement"]
    ]


def role_statements(template: Mapping[str, Any], function_prefix: str) -> dict[tuple[str, ...], Any]:
    """The statements of the function's role, as its sorted actions -> resource."""
    # Action order means nothing to IAM (and @aws-cdk/aws-iam:minimizePolicies sorts them).
    return {
        tuple(sorted(as_list(statement["Action"]))): statement["Resource"]
        for statement in function_statements(template, function_prefix)
    }
