"""What the stack of every metering flow has: the app's key, the alarm topic, and the OGC RS settings and client
credentials its delivering function uses (``infra/ogc_rs.py``)."""

from __future__ import annotations

from typing import Any, ClassVar

from aws_cdk import CfnOutput
from constructs import Construct

from infra.config import AuditConfig
from infra.encryption import imported_key
from infra.secure_defaults import AuditStack, SecretReference, alarm_topic
from metering import metric_names as names


class FlowStack(AuditStack):
    """The stack of one flow (``FLOW``): ``build`` adds the flow's own resources once the shared ones exist.

    ``key`` is the app's key as imported here (None: AWS managed encryption); every alarm of the stack notifies
    ``alarm_topic``; the flow's functions read ``client_credentials`` to get an OGC RS token.
    """

    FLOW: ClassVar[names.Flow]

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AuditConfig,
        client_credentials: SecretReference,
        key_arn: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.client_credentials = client_credentials
        self.key = imported_key(self, key_arn)
        self.alarm_topic = alarm_topic(self, "AlarmTopic", config.alarm_email, self.key)
        self.build()
        CfnOutput(
            self,
            "ClientCredentialsSecretArn",
            value=client_credentials.arn,
            description='Secret JSON {"clientId", "clientSecret"} for the OGC RS token',
        )

    @property
    def service_name(self) -> str:
        """The service the flow's functions name in their logs and metrics."""
        return names.SERVICE_OF_FLOW[self.FLOW]

    def build(self) -> None:
        """The flow's own resources: queues, functions, monitoring, outputs."""
        raise NotImplementedError
