"""template.yaml, loaded and translated to plain CloudFormation offline, for the template tests.

The translation is what `sam deploy` has CloudFormation do: AWS::LanguageExtensions
resolves the `Fn::If`s that depend only on parameters, then the SAM transform
(samtranslator, the library behind AWS::Serverless-2016-10-31) expands the serverless
resources. `CodeUri: .` is replaced by an S3 location, as `sam package` does.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from flowforge.local.cloudformation import Intrinsics, parameter_values, references

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
PACKAGED_CODE = "s3://flowforge-artifacts/function.zip"

#: The stack's functions and the handlers template.yaml gives them.
FUNCTIONS = {
    "ApiFunction": "functions.api.app.handler",
    "StepFunction": "functions.step.app.handler",
    "DlqFunction": "functions.dlq.app.handler",
    "SweeperFunction": "functions.sweeper.app.handler",
    "WsFunction": "functions.ws.app.handler",
    "BroadcastFunction": "functions.broadcast.app.handler",
}


class NoManagedPolicies:
    """Stands in for samtranslator's ManagedPolicyLoader, which lists IAM policies over the
    network. It is consulted only for policies named by name in `Policies`, and the
    template names none: SAM builds the ARNs of the ones it adds itself."""

    def load(self) -> dict[str, str]:
        return {}


def sam_template() -> dict[str, Any]:
    """template.yaml as SAM sees it (short tags as long forms)."""
    return yaml_parse(TEMPLATE_PATH.read_text(encoding="utf-8"))


def resolve_conditionals(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """The template after AWS::LanguageExtensions: each `Fn::If` whose condition depends
    only on parameters replaced by its branch (`AWS::NoValue` dropping the key)."""
    intrinsics = Intrinsics(template, parameters)
    no_value = object()

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (walk(v) for v in value) if v is not no_value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Fn::If"}:
            name, if_true, if_false = value["Fn::If"]
            return walk(if_true if intrinsics.condition(name) else if_false)
        if value == {"Ref": "AWS::NoValue"}:
            return no_value
        return {k: v for k, v in ((k, walk(v)) for k, v in value.items()) if v is not no_value}

    resolved = dict(template)
    for section in ("Globals", "Resources", "Outputs"):
        if section in resolved:
            resolved[section] = walk(resolved[section])
    return resolved


@cache
def _translated(parameters_json: str) -> str:
    template = sam_template()
    parameters = parameter_values(template, json.loads(parameters_json))
    template = resolve_conditionals(template, parameters)
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = PACKAGED_CODE
    return json.dumps(transform(template, parameters, NoManagedPolicies()))


def translate(**parameters: str) -> dict[str, Any]:
    """The CloudFormation template `sam deploy` would create for these parameter overrides."""
    return json.loads(_translated(json.dumps(parameters, sort_keys=True)))


def resources_of_type(cfn: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in cfn["Resources"].items() if r["Type"] == resource_type}


def without(cfn: dict[str, Any], *type_prefixes: str) -> dict[str, Any]:
    """``cfn`` less the resources of those types and, transitively, everything that refers
    to them (moto's CloudFormation cannot create API Gateway v2 APIs, and Lambda functions
    would need their code in S3)."""
    cfn = copy.deepcopy(cfn)
    resources = cfn["Resources"]
    gone = {lid for lid, r in resources.items() if r["Type"].startswith(type_prefixes)}
    while True:
        more = {
            lid
            for lid, r in resources.items()
            if lid not in gone and (references(r.get("Properties", {})) | set(_depends_on(r))) & gone
        }
        if not more:
            break
        gone |= more
    for lid in gone:
        del resources[lid]
    for resource in resources.values():
        if "DependsOn" in resource:
            resource["DependsOn"] = [d for d in _depends_on(resource) if d not in gone]
    cfn["Outputs"] = {name: out for name, out in cfn.get("Outputs", {}).items() if not references(out) & gone}
    return cfn


def _depends_on(resource: dict[str, Any]) -> list[str]:
    depends = resource.get("DependsOn", [])
    return [depends] if isinstance(depends, str) else list(depends)
