#!/usr/bin/env python3
"""The CDK app: the S3 audit and MinIO relay stacks, checked by cdk-nag AwsSolutions at every synthesis."""

from __future__ import annotations

import os
import sys

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.application import build_stacks
from infra.config import ConfigError


def main() -> int:
    """Synthesize the app; a wrong context value prints one sentence naming the key and exits 1."""
    # App() honours CDK_OUTDIR, which the CLI sets; `python app.py` alone writes to a temporary folder.
    app = App()
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    # Environment-agnostic unless the CLI knows the account and region (then lookups are possible).
    env = Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION"))
    try:
        build_stacks(app, env=env)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
