"""compose.yaml read as compose reads it: merge keys resolved, `${VAR}` interpolated, healthchecks.

Shared by the static checks (tests/cli/test_compose.py) and `make compose-check`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
APP_IMAGE = "klaviyo-sync-console"

_VAR = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)")


def load() -> dict[str, Any]:
    """compose.yaml as a dict (YAML merge keys such as `<<: *app` resolved)."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def app_services(compose: Mapping[str, Any]) -> list[str]:
    """The services that run the console's own image (built from the Dockerfile)."""
    return [
        name
        for name, svc in compose["services"].items()
        if "build" in svc or str(svc.get("image", "")).startswith(APP_IMAGE)
    ]


def interpolate(value: str, env: Mapping[str, str] = os.environ) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?message}` substitution."""

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = env.get(name)
        empty = current is None or (current == "" and op is not None and op.startswith(":"))
        if op and op.endswith("?") and empty:
            raise ValueError(f"{name}: {arg}")
        if op and op.endswith("-") and empty:
            return arg
        return current or ""

    return _VAR.sub(sub, value)


def environment(service: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The service's environment as its containers see it."""
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) for item in declared)
    return {key: interpolate(str(value), env) for key, value in declared.items()}


def seconds(duration: str | int | float) -> float:
    """A compose duration ("1m30s", "5s", "500ms") in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(m["n"]) * factor[m["unit"]] for m in _DURATION.finditer(duration))


def healthcheck_command(service: Mapping[str, Any]) -> list[str] | None:
    """The healthcheck's test as an argv (CMD as is, CMD-SHELL through sh -c), or None."""
    test = (service.get("healthcheck") or {}).get("test")
    if not test:
        return None
    if isinstance(test, str):
        return ["sh", "-c", test]
    kind, *args = [str(a) for a in test]
    if kind == "CMD-SHELL":
        return ["sh", "-c", " ".join(args)]
    if kind == "CMD":
        return args
    return None  # NONE disables the check


def volume_mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume the service mounts (short or long syntax)."""
    mounts = []
    for item in service.get("volumes") or []:
        if isinstance(item, str):
            source, target = item.split(":")[:2]
        else:
            source, target = item.get("source", ""), item["target"]
        mounts.append((source, target))
    return mounts


def problems(compose: Mapping[str, Any]) -> list[str]:
    """What is wrong with a compose file: the Compose Specification's rules (the compose-spec
    parser), plus the references it leaves alone (named volumes declared, dependencies defined)."""
    from compose_spec import PyCompose

    try:
        # The parser does not resolve YAML merge keys; the loaded dict has them resolved.
        PyCompose.from_yaml(yaml.safe_dump(dict(compose), sort_keys=False)).to_spec()
    except ValueError as exc:
        return [str(exc)]
    found = []
    services = compose.get("services") or {}
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for source, _ in volume_mounts(svc):
            if source and not source.startswith((".", "/", "~")) and source not in declared:
                found.append(f"services.{name}.volumes: {source} is not declared under volumes")
        for dependency in svc.get("depends_on") or []:
            if dependency not in services:
                found.append(f"services.{name}.depends_on: no service {dependency}")
    return found


def unknown_variables(compose: Mapping[str, Any], known: set[str]) -> list[str]:
    """Variables an app service sets that the console's settings do not read (a typo, or a setting
    that was renamed): such a variable is silently ignored, and its default used instead."""
    found = []
    for name in app_services(compose):
        declared = compose["services"][name].get("environment") or {}
        keys = [item.split("=", 1)[0] for item in declared] if isinstance(declared, list) else list(declared)
        found += [f"services.{name}.environment: {key}" for key in keys if key not in known]
    return found
