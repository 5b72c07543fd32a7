"""Validate a JSON document against a schema of a pinned OpenAPI 3.0 operation file (tests only).

Covers the part of OpenAPI 3.0's schema language Klaviyo's operation files use: ``$ref`` within the
file, ``type`` (with ``nullable``), ``enum``, ``properties``, ``required`` and ``items``. A key the
schema does not name is reported too, since Klaviyo refuses unknown fields in requests and a client
should not meet undocumented ones in answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPEC_DIR = Path(__file__).parent / "spec"
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def load(operation: str) -> dict[str, Any]:
    """The pinned operation file of ``operation`` (its operationId)."""
    return json.loads((SPEC_DIR / f"{operation}.json").read_text())


def operation_of(spec: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(method, path, operation object) of a one-operation file."""
    [(path, methods)] = spec["paths"].items()
    [(method, op)] = methods.items()
    return method.upper(), path, op


def response_schema(spec: dict[str, Any], status: int) -> dict[str, Any] | None:
    """The schema of the documented success answer ``status``; KeyError when it is not documented."""
    _, _, op = operation_of(spec)
    answer = op["responses"][str(status)]
    content = answer.get("content")
    return content["application/vnd.api+json"]["schema"] if content else None


def request_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """The schema of the operation's request body."""
    _, _, op = operation_of(spec)
    return op["requestBody"]["content"]["application/vnd.api+json"]["schema"]


def problems(spec: dict[str, Any], schema: dict[str, Any], value: Any, at: str = "") -> list[str]:
    """Every place where ``value`` breaks ``schema`` (JSON pointers), empty when it conforms."""
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = {**spec["components"]["schemas"][name], **{k: v for k, v in schema.items() if k != "$ref"}}
    if value is None:
        return [] if schema.get("nullable") else [f"{at or '/'}: null where the spec allows none"]
    kind = schema.get("type")
    if kind is not None:
        allowed = _TYPES[kind]
        if not isinstance(value, allowed) or (kind in ("integer", "number") and isinstance(value, bool)):
            return [f"{at or '/'}: {type(value).__name__} where the spec says {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at or '/'}: {value!r} is not one of {schema['enum']}"]
    found: list[str] = []
    if isinstance(value, dict) and ("properties" in schema or kind == "object"):
        props = schema.get("properties")
        for key in schema.get("required", []):
            if key not in value:
                found.append(f"{at}/{key}: required by the spec, missing")
        if props is not None:
            for key, item in value.items():
                if key not in props:
                    found.append(f"{at}/{key}: not in the spec")
                else:
                    found += problems(spec, props[key], item, f"{at}/{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += problems(spec, schema["items"], item, f"{at}/{i}")
    return found
