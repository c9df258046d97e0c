"""`cdk synth` through the pinned CLI, offline, with real local bundling; then cfn-lint on the templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.constants import MINIO_RELAY_STACK_NAME, S3_AUDIT_STACK_NAME
from tests.infra.synth import REPO_ROOT

CDK_CLI = REPO_ROOT / "node_modules" / ".bin" / "cdk"
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.cli


@dataclass(frozen=True)
class CliSynthesis:
    """The CLI's output folder after `cdk synth --quiet -o <tmp>` with cdk.json's context, and what it printed."""

    cloud_assembly: Path
    # stdout and stderr together: with CI=true the CLI writes its messages to stdout instead of stderr.
    output: str


@pytest.fixture(scope="module")
def cli_synthesis(tmp_path_factory: pytest.TempPathFactory) -> CliSynthesis:
    """Run `cdk synth` once for the module."""
    if not CDK_CLI.exists():
        pytest.fail(f"{CDK_CLI} is missing: run `npm ci` first")
    out = tmp_path_factory.mktemp("cli") / "cdk.out"
    environment = {
        **os.environ,
        # cdk.json runs `python3 app.py`: resolve it to this interpreter's virtual environment.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CDK_DISABLE_VERSION_CHECK": "1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    environment.pop("CDK_OUTDIR", None)
    result = subprocess.run(
        [str(CDK_CLI), "synth", "--quiet", "-o", str(out)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return CliSynthesis(out, result.stdout + result.stderr)


@pytest.fixture(scope="module")
def cloud_assembly(cli_synthesis: CliSynthesis) -> Path:
    """The synthesized cloud assembly folder."""
    return cli_synthesis.cloud_assembly


def test_every_feature_flag_of_the_pinned_cdk_is_configured(cli_synthesis: CliSynthesis) -> None:
    # The CLI compares cdk.json with the flags recommended by the installed aws-cdk-lib and names the gap.
    assert "feature flags are not configured" not in cli_synthesis.output, cli_synthesis.output[-2000:]
    assert "Successfully synthesized" in cli_synthesis.output


def function_assets(cloud_assembly: Path, stack_name: str) -> list[Path]:
    """The staged code folders of the Lambda functions of one stack (from the asset manifest)."""
    manifest: dict[str, Any] = json.loads((cloud_assembly / f"{stack_name}.assets.json").read_text())
    folders = [cloud_assembly / asset["source"]["path"] for asset in manifest.get("files", {}).values()]
    return [folder for folder in folders if folder.is_dir()]


def test_s3_audit_bundle_holds_the_handler_the_shared_package_and_dependencies(cloud_assembly: Path) -> None:
    (bundle,) = function_assets(cloud_assembly, S3_AUDIT_STACK_NAME)
    assert (bundle / "s3_audit" / "handler.py").is_file()
    assert (bundle / "metering" / "__init__.py").is_file()
    assert (bundle / "requests" / "__init__.py").is_file()
    assert (bundle / "aws_lambda_powertools").is_dir()
    # The Lambda runtime provides boto3; wheels match arm64 Python 3.14; no caches of this machine.
    assert not (bundle / "boto3").exists()
    assert list(bundle.glob("msgspec/_core.cpython-314-aarch64-linux-gnu.so"))
    assert not list(bundle.rglob("__pycache__"))


def test_minio_relay_functions_share_one_bundle_with_the_handler(cloud_assembly: Path) -> None:
    (bundle,) = function_assets(cloud_assembly, MINIO_RELAY_STACK_NAME)
    assert (bundle / "minio_relay" / "handler.py").is_file()
    assert (bundle / "metering" / "__init__.py").is_file()
    assert (bundle / "requests" / "__init__.py").is_file()
    assert not (bundle / "s3_audit").exists()


def test_templates_pass_cfn_lint(cloud_assembly: Path) -> None:
    templates = sorted(str(path) for path in cloud_assembly.glob("*.template.json"))
    assert templates
    # W3005 is CDK's redundant DependsOn; W6001 is the flow stacks re-exposing the shared secret ARN on purpose.
    result = subprocess.run(
        [str(VENV_BIN / "cfn-lint"), *templates, "-i", "W3005", "W6001"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
