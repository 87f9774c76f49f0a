"""Validate /v1 responses against OpenAI's published OpenAPI document (../shared/openai)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012


def _find_spec() -> Path:
    """TOKENABACUS_OPENAPI_SPEC, else ../shared/openai beside this checkout, else beside the local
    checkout it was cloned from (CI clones into a temporary folder)."""
    if os.environ.get("TOKENABACUS_OPENAPI_SPEC"):
        return Path(os.environ["TOKENABACUS_OPENAPI_SPEC"])
    root = Path(__file__).resolve().parents[1]
    candidates = [root.parent / "shared" / "openai" / "openapi.json"]
    origin = subprocess.run(
        ["git", "-C", str(root), "config", "--get", "remote.origin.url"], capture_output=True, text=True
    ).stdout.strip()
    if origin and "://" not in origin and ":" not in origin.split("/")[0]:  # a local path, not a URL
        candidates.append(Path(origin).resolve().parent / "shared" / "openai" / "openapi.json")
    return next((c for c in candidates if c.is_file()), candidates[0])


SPEC = _find_spec()


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
        raise FileNotFoundError(
            f"OpenAI's OpenAPI document is not at {SPEC}: clone the project beside ../shared "
            "or set TOKENABACUS_OPENAPI_SPEC"
        )
    spec = _nullable(json.loads(SPEC.read_text()))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    return Registry().with_resource("openapi.json", resource), spec


def validate(obj: dict, schema_name: str) -> None:
    registry, spec = _registry()
    if schema_name not in spec["components"]["schemas"]:
        raise KeyError(schema_name)
    schema = {"$ref": f"openapi.json#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema, registry=registry).validate(copy.deepcopy(obj))
