"""Validate Client API request bodies against the schema excerpt of Klaviyo's OpenAPI spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SPEC = Path(__file__).resolve().parents[1] / "simulator" / "data" / "client_api_openapi.json"


def _json_schema(node: Any) -> Any:
    # OpenAPI 3.0's `nullable: true` is JSON Schema's "or null".
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def validator(endpoint: str) -> Draft202012Validator:
    """A validator for the request body of ``/client/events`` or ``/client/profiles``."""
    spec = json.loads(SPEC.read_text())
    name = spec["paths"][endpoint]["schema"]
    root = {"$ref": f"#/components/schemas/{name}", "components": _json_schema(spec["components"])}
    return Draft202012Validator(root)


def errors(endpoint: str, body: Any) -> list[str]:
    """Every way the body breaks the published schema (empty when it conforms)."""
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(endpoint).iter_errors(body)
    ]
