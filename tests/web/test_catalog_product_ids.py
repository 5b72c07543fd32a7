"""The studio warns when an Ordered Product / Placed Order mapping's ProductID cannot match the
synced catalog: sent as a number, or values no synced catalog item has."""

from __future__ import annotations

import uuid

from models import Role
from services import catalog
from services.accounts import get_account
from sync.mapping import Mapping as Spec
from sync.mapping import NumberCast, Target, TargetKind, column
from tests.support.runs import make_mapping
from tests.support.web import mapping_form_items, repeated_fields

SAMPLE = "email,sku,price\nana@shop.test,{tag}-1,5\nben@shop.test,{tag}-2,7\n"


def ordered_product(tag: str, *, as_number: bool = False) -> Spec:
    product_id = column("sku", "properties.ProductID", *([NumberCast()] if as_number else []))
    return Spec(
        name=f"Ordered Product {tag}",
        target=Target(kind=TargetKind.EVENT, metric="Ordered Product"),
        fields=[column("email", "email"), product_id, column("price", "value", NumberCast())],
    )


async def _issues(client, spec_id: int, spec: Spec, tag: str) -> str:
    items = [*mapping_form_items(spec), ("sample_text", SAMPLE.format(tag=tag))]
    page = await client.post(
        f"/mappings/{spec_id}/preview",
        data=repeated_fields(items),
        headers={"x-csrftoken": client.cookies["kc_csrf"]},
    )
    assert page.status_code == 200
    return page.text


async def test_product_id_checked_against_the_synced_catalog(client, as_role, sessionmaker):
    tag = uuid.uuid4().hex[:6]
    await as_role(Role.OPERATOR)
    async with sessionmaker() as db:
        scope = catalog.account_scope(await get_account(db))
        await db.commit()
    async with sessionmaker() as db:
        # One of the two products of the sample is in the synced catalog.
        await catalog.record_settled(
            db,
            scope,
            "item",
            None,
            [catalog.Settled(f"{tag}-1", "h", f"$custom:::$default:::{tag}-1", "created")],
        )
        await db.commit()

    spec = ordered_product(tag)
    mapping = await make_mapping(sessionmaker, spec)
    text = await _issues(client, mapping.id, spec, tag)
    assert "product_id_not_in_catalog" in text and "1 of 2 ProductID values" in text
    assert f"{tag}-2" in text and "product_id_type" not in text

    numeric = ordered_product(tag, as_number=True)
    text = await _issues(client, mapping.id, numeric, tag)
    assert "product_id_type" in text and "catalog external ids are strings" in text

    # Every product synced, sent as text: no warning.
    async with sessionmaker() as db:
        await catalog.record_settled(
            db,
            scope,
            "item",
            None,
            [catalog.Settled(f"{tag}-2", "h", f"$custom:::$default:::{tag}-2", "created")],
        )
        await db.commit()
    text = await _issues(client, mapping.id, spec, tag)
    assert "product_id_" not in text
