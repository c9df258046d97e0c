"""Skips of the IaC scanner (checkov) that reviewers run on the synthesized templates.

A check that does not fit a resource is skipped in that resource's template metadata, with the reason, set beside
the resource in infra like the cdk-nag acknowledgements; ``docs/security.md`` lists every skip.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnResource
from constructs import IConstruct

CHECKOV_METADATA = "checkov"


def _cfn_resource(construct: IConstruct) -> CfnResource:
    if isinstance(construct, CfnResource):
        return construct
    child = construct.node.default_child
    if not isinstance(child, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to carry a checkov skip")
    return child


def skip_check(construct: IConstruct, check_id: str, reason: str) -> None:
    """Skip checkov's ``check_id`` on ``construct``'s CloudFormation resource, with the reason it does not apply."""
    resource = _cfn_resource(construct)
    current: Any = resource.get_metadata(CHECKOV_METADATA) or {}
    skips = [dict(skip) for skip in current.get("skip", []) if skip["id"] != check_id]
    skips.append({"id": check_id, "comment": reason})
    resource.add_metadata(CHECKOV_METADATA, {"skip": skips})
