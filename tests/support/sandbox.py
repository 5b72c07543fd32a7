"""What the simulator holds (read over /__sim), and source rows whose entries tests look for there."""

from __future__ import annotations

from typing import Any

import httpx


def sim_list(simulator_url: str, list_id: str) -> dict[str, Any]:
    (found,) = [k for k in httpx.get(f"{simulator_url}/__sim/lists").json()["data"] if k["id"] == list_id]
    return found


def sim_catalog(simulator_url: str, tag: str) -> dict[str, list[dict[str, Any]]]:
    everything = httpx.get(f"{simulator_url}/__sim/catalog").json()
    return {kind: [e for e in entries if tag in e["id"]] for kind, entries in everything.items()}


def catalog_rows(tag: str, n: int) -> list[dict[str, str]]:
    return [
        {"sku": f"{tag}-{k}", "name": f"Mug {k}", "about": "Stoneware", "link": f"https://shop.test/{k}",
         "price": f"{10 + k}.50"}
        for k in range(n)
    ]  # fmt: skip
