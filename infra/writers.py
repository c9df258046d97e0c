"""Only the right writers: resource-policy denies that keep forged log files and messages out of the metered path.

Whatever reaches the log buckets' log prefixes or the metered queues is metered, so an ordinary principal of the
account with ``s3:PutObject`` or ``sqs:SendMessage`` rights could otherwise bill anyone for anything. Each resource
below gets Deny statements whose conditions are the exact complement of the one delivery that belongs there (and
of the optional break-glass role, context ``breakGlassRoleArn``); a Deny beats every Allow, identity policies and
administrators included (docs/security.md says who may still write, and how ``ogc-audit redrive`` runs).

A service delivery is recognised by what only AWS services put in a request: ``aws:SourceArn`` and
``aws:SourceAccount`` (the resource the service acts for) and ``aws:PrincipalServiceName``. A principal of the
account cannot set them, so the Deny statements are:

- ``<sid>WithoutSource``: no ``aws:SourceArn`` (a principal calling directly) and not the break-glass role;
- ``<sid>FromOtherSources``: an ``aws:SourceArn`` that is not the delivering resource (another trail, bucket, rule);
- ``<sid>FromOtherAccounts``: an ``aws:SourceAccount`` that is not this account;
- ``<sid>ByOtherServices``: an ``aws:PrincipalServiceName`` that is not the delivering service.

Each condition only ever adds refusals to a delivery the Allow statement (bound by the same source ARN and account)
already admits, so the services' documented deliveries pass and nothing else does.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws
from aws_cdk import aws_iam as iam


def deny_all_but_delivery(
    sid: str,
    *,
    actions: Sequence[str],
    resources: Sequence[str],
    service: str,
    source_arns: Sequence[str],
    break_glass_role_arn: str = "",
) -> list[iam.PolicyStatement]:
    """Deny ``actions`` on ``resources`` to everyone but ``service`` acting for one of ``source_arns`` (ARN patterns)
    of this account, and the break-glass role when one is configured."""
    everyone = [iam.AnyPrincipal()]
    without_source: dict[str, dict[str, object]] = {"Null": {"aws:SourceArn": "true"}}
    if break_glass_role_arn:
        without_source["ArnNotEquals"] = {"aws:PrincipalArn": break_glass_role_arn}
    conditions: dict[str, dict[str, dict[str, object]]] = {
        "WithoutSource": without_source,
        "FromOtherSources": {"Null": {"aws:SourceArn": "false"}, "ArnNotLike": {"aws:SourceArn": list(source_arns)}},
        "FromOtherAccounts": {
            "Null": {"aws:SourceAccount": "false"},
            "StringNotEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
        },
        "ByOtherServices": {
            "Null": {"aws:PrincipalServiceName": "false"},
            "StringNotEquals": {"aws:PrincipalServiceName": service},
        },
    }
    return [
        iam.PolicyStatement(
            sid=f"{sid}{suffix}",
            effect=iam.Effect.DENY,
            principals=everyone,
            actions=list(actions),
            resources=list(resources),
            conditions=condition,
        )
        for suffix, condition in conditions.items()
    ]


def deny_all_but_roles(
    sid: str, *, actions: Sequence[str], resources: Sequence[str], role_arns: Sequence[str]
) -> iam.PolicyStatement:
    """Deny ``actions`` on ``resources`` to every principal but the roles ``role_arns`` (services included: they
    have no ``aws:PrincipalArn``, and a negated operator matches a missing key)."""
    return iam.PolicyStatement(
        sid=sid,
        effect=iam.Effect.DENY,
        principals=[iam.AnyPrincipal()],
        actions=list(actions),
        resources=list(resources),
        conditions={"ArnNotEquals": {"aws:PrincipalArn": list(role_arns)}},
    )
