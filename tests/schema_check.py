"""Validation of messages against ``streamad/service/anomalies.schema.json``.

A small validator of the JSON Schema keywords that file uses (the suite does not depend on
the ``jsonschema`` package). A keyword it does not know fails loudly, so the schema cannot
grow a rule that the tests would silently skip.
"""

from __future__ import annotations

import json
from importlib import resources

_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs"}
_TYPES = {"object": dict, "array": list, "string": str, "null": type(None)}


def anomalies_schema() -> dict:
    """The schema as shipped in the package."""
    return json.loads(resources.files("streamad.service").joinpath("anomalies.schema.json").read_text())


def _is(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "boolean":
        return isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def errors(value, schema: dict, root: dict | None = None, path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (empty: it is valid)."""
    root = root if root is not None else schema
    out: list[str] = []
    for kw, rule in schema.items():
        if kw in _ANNOTATIONS:
            continue
        if kw == "$ref":
            assert rule.startswith("#/"), f"only local references are supported, got {rule}"
            target = root
            for part in rule[2:].split("/"):
                target = target[part]
            out += errors(value, target, root, path)
        elif kw == "oneOf":
            ok = [i for i, sub in enumerate(rule) if not errors(value, sub, root, path)]
            if len(ok) != 1:
                out.append(f"{path}: matches {len(ok)} of the oneOf schemas, not exactly one")
        elif kw == "type":
            names = rule if isinstance(rule, list) else [rule]
            if not any(_is(value, n) for n in names):
                out.append(f"{path}: {value!r} is not of type {rule}")
        elif kw == "const":
            if value != rule or type(value) is not type(rule):
                out.append(f"{path}: {value!r} is not {rule!r}")
        elif kw == "required":
            if isinstance(value, dict):
                out += [f"{path}: missing {name!r}" for name in rule if name not in value]
        elif kw == "properties":
            if isinstance(value, dict):
                for name, sub in rule.items():
                    if name in value:
                        out += errors(value[name], sub, root, f"{path}.{name}")
        elif kw == "additionalProperties":
            assert rule is False, "only additionalProperties: false is supported"
            if isinstance(value, dict):
                out += [f"{path}: unexpected {name!r}" for name in value if name not in schema.get("properties", {})]
        elif kw == "items":
            if isinstance(value, list):
                skip = len(schema.get("prefixItems", []))
                for i, item in enumerate(value[skip:], start=skip):
                    out += errors(item, rule, root, f"{path}[{i}]")
        elif kw == "prefixItems":
            if isinstance(value, list):
                for i, (item, sub) in enumerate(zip(value, rule, strict=False)):
                    out += errors(item, sub, root, f"{path}[{i}]")
        elif kw == "minItems":
            if isinstance(value, list) and len(value) < rule:
                out.append(f"{path}: fewer than {rule} items")
        elif kw == "maxItems":
            if isinstance(value, list) and len(value) > rule:
                out.append(f"{path}: more than {rule} items")
        elif kw == "minimum":
            if _is(value, "number") and value < rule:
                out.append(f"{path}: {value!r} is below {rule}")
        else:
            raise AssertionError(f"schema keyword {kw!r} is not supported by tests/schema_check.py")
    return out


def assert_valid(message: dict) -> None:
    """``message`` is a valid message of the anomalies topic (as JSON, the way it is sent)."""
    value = json.loads(json.dumps(message, allow_nan=False))
    problems = errors(value, anomalies_schema())
    assert not problems, f"{problems} in {message}"
