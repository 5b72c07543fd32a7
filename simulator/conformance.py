"""Check the simulator's own answers against Klaviyo's published spec while tests run.

The operations table (method, path, success status -> response schema) is read from the klaviyo-api
SDK (25.0.0, API revision 2026-10-15), which Klaviyo generates from the same OpenAPI description as
klaviyo/openapi's openapi/stable/apis/*.json; its pydantic models are those components' schemas. A
check found failing is recorded (never raised), so a test can assert there were none; the first few
answers of each operation are kept as samples for the stricter JSON-schema checks of the pinned
operation files in tests/klaviyo/spec/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import openapi_client
from openapi_client import models as sdk
from pydantic import ValidationError

SAMPLES_PER_OPERATION = 3

_OPERATION = re.compile(r"\n    def (?P<name>[a-z0-9_]+)\(\s*self,")
_TYPES = re.compile(r"_response_types_map: Dict\[str, Optional\[str\]\] = \{(?P<body>[^}]*)\}")
_ENTRY = re.compile(r"'(?P<status>\d{3})': (?:\"(?P<model>\w+)\"|None)")
_SERIALIZE = re.compile(r"method='(?P<method>[A-Z]+)',\s*resource_path='(?P<path>[^']+)'")


@dataclass(frozen=True)
class Operation:
    """One operation: its id, method, path pattern, and success status -> response model name."""

    name: str
    method: str
    path: str
    pattern: re.Pattern[str]
    responses: dict[int, str | None]


@lru_cache(maxsize=1)
def operations() -> tuple[Operation, ...]:
    """Every server-API operation of the SDK (``/api/...``), parsed from its generated sources."""
    found: list[Operation] = []
    api_dir = Path(openapi_client.__file__).parent / "api"
    for source in sorted(api_dir.glob("*_api.py")):
        text = source.read_text()
        starts = [
            m
            for m in _OPERATION.finditer(text)
            if not m.group("name").endswith(("_with_http_info", "_without_preload_content"))
        ]
        for match in starts:
            name = match.group("name")
            if name.startswith("_"):
                continue
            body_at = text.find(f"def _{name}_serialize(")
            types = _TYPES.search(text, match.end())
            serial = _SERIALIZE.search(text, body_at) if body_at >= 0 else None
            if types is None or serial is None or not serial.group("path").startswith("/api/"):
                continue
            responses = {
                int(e.group("status")): e.group("model") for e in _ENTRY.finditer(types.group("body"))
            }
            path = serial.group("path")
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "/?$"
            found.append(Operation(name, serial.group("method"), path, re.compile(regex), responses))
    # Literal paths before templated ones, so /api/lists/{id} never shadows a longer literal path.
    return tuple(sorted(found, key=lambda op: (op.path.count("{"), -len(op.path))))


def operation_for(method: str, path: str) -> Operation | None:
    """The operation a request (method and path) belongs to."""
    for op in operations():
        if op.method == method and op.pattern.match(path):
            return op
    return None


def _null_links(body: Any) -> list[str]:
    """Links typed as URI strings in the spec (CollectionLinks, ObjectLinks) but sent as null."""
    links = body.get("links") if isinstance(body, dict) else None
    if not isinstance(links, dict):
        return []
    return [
        f"links.{key} is null (the spec types it as a URI string)" for key, v in links.items() if v is None
    ]


def check_answer(method: str, path: str, status: int, body: Any) -> list[str]:
    """What is wrong with one answer by the spec: an undocumented success status, a body that does
    not validate against the operation's response schema, or a body where none is documented."""
    if status >= 300:
        return []
    op = operation_for(method, path)
    if op is None:
        return [f"{method} {path}: no such operation in Klaviyo's API"]
    if status not in op.responses:
        documented = ", ".join(str(s) for s in sorted(op.responses))
        return [f"{op.name}: answered {status}, the spec documents {documented}"]
    model_name = op.responses[status]
    if model_name is None:
        return [] if body is None else [f"{op.name}: {status} with a body, the spec documents none"]
    problems = _null_links(body)
    model = getattr(sdk, model_name)
    try:
        model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[:3]
        problems += [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in first]
    return [f"{op.name} ({model_name}): {p}" for p in problems]


class Recorder:
    """Problems found in the simulator's answers, and a few sample answers per operation."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.samples: dict[str, list[dict[str, Any]]] = {}

    def record(self, method: str, path: str, status: int, body: Any) -> None:
        for problem in check_answer(method, path, status, body):
            if problem not in self.problems and len(self.problems) < 200:
                self.problems.append(problem)
        op = operation_for(method, path) if status < 300 else None
        if op is not None:
            kept = self.samples.setdefault(op.name, [])
            if len(kept) < SAMPLES_PER_OPERATION:
                kept.append({"status": status, "body": body, "path": path})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the problems found and the sample answers kept."""
        return {"problems": list(self.problems), "samples": self.samples}

    def clear(self) -> None:
        """Forget what was recorded."""
        self.problems.clear()
        self.samples.clear()
