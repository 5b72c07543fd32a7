"""Route a catalog sync's entries to the create, update and delete jobs, and say what landed.

Used by the run loop (workers/send_run.py) for catalog runs in sync mode: each op has its own
batcher of 100, and every closed batch remembers its decisions until its job settles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from klaviyo import endpoints as ep
from klaviyo.batching import Batch, Batcher, RowRejection
from services.catalog import Settled
from sync.targets.catalog import ENTRY_TYPES, CatalogSync, Decision, update_form
from sync.targets.common import catalog_id

ACTIONS = {"create": "created", "update": "updated", "delete": "deleted"}


@dataclass
class _Open:
    """The batch an op is filling, and the ordinals it covers."""

    batcher: Batcher
    first: int = -1
    last: int = -1
    decisions: dict[int, Decision] = field(default_factory=dict)


@dataclass
class Closed:
    """A full batch for one op's endpoint, with its ordinal range."""

    batch: Batch
    endpoint: ep.Endpoint
    first: int
    last: int


class CatalogRouter:
    """Per-entry routing for one catalog sync run."""

    def __init__(
        self, plan: CatalogSync, scope: str, endpoints: dict[str, ep.Endpoint], *, start_seq: int, keep: bool
    ) -> None:
        self.plan = plan
        self.scope = scope
        self.entry_type = ENTRY_TYPES[plan.item_type]
        self.endpoints = endpoints
        self.ops = {op: _Open(Batcher(endpoint)) for op, endpoint in endpoints.items()}
        self.next_seq = start_seq
        self.ordinal = 0
        self.deletes = 0
        self.keep = keep  # dry runs send nothing, so nothing waits to settle
        # Decisions of batches sent and not yet settled, by batch seq.
        self.sent: dict[int, tuple[str, dict[int, Decision]]] = {}

    def add(self, row_ref: int, item: dict[str, Any]) -> tuple[bool, Closed | None]:
        """Decide one entry; (whether it is sent, the batch it closed). RuleError for a repeated id."""
        decision = self.plan.decide(item)
        if decision is None:
            return False, None
        return True, self._add(row_ref, decision)

    def add_deletes(self) -> list[Closed]:
        """Queue a delete for every entry gone from the source; deletes carry negative row refs."""
        closed = []
        for decision in self.plan.missing():
            self.deletes += 1
            batch = self._add(-self.deletes, decision)
            if batch is not None:
                closed.append(batch)
        return closed

    def flush(self) -> list[Closed]:
        """The partly filled batch of each op."""
        closed = []
        for op, current in self.ops.items():
            batch = current.batcher.flush()
            if batch is not None:  # possibly only rows refused while batching
                closed.append(self._close(op, batch, current.last))
        return closed

    def _add(self, row_ref: int, decision: Decision) -> Closed | None:
        current = self.ops[decision.op]
        batch = current.batcher.add(row_ref, decision.body)
        closed = self._close(decision.op, batch, current.last) if batch is not None else None
        if current.first < 0:
            current.first = self.ordinal
        current.last = self.ordinal
        if self.keep:
            current.decisions[row_ref] = decision
        self.ordinal += 1
        return closed

    def _close(self, op: str, batch: Batch, last: int) -> Closed:
        current = self.ops[op]
        # One seq per run across every op, so each batch is its own row in the ledger.
        batch.seq = self.next_seq
        self.next_seq += 1
        decisions = {ref: current.decisions.pop(ref) for ref in batch.row_refs if ref in current.decisions}
        if self.keep:
            self.sent[batch.seq] = (op, decisions)
        closed = Closed(batch, self.endpoints[op], current.first, max(last, current.first))
        current.first = -1
        return closed

    def duplicates(self, seq: int, rejected: list[RowRejection]) -> list[tuple[int, dict[str, Any]]]:
        """Creates Klaviyo refused because the entry exists (made outside this state): their updates."""
        op, decisions = self.sent.get(seq, ("", {}))
        if op != "create":
            return []
        return [
            (r.row_ref, update_form(decisions[r.row_ref].body))
            for r in rejected
            if "duplicate" in r.code and r.row_ref in decisions
        ]

    def settled(self, seq: int, accepted: list[int], adopted: set[int]) -> list[Settled]:
        """What to remember of a settled batch's accepted entries (``adopted``: created as updates)."""
        op, decisions = self.sent.pop(seq, ("", {}))
        entries = []
        for ref in accepted:
            decision = decisions.get(ref)
            if decision is None:
                continue
            action = "updated" if ref in adopted else ACTIONS[op]
            klaviyo_id = str(decision.body.get("id") or "") or catalog_id(decision.external_id)
            entries.append(
                Settled(decision.external_id, decision.content_hash, klaviyo_id, action, decision.parent)
            )
        return entries

    def external_id(self, seq: int, row_ref: int) -> str | None:
        """The external id of an entry of a batch not yet settled."""
        decision = self.sent.get(seq, ("", {}))[1].get(row_ref)
        return decision.external_id if decision else None
