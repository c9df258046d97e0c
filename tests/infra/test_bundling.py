"""The local bundler: dependency list from pyproject.toml, cache key, package copying (pip is in the CLI test)."""

from __future__ import annotations

from pathlib import Path

from infra.bundling import LocalPythonBundler, bundle_hash, runtime_requirements
from infra.constants import FUNCTIONS_DIR


def test_runtime_requirements_leave_out_what_lambda_provides(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\ndependencies = ["boto3==1.44.8", "botocore>=1", "requests==2.34.2", '
        "\"msgspec==0.22.0 ; python_version >= '3.11'\"]\n"
    )
    assert runtime_requirements(pyproject) == ("requests==2.34.2", "msgspec==0.22.0 ; python_version >= '3.11'")


def test_project_dependencies_are_pinned_for_the_bundle() -> None:
    requirements = runtime_requirements()
    assert requirements
    assert all("==" in requirement for requirement in requirements)
    assert not [r for r in requirements if r.startswith(("boto3", "botocore"))]


def test_bundle_hash_changes_with_the_requirements() -> None:
    packages = ("metering",)
    assert bundle_hash(packages, ("requests==2.34.2",)) == bundle_hash(packages, ("requests==2.34.2",))
    assert bundle_hash(packages, ("requests==2.34.2",)) != bundle_hash(packages, ("requests==2.34.3",))


def test_bundler_copies_the_packages_without_caches(tmp_path: Path) -> None:
    assert LocalPythonBundler(("metering",), ()).try_bundle(str(tmp_path)) is True
    copied = {path.relative_to(tmp_path / "metering") for path in (tmp_path / "metering").rglob("*.py")}
    source = {path.relative_to(FUNCTIONS_DIR / "metering") for path in (FUNCTIONS_DIR / "metering").rglob("*.py")}
    assert copied == source
    assert not list(tmp_path.rglob("__pycache__"))
