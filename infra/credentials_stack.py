"""The client credentials secret, created once for both flows when no ARN is configured."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.encryption import imported_key
from infra.secure_defaults import AuditStack, acknowledge, app_secret

# Placeholder: the operator writes the real DX AAA client id and secret after the first deployment.
CLIENT_ID_PLACEHOLDER = "REPLACE-WITH-CLIENT-ID"


class ClientCredentialsStack(AuditStack):
    """Holds the OGC RS admin client credentials secret (JSON ``{"clientId", "clientSecret"}``) to fill in.

    A stack of its own so that the S3 audit and MinIO relay stacks share one secret, either can be deployed
    alone (CDK deploys this stack first as a dependency), and switching a flow off never deletes the secret
    an operator has filled in.
    """

    def __init__(self, scope: Construct, construct_id: str, *, key_arn: str | None = None, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.secret = app_secret(
            self,
            "ClientCredentials",
            imported_key(self, key_arn),
            description="OGC RS admin client credentials for the DX AAA token endpoint: "
            'JSON {"clientId": "<uuid>", "clientSecret": "<40 hex>"}. Replace the generated placeholder.',
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=f'{{"clientId": "{CLIENT_ID_PLACEHOLDER}"}}',
                generate_string_key="clientSecret",
                exclude_punctuation=True,
            ),
        )
        acknowledge(
            self.secret,
            "AwsSolutions-SMG4",
            "The DX AAA auth server issues these client credentials; Secrets Manager cannot rotate them, "
            "an operator replaces the value when the auth server issues new ones.",
        )
        CfnOutput(
            self,
            "ClientCredentialsSecretArn",
            value=self.secret.secret_arn,
            description="Fill in with: aws secretsmanager put-secret-value --secret-id <arn> "
            '--secret-string \'{"clientId":"...","clientSecret":"..."}\'',
        )
