"""The studio edits row filters and value maps, and its preview shows what they do."""

from __future__ import annotations

import re

from litestar.datastructures import FormMultiDict

from models import Role
from services.mapping_editor import filter_rows, rows_from_spec, spec_from_form
from sync.mapping import BooleanCast, Mapping, MapValues, Target, TargetKind, column
from sync.row_filters import RowFilter
from tests.support.env import unique
from tests.support.web import post_form

CUSTOMERS = "Email,Accepts Marketing,Country\nada@shop.test,yes,Germany\nalan@shop.test,no,France\n"


def test_filters_and_value_maps_round_trip_through_the_form():
    spec = Mapping(
        name="consent",
        target=Target(kind=TargetKind.PROFILE),
        fields=[
            column("Email", "email"),
            column(
                "Country", "location.country", MapValues(values={"Atlantis": "ZZ"}, preset="country_code")
            ),
            column("Tier", "properties.tier", MapValues(values={"gold": 3}, default=1), BooleanCast()),
        ],
        filters=[
            RowFilter(column="Accepts Marketing", op="truthy"),
            RowFilter(column="Tier", op="one_of", values=["gold", "silver"]),
        ],
    )
    items: list[tuple[str, str]] = [("kind", "profile"), ("name", "consent")]
    for row in rows_from_spec(spec):
        items.append(("rule", row.key))
        for name in ("source_kind", "source", "target", "op", "vmap", "vmap_preset", "vmap_default", "more"):
            items.append((f"f-{row.key}-{name}", str(getattr(row, name))))
    for f in filter_rows(spec):
        items += [("flt-column", f["column"]), ("flt-op", f["op"]), ("flt-value", f["value"])]
    again = spec_from_form(FormMultiDict(items))
    assert again.filters == spec.filters
    assert again.fields[1].transforms == spec.fields[1].transforms
    assert again.fields[2].transforms == spec.fields[2].transforms


async def test_studio_preview_shows_the_filter_skip(client, as_role):
    await as_role(Role.OPERATOR)
    await client.get("/mappings/")
    created = await post_form(
        client,
        "/mappings/",
        {"what": "profile", "source": "auto", "name": unique("f-"), "sample_text": CUSTOMERS},
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    mapping_id = int(created.headers["location"].rsplit("/", 1)[-1])
    page = (await client.get(f"/mappings/{mapping_id}")).text
    assert 'data-testid="filters"' in page and 'name="flt-column"' in page
    assert "custom_metadata" not in page.split('data-testid="target-hint"')[1][:200]
    form = [
        ("kind", "profile"),
        ("name", "consent"),
        ("sample_text", CUSTOMERS),
        ("preview_row", "1"),
        ("rule", "a"),
        ("f-a-source_kind", "column"),
        ("f-a-source", "Email"),
        ("f-a-target", "email"),
        ("rule", "b"),
        ("f-b-source_kind", "column"),
        ("f-b-source", "Country"),
        ("f-b-target", "location.country"),
        ("f-b-vmap_preset", "country_code"),
        ("flt-column", "Accepts Marketing"),
        ("flt-op", "truthy"),
        ("flt-value", ""),
    ]
    data: dict[str, list[str]] = {}
    for key, value in form:
        data.setdefault(key, []).append(value)
    preview = await client.post(
        f"/mappings/{mapping_id}/preview", data=data, headers={"x-csrftoken": client.cookies["kc_csrf"]}
    )
    assert preview.status_code == 200, preview.text
    text = preview.text
    assert 'data-testid="row-skipped"' in text and "Skipped by filter: Accepts Marketing is truthy" in text
    counts = re.search(r'<div class="kc-counts".*?</div>\s*</div>', text, re.S)
    assert counts is not None and "<b>1</b><span>skipped</span>" in counts.group(0)
    first = await client.post(
        f"/mappings/{mapping_id}/preview",
        data={**data, "preview_row": ["0"]},
        headers={"x-csrftoken": client.cookies["kc_csrf"]},
    )
    assert "&#34;country&#34;: &#34;DE&#34;" in first.text or '"country": "DE"' in first.text
