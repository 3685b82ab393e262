"""What CloudFormation receives: template.yaml transformed as ``sam deploy`` transforms it,
linted as CloudFormation would read it, and resolved for one set of parameters.

``sam deploy`` uploads the template with its ``Transform``; CloudFormation runs the SAM
transform (samtranslator) and then creates the plain CloudFormation that comes out. Linting
template.yaml itself misses what the transform produces (policy templates expanded,
intrinsics moved into IAM documents), so the tests lint the transformed template, and
resolve it the way CloudFormation would for given parameters, to read the IAM policies each
function's role really gets.

The resolver knows exactly the intrinsics :data:`INTRINSICS` lists; any other one in the
transformed template is an error, so a new intrinsic must be taught here before a test can
pass on it.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PARTITION, REGION, ACCOUNT = "aws", "us-east-1", "123456789012"
PLACEHOLDER_CODE = "s3://placeholder-bucket/code.zip"
"""Where ``sam package`` would have uploaded each function's and layer's code."""

INTRINSICS = ("Ref", "Fn::Sub", "Fn::Join", "Fn::Split", "Fn::Select", "Fn::If",
              "Fn::GetAtt", "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition")
NO_VALUE = object()


class _NoManagedPolicies:
    """samtranslator asks for the account's managed policies to resolve policy names;
    the template names none, so none are needed (and no AWS account is reached)."""

    def load(self) -> dict[str, str]:
        return {}


def sam_template() -> dict[str, Any]:
    """template.yaml as data, with code locations replaced as ``sam package`` does."""
    from samtranslator.yaml_helper import yaml_parse

    template: dict[str, Any] = yaml_parse((ROOT / "template.yaml").read_text())
    for resource in template["Resources"].values():
        properties = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if key in properties:
                properties[key] = PLACEHOLDER_CODE
    return template


def transformed(parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The plain CloudFormation ``sam deploy`` hands CloudFormation for these parameters.

    The parameters' values also become their defaults, so a linter reading the output
    evaluates the template for this parameter set.
    """
    from samtranslator.translator.transform import transform

    template = sam_template()
    for name, value in (parameters or {}).items():
        if name not in template["Parameters"]:
            raise KeyError(f"template.yaml has no parameter {name}")
        template["Parameters"][name]["Default"] = value
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    output: dict[str, Any] = transform(template, dict(parameters or {}), _NoManagedPolicies())
    return output


def lint(template: dict[str, Any]) -> list[str]:
    """cfn-lint's errors (not warnings) on a plain CloudFormation template."""
    from cfnlint.api import ManualArgs
    from cfnlint.api import lint as cfn_lint

    matches = cfn_lint(json.dumps(template), config=ManualArgs(regions=[REGION]))
    return [f"{m.rule.id} {'/'.join(str(p) for p in m.path)}: {m.message}" for m in matches
            if m.rule.id.startswith("E")]


def intrinsics_in(node: Any) -> set[str]:
    """Every intrinsic function name used anywhere under ``node``."""
    found: set[str] = set()
    if isinstance(node, dict):
        if len(node) == 1:
            (key,) = node
            if key == "Ref" or key.startswith("Fn::") or key == "Condition":
                found.add(key)
        for value in node.values():
            found |= intrinsics_in(value)
    elif isinstance(node, list):
        for value in node:
            found |= intrinsics_in(value)
    return found


@dataclass
class Stack:
    """A transformed template resolved as CloudFormation would create it.

    ``physical`` names the resources whose physical ids a test fixes (the DynamoDB table
    created on moto, say); other resources are named ``<stack>-<logical id>``.
    """

    template: dict[str, Any]
    parameters: Mapping[str, str] = field(default_factory=dict)
    physical: Mapping[str, str] = field(default_factory=dict)
    name: str = "celery-ondemand"

    def __post_init__(self) -> None:
        values = {}
        for key, spec in self.template.get("Parameters", {}).items():
            value = self.parameters.get(key, spec.get("Default", ""))
            if spec.get("Type") == "CommaDelimitedList":
                value = [v.strip() for v in str(value).split(",")]
            values[key] = value
        self.values: dict[str, Any] = values
        self.conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.template["Conditions"][name]))
        return self.conditions[name]

    def exists(self, logical_id: str) -> bool:
        condition = self.template["Resources"][logical_id].get("Condition")
        return condition is None or self.condition(condition)

    def resource(self, logical_id: str) -> dict[str, Any]:
        """A resource's properties, resolved."""
        resolved: dict[str, Any] = self.resolve(
            copy.deepcopy(self.template["Resources"][logical_id]["Properties"]))
        return resolved

    def policies(self, role: str) -> list[dict[str, Any]]:
        """The inline policy documents of an IAM role, resolved."""
        return [p["PolicyDocument"] for p in self.resource(role).get("Policies", [])]

    def managed_policies(self, role: str) -> list[str]:
        return list(self.resource(role).get("ManagedPolicyArns", []))

    def ref(self, name: str) -> Any:
        pseudo = {"AWS::Partition": PARTITION, "AWS::Region": REGION,
                  "AWS::AccountId": ACCOUNT, "AWS::StackName": self.name,
                  "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": NO_VALUE}
        if name in pseudo:
            return pseudo[name]
        if name in self.values:
            return self.values[name]
        if name in self.template["Resources"]:
            physical = self.physical.get(name, f"{self.name}-{name}")
            if self.template["Resources"][name]["Type"] == "AWS::SQS::Queue":
                return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical}"  # its URL
            return physical
        raise KeyError(f"Ref to unknown name {name}")

    def get_att(self, logical_id: str, attribute: str) -> str:
        kind = self.template["Resources"][logical_id]["Type"]
        name = self.physical.get(logical_id, f"{self.name}-{logical_id}")
        arns = {("AWS::DynamoDB::Table", "Arn"):
                f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
                ("AWS::IAM::Role", "Arn"): f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}",
                ("AWS::Lambda::Function", "Arn"):
                f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}",
                ("AWS::SNS::Topic", "TopicArn"):
                f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{name}",
                ("AWS::SQS::Queue", "Arn"): f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{name}"}
        if (kind, attribute) in arns:
            return arns[(kind, attribute)]
        return f"{name}.{attribute}"

    def resolve(self, node: Any) -> Any:
        """``node`` with every intrinsic evaluated; AWS::NoValue entries removed."""
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, argument), = node.items()
            if key == "Ref" or key.startswith("Fn::") or key == "Condition":
                return self._intrinsic(key, argument)
        items = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in items.items() if v is not NO_VALUE}

    def _intrinsic(self, key: str, argument: Any) -> Any:
        if key == "Ref":
            return self.ref(argument)
        if key == "Condition":
            return self.condition(argument)
        if key == "Fn::If":
            name, yes, no = argument
            return self.resolve(yes if self.condition(name) else no)
        if key == "Fn::Equals":
            left, right = (self.resolve(a) for a in argument)
            return left == right
        if key == "Fn::Not":
            return not self.resolve(argument[0])
        if key == "Fn::And":
            return all(self.resolve(a) for a in argument)
        if key == "Fn::Or":
            return any(self.resolve(a) for a in argument)
        if key == "Fn::Join":
            delimiter, values = argument
            if not isinstance(delimiter, str):
                raise ValueError("Fn::Join: CloudFormation takes only a literal delimiter")
            return delimiter.join(str(v) for v in self.resolve(values))
        if key == "Fn::Split":
            if len(argument) != 2 or not isinstance(argument[0], str):
                raise ValueError("Fn::Split takes exactly [literal delimiter, source]")
            return str(self.resolve(argument[1])).split(argument[0])
        if key == "Fn::Select":
            index, values = argument
            return self.resolve(values)[int(self.resolve(index))]
        if key == "Fn::GetAtt":
            logical_id, attribute = argument if isinstance(argument, list) \
                else argument.split(".", 1)
            return self.get_att(logical_id, attribute)
        if key == "Fn::Sub":
            return self._sub(argument)
        raise ValueError(f"intrinsic {key} is not one this resolver knows: {INTRINSICS}")

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        if not isinstance(text, str):
            raise ValueError("Fn::Sub: CloudFormation takes only a literal string to fill")
        values = {k: self.resolve(v) for k, v in variables.items()}
        out, rest = [], text
        while "${" in rest:
            before, _, after = rest.partition("${")
            name, _, rest = after.partition("}")
            out.append(before)
            if name.startswith("!"):
                out.append("${" + name[1:] + "}")
            elif name in values:
                out.append(str(values[name]))
            elif "." in name:
                out.append(self.get_att(*name.split(".", 1)))
            else:
                value = self.ref(name)
                out.append(",".join(value) if isinstance(value, list) else str(value))
        return "".join(out) + rest
