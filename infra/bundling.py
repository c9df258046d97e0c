"""Lambda code assets built on this machine, without Docker.

Each bundle holds the function's own package and the shared ``metering`` package at its root, plus the
runtime dependencies of ``pyproject.toml`` installed as manylinux wheels for the Lambda CPU and Python.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from infra.constants import (
    FUNCTIONS_DIR,
    LAMBDA_PIP_PLATFORM,
    LAMBDA_PYTHON_VERSION,
    LAMBDA_RUNTIME,
    PYPROJECT,
    RUNTIME_PROVIDED_DEPENDENCIES,
    SHARED_PACKAGE,
)

# Bump when the bundling procedure changes: the asset hash (and so cdk.out's cache) changes with it.
BUNDLER_VERSION = "2"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")


class BundlingError(RuntimeError):
    """pip could not install the runtime dependencies for the Lambda platform."""


def _requirement_name(requirement: str) -> str:
    """The distribution name of a PEP 508 requirement (``requests==2.34.2`` -> ``requests``)."""
    name = requirement.split(";", maxsplit=1)[0]
    for separator in "<>=!~[ (@":
        name = name.split(separator)[0]
    return name.strip().lower().replace("_", "-")


def runtime_requirements(pyproject: Path = PYPROJECT) -> tuple[str, ...]:
    """``[project].dependencies`` of pyproject.toml without what the Lambda runtime already provides."""
    with pyproject.open("rb") as stream:
        dependencies: list[str] = tomllib.load(stream)["project"]["dependencies"]
    return tuple(d for d in dependencies if _requirement_name(d) not in RUNTIME_PROVIDED_DEPENDENCIES)


def _source_files(directory: Path) -> Iterable[Path]:
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


def bundle_hash(packages: Sequence[str], requirements: Sequence[str]) -> str:
    """Hash of everything that ends up in the bundle: sources, pinned requirements, platform, bundler."""
    digest = hashlib.sha256()
    for item in (BUNDLER_VERSION, LAMBDA_PIP_PLATFORM, LAMBDA_PYTHON_VERSION, *requirements):
        digest.update(item.encode() + b"\0")
    for package in packages:
        root = FUNCTIONS_DIR / package
        for path in _source_files(root):
            digest.update(f"{package}/{path.relative_to(root).as_posix()}".encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@jsii.implements(ILocalBundling)
class LocalPythonBundler:
    """Installs wheels for the Lambda platform with pip and copies the packages in; never needs Docker."""

    def __init__(self, packages: Sequence[str], requirements: Sequence[str]) -> None:
        self._packages = tuple(packages)
        self._requirements = tuple(requirements)

    # jsii passes the bundling options as a second argument; they are not needed here.
    def try_bundle(self, output_dir: str, *_options: Any, **_kwargs: Any) -> bool:
        """Build the bundle in ``output_dir``; returns True so CDK never falls back to Docker."""
        out = Path(output_dir)
        if self._requirements:
            command = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-compile",
                "--target",
                str(out),
                "--platform",
                LAMBDA_PIP_PLATFORM,
                "--implementation",
                "cp",
                "--python-version",
                LAMBDA_PYTHON_VERSION,
                "--only-binary=:all:",
                *self._requirements,
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise BundlingError(f"pip could not install {' '.join(self._requirements)}: {result.stderr.strip()}")
            # Console scripts of the dependencies: never run inside Lambda.
            shutil.rmtree(out / "bin", ignore_errors=True)
        for package in self._packages:
            shutil.copytree(FUNCTIONS_DIR / package, out / package, ignore=_IGNORED, dirs_exist_ok=True)
        return True


def function_code(package: str) -> lambda_.Code:
    """The code asset of the function whose handler lives in ``functions/<package>/``."""
    packages = (package, SHARED_PACKAGE)
    requirements = runtime_requirements()
    return lambda_.Code.from_asset(
        str(FUNCTIONS_DIR / package),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=bundle_hash(packages, requirements),
        bundling=BundlingOptions(
            # Only named because CDK requires an image; the local bundler always succeeds first.
            image=LAMBDA_RUNTIME.bundling_image,
            command=["false"],
            local=LocalPythonBundler(packages, requirements),
        ),
    )
