"""What each mapping target kind is sent with: the endpoint, job options, and whether jobs settle later.

The run loop (workers/send_run.py) is the same for every target; a new target adds one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from klaviyo import endpoints as ep
from models import SyncRun
from sync.mapping import Mapping as MappingSpec

Options = Callable[[SyncRun, MappingSpec], dict[str, Any] | None]


def _none(_run: SyncRun, _spec: MappingSpec) -> None:
    return None


@dataclass(frozen=True)
class SendTarget:
    """How the items of one target kind travel to Klaviyo."""

    endpoint: ep.Endpoint
    # Envelope parts computed per run (e.g. the list a bulk profile import adds everyone to).
    relationships: Options = _none
    attributes: Options = _none
    # Bulk jobs that report per-item errors later (profile import, catalog) must be polled.
    settles: bool = False
    path_params: Callable[[SyncRun, MappingSpec], dict[str, str] | None] = field(default=_none)


TARGETS: dict[str, SendTarget] = {
    "event": SendTarget(ep.BULK_EVENTS),
    "order": SendTarget(ep.BULK_EVENTS),
}


def target_for(kind: str) -> SendTarget | None:
    """The send target of a mapping kind, or None when the console cannot send it yet."""
    return TARGETS.get(kind)
