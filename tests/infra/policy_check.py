"""A small evaluator of the resource-policy statements the templates emit, to test who may write what.

It follows the IAM evaluation logic for one resource policy: an explicit Deny that matches wins, else an Allow that
matches allows, else the request is implicitly denied (for a principal of the account its identity policy may still
allow it; a service principal needs the Allow). It knows exactly the elements and condition operators the
templates use, and raises on anything else, so a new operator cannot pass unevaluated.

Matching follows the IAM reference: ``*`` and ``?`` wildcards in Action, Resource and the ``Like`` operators; values
of one key are ORed, keys and operators ANDed; a negated operator (``StringNotEquals``, ``ArnNotLike``, ...) matches
when the key is absent from the request; ``Null: true`` means absent. Templates are resolved to concrete names and
ARNs first (``resolved_template``), with ``testbed.stack_template``'s resolver.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from testbed.stack_template import ACCOUNT, REGION, Physical, StackResolver

Decision = Literal["Deny", "Allow", "ImplicitDeny"]
OTHER_ACCOUNT = "210987654321"


@dataclass(frozen=True)
class Request:
    """One call as IAM sees it: who (an IAM principal's ARN or a service), what, on which resource, and context."""

    action: str
    resource: str
    principal_arn: str | None = None
    service: str | None = None
    context: Mapping[str, str] = field(default_factory=dict)

    def keys(self) -> dict[str, str]:
        """The request context, with the keys IAM derives from the principal."""
        derived = {"aws:SecureTransport": "true"}
        if self.principal_arn is not None:
            derived["aws:PrincipalArn"] = self.principal_arn
        if self.service is not None:
            derived["aws:PrincipalServiceName"] = self.service
        return {**derived, **self.context}


def _like(pattern: str, value: str) -> bool:
    # IAM wildcards: * any run of characters, ? one character; nothing else is special.
    regex = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _arn_like(pattern: str, value: str) -> bool:
    # ARN operators compare the six colon-separated parts one by one, each with wildcards.
    wanted, actual = pattern.split(":", 5), value.split(":", 5)
    return len(wanted) == len(actual) == 6 and all(_like(p, v) for p, v in zip(wanted, actual, strict=True))


def _ip(cidr: str, value: str) -> bool:
    return ipaddress.ip_address(value) in ipaddress.ip_network(cidr)


_POSITIVE: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda wanted, actual: wanted == actual,
    "StringLike": _like,
    "ArnEquals": lambda wanted, actual: wanted == actual,
    "ArnLike": _arn_like,
    "Bool": lambda wanted, actual: wanted.lower() == actual.lower(),
    "IpAddress": _ip,
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NotIpAddress": "IpAddress",
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, str]) -> bool:
    values = [str(value) for value in _as_list(wanted)]
    actual = context.get(key)
    if operator == "Null":
        (absent,) = values
        return (actual is None) == (absent == "true")
    if operator in _POSITIVE:
        return actual is not None and any(_POSITIVE[operator](value, actual) for value in values)
    if operator in _NEGATED:
        return actual is None or not any(_POSITIVE[_NEGATED[operator]](value, actual) for value in values)
    raise ValueError(f"the policy checker does not know the condition operator {operator}")


def _principal_matches(principal: Any, request: Request) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, Mapping) or not set(principal) <= {"AWS", "Service"}:
        raise ValueError(f"the policy checker does not know the principal {principal!r}")
    services = _as_list(principal.get("Service", []))
    identities = _as_list(principal.get("AWS", []))
    if "*" in identities:
        return True
    if request.service is not None and request.service in services:
        return True
    if request.principal_arn is None:
        return False
    account = request.principal_arn.split(":")[4]
    return any(arn in (request.principal_arn, f"arn:aws:iam::{account}:root") for arn in identities)


def statement_matches(statement: Mapping[str, Any], request: Request) -> bool:
    """True when ``statement`` applies to ``request`` (principal, action, resource and every condition)."""
    unknown = set(statement) - {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}
    if unknown:
        raise ValueError(f"the policy checker does not know the elements {sorted(unknown)}")
    if not _principal_matches(statement["Principal"], request):
        return False
    if not any(_like(action.lower(), request.action.lower()) for action in _as_list(statement["Action"])):
        return False
    if not any(_like(resource, request.resource) for resource in _as_list(statement["Resource"])):
        return False
    context = request.keys()
    return all(
        _condition_holds(operator, key, wanted, context)
        for operator, conditions in statement.get("Condition", {}).items()
        for key, wanted in conditions.items()
    )


def decide(statements: list[Mapping[str, Any]], request: Request) -> Decision:
    """What the resource policy made of ``statements`` decides for ``request``."""
    matching = [statement for statement in statements if statement_matches(statement, request)]
    if any(statement["Effect"] == "Deny" for statement in matching):
        return "Deny"
    if any(statement["Effect"] == "Allow" for statement in matching):
        return "Allow"
    return "ImplicitDeny"


# --------------------------------------------------------------------------------------------------
# Templates resolved to concrete names and ARNs
# --------------------------------------------------------------------------------------------------


class _AnyExport(Mapping[str, str]):
    """Every other stack's export (the app key's ARN), as a key ARN of the account."""

    def __getitem__(self, name: str) -> str:
        return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000000"

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _physical(template: Mapping[str, Any], logical_id: str) -> Physical:
    resource_type = template["Resources"][logical_id]["Type"]
    # A trail named in the template (with kmsKey) has that name in its ARN.
    name = str(template["Resources"][logical_id].get("Properties", {}).get("TrailName", logical_id.lower()))
    arns = {
        "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
        "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
        "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
        "AWS::Events::Rule": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}",
        "AWS::CloudTrail::Trail": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/{name}",
    }
    ref = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}" if resource_type == "AWS::SQS::Queue" else name
    service = resource_type.split("::")[1].lower()
    return Physical(ref, {"Arn": arns.get(resource_type, f"arn:aws:{service}:{REGION}:{ACCOUNT}:{name}")})


def resolver(template: Mapping[str, Any]) -> StackResolver:
    """A resolver naming every resource of ``template`` as AWS would (bucket ARNs without account, role ARNs...)."""
    return StackResolver(dict(template), _AnyExport(), lambda logical: _physical(template, logical))


def resource_policy(template: Mapping[str, Any], policy_type: str, target_key: str, target: str) -> list[Any]:
    """The resolved statements of the ``policy_type`` resource (e.g. AWS::S3::BucketPolicy) whose ``target_key``
    (Bucket, Queues) names the logical resource ``target``."""
    resolve = resolver(template)
    found = [
        resolve.resolve(body["Properties"]["PolicyDocument"]["Statement"])
        for body in template["Resources"].values()
        if body["Type"] == policy_type and {"Ref": target} in _as_list(body["Properties"][target_key])
    ]
    assert len(found) == 1, f"expected one {policy_type} for {target}, found {len(found)}"
    statements: list[Any] = found[0]
    return statements
