"""Builds the app's stacks from the validated context: the one place that decides what gets deployed."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import App, Environment

from infra.config import AuditConfig
from infra.constants import CREDENTIALS_STACK_NAME, KEY_STACK_NAME, MINIO_RELAY_STACK_NAME, S3_AUDIT_STACK_NAME
from infra.credentials_stack import ClientCredentialsStack
from infra.key_stack import AppKeyStack
from infra.minio_relay_stack import MinioRelayStack
from infra.s3_audit_stack import S3AuditStack
from infra.secure_defaults import SecretReference


@dataclass(frozen=True)
class AuditStacks:
    """The stacks one synthesis produced; a stack is None when its flow is switched off."""

    config: AuditConfig
    key: AppKeyStack | None
    credentials: ClientCredentialsStack | None
    s3_audit: S3AuditStack | None
    minio_relay: MinioRelayStack | None


def build_stacks(app: App, env: Environment | None = None) -> AuditStacks:
    """Validate the context of ``app`` (raises ConfigError) and add the enabled stacks to it."""
    config = AuditConfig.from_context(app.node.try_get_context)
    # One key for the app, in a stack of its own that every other stack imports (infra/encryption.py).
    key_stack: AppKeyStack | None = None
    key_arn: str | None = config.imported_kms_key_arn or None
    if config.creates_kms_key:
        key_stack = AppKeyStack(
            app,
            KEY_STACK_NAME,
            s3_flow=config.enable_s3_audit,
            trail=config.enable_s3_audit and config.uses_cloudtrail,
            event_bridge=config.enable_s3_audit and config.event_bridge,
            env=env,
        )
        key_arn = key_stack.key.key_arn
    credentials_stack: ClientCredentialsStack | None = None
    if config.creates_client_credentials:
        credentials_stack = ClientCredentialsStack(app, CREDENTIALS_STACK_NAME, key_arn=key_arn, env=env)
        client_credentials = SecretReference.of(credentials_stack.secret)
    else:
        client_credentials = SecretReference.from_arn(config.client_credentials_secret_arn)

    s3_audit: S3AuditStack | None = None
    if config.enable_s3_audit:
        s3_audit = S3AuditStack(
            app, S3_AUDIT_STACK_NAME, config=config, client_credentials=client_credentials, key_arn=key_arn, env=env
        )
    minio_relay: MinioRelayStack | None = None
    if config.enable_minio_relay:
        minio_relay = MinioRelayStack(
            app,
            MINIO_RELAY_STACK_NAME,
            config=config,
            client_credentials=client_credentials,
            key_arn=key_arn,
            env=env,
        )
    return AuditStacks(
        config=config, key=key_stack, credentials=credentials_stack, s3_audit=s3_audit, minio_relay=minio_relay
    )
