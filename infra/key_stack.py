"""Stack ``OgcAuditKey`` (kmsKey=create): the app's one customer managed key, which every other stack imports."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.constants import APP_KEY_PENDING_WINDOW
from infra.encryption import KEY_ADMINISTRATION_ACTIONS, key_policy_statements
from infra.secure_defaults import AuditStack


class AppKeyStack(AuditStack):
    """The one customer managed key of the app (kmsKey=create), rotated yearly, retained when the stack goes.

    Retained because the log bucket and the ledger table outlive their stacks, and what they hold stays readable
    only with this key.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        s3_flow: bool,
        trail: bool,
        event_bridge: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        policy = iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    sid="KeyAdministration",
                    principals=[iam.AccountRootPrincipal()],
                    actions=list(KEY_ADMINISTRATION_ACTIONS),
                    resources=["*"],
                ),
                *key_policy_statements(s3_flow=s3_flow, trail=trail, event_bridge=event_bridge),
            ]
        )
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the OGC RS metering app's data at rest: trail log files, queues, log groups, "
            "the delivery ledger, secrets and alarm topics",
            enable_key_rotation=True,
            pending_window=APP_KEY_PENDING_WINDOW,
            removal_policy=RemovalPolicy.RETAIN,
            policy=policy,
        )
        CfnOutput(self, "KeyArn", value=self.key.key_arn, description="The app's customer managed KMS key")
