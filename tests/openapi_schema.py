"""Validate /v1 responses against OpenAI's published OpenAPI document (../shared/openai)."""

from __future__ import annotations

import copy
import json
import os
from functools import lru_cache
from pathlib import Path

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# The spec sits beside the checkout (../shared/openai); TOKENABACUS_OPENAPI_SPEC points elsewhere.
SPEC = Path(os.environ.get("TOKENABACUS_OPENAPI_SPEC")
            or Path(__file__).resolve().parents[2] / "shared" / "openai" / "openapi.json")


def _nullable(node):
    """The spec mixes OpenAPI 3.0's `nullable: true` into 3.1 schemas; make it JSON Schema."""
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            t = node.get("type")
            if isinstance(t, str):
                node["type"] = [t, "null"]
            elif isinstance(t, list) and "null" not in t:
                node["type"] = t + ["null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = node["enum"] + [None]
            if "type" not in node:
                node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@lru_cache(maxsize=1)
def _registry() -> tuple[Registry, dict]:
    if not SPEC.is_file():
        raise FileNotFoundError(f"OpenAI's OpenAPI document is not at {SPEC}: clone the project beside ../shared "
                                "or set TOKENABACUS_OPENAPI_SPEC")
    spec = _nullable(json.loads(SPEC.read_text()))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    return Registry().with_resource("openapi.json", resource), spec


def validate(obj: dict, schema_name: str) -> None:
    registry, spec = _registry()
    if schema_name not in spec["components"]["schemas"]:
        raise KeyError(schema_name)
    schema = {"$ref": f"openapi.json#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema, registry=registry).validate(copy.deepcopy(obj))
