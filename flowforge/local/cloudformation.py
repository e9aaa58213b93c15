"""template.yaml read as data, and the few CloudFormation intrinsics needed to evaluate it.

Enough of CloudFormation's semantics (parameters, conditions, Ref, Fn::GetAtt, Fn::Sub,
Fn::If, Fn::FindInMap) to create the stack's tables and queues outside CloudFormation
(:mod:`flowforge.local.stack`) and to check the template in tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
"""The repository's template.yaml (next to the flowforge package)."""


class TemplateError(ValueError):
    """template.yaml cannot be read, or uses something this module does not translate."""


class Unresolvable(TemplateError):
    """An intrinsic refers to something that exists only in a deployed stack."""


# --------------------------------------------------------------------------- loading


class _TemplateLoader(yaml.SafeLoader):
    """A SafeLoader that reads CloudFormation short tags (!Ref, !Sub, ...) as long forms."""


def _construct_intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: str | Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """template.yaml as plain data, short tags turned into ``{"Fn::...": ...}``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from None
    return yaml.load(text, Loader=_TemplateLoader)  # a SafeLoader subclass: no arbitrary objects


def parameter_values(
    template: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Every parameter's value: the override, else the default; checked against AllowedValues."""
    declared = template.get("Parameters", {})
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(f"unknown parameters: {', '.join(unknown)}")
    values: dict[str, str] = {}
    for name, spec in declared.items():
        if name in overrides:
            value = str(overrides[name])
        elif "Default" in spec:
            value = str(spec["Default"])
        else:
            raise TemplateError(f"parameter {name} has no default: give it a value")
        allowed = [str(v) for v in spec.get("AllowedValues", [])]
        if allowed and value not in allowed:
            raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
        values[name] = value
    return values


# ------------------------------------------------------------------------ intrinsics

NO_VALUE = object()
"""What ``!Ref AWS::NoValue`` resolves to; :meth:`Intrinsics.resolve` drops it."""


class Intrinsics:
    """Resolves the intrinsic functions of one template, given parameters and known resources.

    ``refs`` maps a logical id to what ``Ref`` returns, ``attrs`` maps (logical id,
    attribute) to what ``Fn::GetAtt`` returns; both may be filled in as resources appear.
    """

    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, str],
        pseudo: Mapping[str, str] | None = None,
    ) -> None:
        self.template = template
        self.values: dict[str, Any] = {**(pseudo or {}), **parameters}
        self.refs: dict[str, Any] = {}
        self.attrs: dict[tuple[str, str], Any] = {}
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        """The value of the template's condition ``name``."""
        if name not in self._conditions:
            try:
                expression = self.template["Conditions"][name]
            except KeyError:
                raise TemplateError(f"unknown condition {name!r}") from None
            self._conditions[name] = self._evaluate(expression)
        return self._conditions[name]

    def _evaluate(self, expression: Any) -> bool:
        ((fn, args),) = expression.items()
        if fn == "Fn::Equals":
            left, right = (self.resolve(a) for a in args)
            return str(left) == str(right)
        if fn == "Fn::Not":
            return not self._evaluate(args[0])
        if fn == "Fn::And":
            return all(self._evaluate(a) for a in args)
        if fn == "Fn::Or":
            return any(self._evaluate(a) for a in args)
        if fn == "Condition":
            return self.condition(args)
        raise TemplateError(f"unsupported condition function {fn}")

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic replaced; raises :class:`Unresolvable` if it can't."""
        if isinstance(value, list):
            items = (self.resolve(v) for v in value)
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            handler = self._HANDLERS.get(key)
            if handler is not None:
                return handler(self, arg)
        items = ((k, self.resolve(v)) for k, v in value.items())
        return {k: v for k, v in items if v is not NO_VALUE}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        for known in (self.values, self.refs):
            if name in known:
                return known[name]
        raise Unresolvable(f"cannot resolve Ref {name} outside a deployed stack")

    def _get_att(self, arg: Any) -> Any:
        logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
        try:
            return self.attrs[(logical_id, attribute)]
        except KeyError:
            raise Unresolvable(f"cannot resolve Fn::GetAtt {logical_id}.{attribute}") from None

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return str(self._get_att(name))
            return str(self._ref(name))

        return re.sub(r"\$\{([^}]+)\}", substitute, text)

    def _if(self, arg: list) -> Any:
        name, if_true, if_false = arg
        return self.resolve(if_true if self.condition(name) else if_false)

    def _find_in_map(self, arg: list) -> Any:
        mapping, top, second = (str(self.resolve(a)) for a in arg[:3])
        try:
            return self.template["Mappings"][mapping][top][second]
        except KeyError:
            raise TemplateError(f"Fn::FindInMap: no {mapping}.{top}.{second}") from None

    _HANDLERS: Mapping[str, Callable[[Intrinsics, Any], Any]] = {
        "Ref": _ref,
        "Fn::GetAtt": _get_att,
        "Fn::Sub": _sub,
        "Fn::If": _if,
        "Fn::FindInMap": _find_in_map,
    }


def references(value: Any) -> set[str]:
    """The logical ids (and parameters) that ``value``'s Ref / Fn::GetAtt / Fn::Sub name."""
    if isinstance(value, list):
        return set().union(*(references(v) for v in value))
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for key, arg in value.items():
        if key == "Ref" and isinstance(arg, str):
            found.add(arg)
        elif key == "Fn::GetAtt":
            found.add(arg[0] if isinstance(arg, list) else arg.split(".", 1)[0])
        elif key == "Fn::Sub":
            text = arg if isinstance(arg, str) else arg[0]
            found |= {m.split(".", 1)[0] for m in re.findall(r"\$\{([^}!][^}]*)\}", text)}
            found |= references(arg[1:] if isinstance(arg, list) else [])
        else:
            found |= references(arg)
    return found
