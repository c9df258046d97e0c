"""The app's synthesized CloudFormation templates, read for the local runs (demo, fault drill, handler tests).

The local runs create in the emulator what the templates declare (queues, table, bucket notification, secrets)
and run each function under the policies the template gives its role, instead of keeping a second, hand-written
copy of the stacks. moto's CloudFormation cannot deploy these templates (custom resources, trails, alarms), so
this module reads the few resource types the functions touch and resolves the intrinsic functions
(``Ref``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::ImportValue``, ...) to the emulator's names and ARNs.

Synthesis needs the repository checkout (``app.py``, ``cdk.json``, ``infra/``) and the ``cdk`` extra; it runs
in process without bundling (~3 s the first time) and is cached per process.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Template = Mapping[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_JSON = REPO_ROOT / "cdk.json"
# The values an environment-agnostic template leaves to CloudFormation, as the emulator has them.
ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"


class TemplateError(ValueError):
    """A template that the local runs cannot read (an intrinsic or a resource they do not know)."""


@functools.cache
def _synthesize(context_items: tuple[tuple[str, str], ...]) -> dict[str, dict[str, Any]]:
    if str(REPO_ROOT) not in sys.path:  # infra/ lives beside functions/, outside the installed packages
        sys.path.insert(0, str(REPO_ROOT))
    from aws_cdk import App

    from infra.application import build_stacks

    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    context.update({key: json.loads(value) for key, value in context_items})
    with tempfile.TemporaryDirectory(prefix="ogc-audit-synth-") as outdir:
        # No bundling: the local runs import the function code from this checkout, not from the assets.
        app = App(context={**context, "aws:cdk:bundling-stacks": []}, outdir=outdir)
        build_stacks(app)
        assembly = app.synth()
        return {stack.stack_name: dict(stack.template) for stack in assembly.stacks}


def synthesized_templates(**context: Any) -> dict[str, dict[str, Any]]:
    """The templates of every stack by stack name, synthesized with cdk.json's context overridden by ``context``."""
    return _synthesize(tuple(sorted((key, json.dumps(value)) for key, value in context.items())))


def cloud_assembly_templates(outdir: str | Path) -> dict[str, dict[str, Any]]:
    """The templates of a ``cdk synth`` output folder (``cdk.out``), by stack name."""
    return {
        path.name.removesuffix(".template.json"): json.loads(path.read_text())
        for path in sorted(Path(outdir).glob("*.template.json"))
    }


@dataclass(frozen=True)
class Physical:
    """What a logical resource is in the emulator: its ``Ref`` value and its ``Fn::GetAtt`` attributes."""

    ref: str
    attributes: Mapping[str, str]


class StackResolver:
    """Resolves one stack's intrinsic functions against the physical resources created for it so far.

    ``physical`` maps logical ids to what the emulator made of them; ``exports`` holds the other stacks'
    exported outputs (``Fn::ImportValue``), added as their stacks are created.
    """

    def __init__(self, template: Template, exports: Mapping[str, str], fallback: Callable[[str], Physical]) -> None:
        self.template = template
        self.physical: dict[str, Physical] = {}
        self._exports = exports
        self._fallback = fallback

    def _resource(self, logical_id: str) -> Physical:
        if logical_id not in self.physical:
            if logical_id not in self.template["Resources"]:
                raise TemplateError(f"unknown resource {logical_id}")
            self.physical[logical_id] = self._fallback(logical_id)
        return self.physical[logical_id]

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function replaced by its value in the emulator."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((name, argument),) = value.items()
            function = _INTRINSICS.get(name)
            if function is not None:
                return function(self, argument)
        return {key: self.resolve(item) for key, item in value.items()}

    def _ref(self, name: str) -> str:
        pseudo = {
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.template.get("Parameters", {}):
            default = self.template["Parameters"][name].get("Default")
            if default is None:
                raise TemplateError(f"parameter {name} has no default")
            return str(default)
        return self._resource(name).ref

    def _get_att(self, argument: Any) -> str:
        logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
        attributes = self._resource(logical_id).attributes
        if attribute not in attributes:
            raise TemplateError(f"{logical_id} has no attribute {attribute} in the emulator")
        return attributes[attribute]

    def _join(self, argument: Any) -> str:
        separator, parts = argument
        return str(separator).join(str(self.resolve(part)) for part in parts)

    def _select(self, argument: Any) -> Any:
        index, items = argument
        return self.resolve(items)[int(self.resolve(index))]

    def _split(self, argument: Any) -> list[str]:
        separator, text = argument
        return str(self.resolve(text)).split(separator)

    def _import(self, argument: Any) -> str:
        name = str(self.resolve(argument))
        if name not in self._exports:
            raise TemplateError(f"no stack exports {name}")
        return self._exports[name]

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        resolved = {key: str(self.resolve(item)) for key, item in variables.items()}

        def lookup(name: str) -> str:
            if name in resolved:
                return resolved[name]
            if "." in name:
                return self._get_att(name)
            return self._ref(name)

        out, rest = [], text
        while "${" in rest:
            before, _, after = rest.partition("${")
            name, _, rest = after.partition("}")
            out.append(before + (("${" + name[1:] + "}") if name.startswith("!") else lookup(name)))
        return "".join(out) + rest

    def exports(self) -> dict[str, str]:
        """This stack's exported outputs, resolved (after its resources exist)."""
        found = {}
        for output in self.template.get("Outputs", {}).values():
            if "Export" in output:
                found[str(self.resolve(output["Export"]["Name"]))] = str(self.resolve(output["Value"]))
        return found


_INTRINSICS: dict[str, Callable[[StackResolver, Any], Any]] = {
    "Ref": StackResolver._ref,
    "Fn::GetAtt": StackResolver._get_att,
    "Fn::Join": StackResolver._join,
    "Fn::Select": StackResolver._select,
    "Fn::Split": StackResolver._split,
    "Fn::ImportValue": StackResolver._import,
    "Fn::Sub": StackResolver._sub,
}


def resources_of_type(template: Template, *resource_types: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(logical id, properties) of the template's resources of the given types, in template order."""
    for logical_id, body in template["Resources"].items():
        if body["Type"] in resource_types:
            yield logical_id, body.get("Properties", {})


def role_policy_documents(template: Template, role_id: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, document) of every policy the template gives role ``role_id``: inline, and ``AWS::IAM::Policy``."""
    role = template["Resources"][role_id]["Properties"]
    documents = [(policy["PolicyName"], policy["PolicyDocument"]) for policy in role.get("Policies", [])]
    for logical_id, properties in resources_of_type(template, "AWS::IAM::Policy"):
        if {"Ref": role_id} in properties.get("Roles", []):
            documents.append((logical_id, properties["PolicyDocument"]))
    return documents


def imports(template: Template) -> set[str]:
    """The export names the template imports (``Fn::ImportValue``): its stack comes after the exporting ones."""
    found: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            if "Fn::ImportValue" in value and isinstance(value["Fn::ImportValue"], str):
                found.add(value["Fn::ImportValue"])
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(template)
    return found


def short_name(logical_id: str) -> str:
    """A logical id without the 8-character hash CDK appends (``LogFilesQueue67F5A26B`` -> ``LogFilesQueue``)."""
    tail = logical_id[-8:]
    if len(logical_id) > 8 and all(c in "0123456789ABCDEF" for c in tail):
        return logical_id[:-8]
    return logical_id
