"""The review a security team runs on `cdk synth`: checkov 3 and cfn-lint over the templates of the default and the
kmsKey=create configurations. No failed check; every skip sits in its resource's metadata with a specific reason.

checkov lives in `.venv-checkov/` (it pins an old boto3); `make test` installs it. It runs offline: no guideline
download, no update check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.synth import REPO_ROOT, synthesize

CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "kms-create": {"kmsKey": "create"},
    # Every writer control at once: both sources, the event path, a break-glass role, the webhook's address
    # restriction and its WAF web ACL (resources the other two configurations do not have).
    "writers": {
        "awsSource": "both",
        "eventBridge": True,
        "breakGlassRoleArn": "arn:aws:iam::123456789012:role/ops/break-glass",
        "minioSourceCidrs": ["203.0.113.0/24"],
        "webhookWaf": True,
    },
}
# A template no one reviewed: scanned with the default configuration, it must fail, or the scan proves nothing.
CANARY = "Canary.template.json"
CANARY_TEMPLATE = {"Resources": {"PlainQueue": {"Type": "AWS::SQS::Queue", "Properties": {}}}}
# checkov writes this when a skip has no comment.
CHECKOV_DEFAULT_COMMENT = "No comment provided"
MIN_REASON_LENGTH = 60


@dataclass(frozen=True)
class Scan:
    """One checkov run over one configuration's templates."""

    templates: Mapping[str, Mapping[str, Any]]
    """Template body by file name."""
    report: Mapping[str, Any]

    def results(self, kind: str, *, canary: bool = False) -> list[Mapping[str, Any]]:
        """``kind`` is passed_checks, failed_checks or skipped_checks; the canary's only when asked."""
        return [r for r in self.report["results"][kind] if (Path(r["file_path"]).name == CANARY) == canary]


def checkov_command(templates: list[Path]) -> list[str]:
    return [str(CHECKOV), "--framework", "cloudformation", "--skip-download", "-o", "json", "-f", *map(str, templates)]


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scan]:
    """Each configuration synthesized once (cdk-nag on) and scanned once; the two scans run side by side."""
    if not CHECKOV.exists():
        message = f"{CHECKOV} is missing: `make test` installs it (make .venv-checkov/.installed)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    environment = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}
    runs: dict[str, tuple[dict[str, Any], subprocess.Popen[str]]] = {}
    for name, context in CONFIGURATIONS.items():
        out = tmp_path_factory.mktemp(name)
        app = synthesize(out, **context)
        paths = sorted(out.glob("*.template.json"))
        assert len(paths) == len(app.templates)
        if name == "default":
            (out / CANARY).write_text(json.dumps(CANARY_TEMPLATE))
            paths.append(out / CANARY)
        process = subprocess.Popen(
            checkov_command(paths), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
        )
        runs[name] = ({path.name: json.loads(path.read_text()) for path in paths}, process)
    scans = {}
    for name, (templates, process) in runs.items():
        stdout, stderr = process.communicate(timeout=600)
        # Exit 1 means failed checks (the canary's at least); anything else is a crash.
        assert process.returncode in (0, 1), stderr[-4000:]
        assert stderr == "", f"checkov must run offline and quietly: {stderr[-2000:]}"
        report = json.loads(stdout)
        assert isinstance(report, dict), "one framework, one report"
        assert report["check_type"] == "cloudformation"
        assert report["summary"]["parsing_errors"] == 0
        scans[name] = Scan(templates=templates, report=report)
    return scans


def describe(result: Mapping[str, Any]) -> str:
    return f"{Path(result['file_path']).name} {result['resource']} {result['check_id']} {result['check_name']}"


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_no_check_fails(scans: dict[str, Scan], configuration: str) -> None:
    scan = scans[configuration]
    assert [describe(r) for r in scan.results("failed_checks")] == []
    assert len(scan.results("passed_checks")) > 100


def test_the_scan_is_live_an_unreviewed_template_fails(scans: dict[str, Scan]) -> None:
    failed = {(r["resource"], r["check_id"]) for r in scans["default"].results("failed_checks", canary=True)}
    assert ("AWS::SQS::Queue.PlainQueue", "CKV_AWS_27") in failed


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_every_skip_says_specifically_why(scans: dict[str, Scan], configuration: str) -> None:
    skipped = scans[configuration].results("skipped_checks")
    assert skipped
    for result in skipped:
        reason = result["check_result"].get("suppress_comment", "")
        assert reason != CHECKOV_DEFAULT_COMMENT, describe(result)
        assert len(reason) >= MIN_REASON_LENGTH, f"{describe(result)}: {reason!r} is too vague"


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_every_skip_in_the_templates_names_a_check_that_applies(scans: dict[str, Scan], configuration: str) -> None:
    # A skip of a check that does not exist or does not apply to the resource type is a typo that hides nothing.
    scan = scans[configuration]
    declared = {
        (f"{body['Type']}.{name}", skip["id"])
        for file_name, template in scan.templates.items()
        for name, body in template.get("Resources", {}).items()
        for skip in body.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }
    reported = {(r["resource"], r["check_id"]) for r in scan.results("skipped_checks")}
    assert declared == reported


def test_a_key_turns_the_customer_managed_key_skips_into_passes(scans: dict[str, Scan]) -> None:
    key_checks = {"CKV_AWS_27", "CKV_AWS_35", "CKV_AWS_119", "CKV_AWS_149", "CKV_AWS_158"}

    def of_key_checks(scan: Scan, kind: str) -> set[tuple[str, str]]:
        return {(r["resource"], r["check_id"]) for r in scan.results(kind) if r["check_id"] in key_checks}

    skipped_by_default = of_key_checks(scans["default"], "skipped_checks")
    assert {check for _resource, check in skipped_by_default} == key_checks
    assert skipped_by_default == of_key_checks(scans["kms-create"], "passed_checks")
    assert of_key_checks(scans["kms-create"], "skipped_checks") == set()


def test_the_security_review_explains_every_skipped_check(scans: dict[str, Scan]) -> None:
    review = (REPO_ROOT / "docs" / "security.md").read_text()
    skipped = {r["check_id"] for scan in scans.values() for r in scan.results("skipped_checks")}
    assert sorted(check for check in skipped if f"{check} " not in review and f"{check}," not in review) == []


@pytest.mark.parametrize("configuration", ["kms-create", "writers"])
def test_other_configurations_pass_cfn_lint(scans: dict[str, Scan], tmp_path: Path, configuration: str) -> None:
    # make synth and test_cdk_cli_synth lint the default templates; these are the others.
    paths = []
    for file_name, template in scans[configuration].templates.items():
        path = tmp_path / file_name
        path.write_text(json.dumps(template))
        paths.append(str(path))
    result = subprocess.run(
        [str(CFN_LINT), *paths, "-i", "W3005", "W6001"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
