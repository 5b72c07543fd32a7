"""web.templating.redirect: the one answer a form post gives to send the browser on."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.testing import create_test_client

from web.templating import redirect


@post("/go")
async def go(request: Request[Any, Any, Any]) -> Response[Any]:
    return redirect(request, "/runs/7")


def test_htmx_gets_hx_redirect_and_a_plain_form_a_303() -> None:
    with create_test_client([go]) as client:
        htmx = client.post("/go", headers={"HX-Request": "true"}, follow_redirects=False)
        plain = client.post("/go", follow_redirects=False)
    # htmx swaps 2xx answers only: it must get a success with the header, not a 303 it would follow.
    assert htmx.status_code < 300 and htmx.headers["hx-redirect"] == "/runs/7"
    assert "location" not in htmx.headers and htmx.text == ""
    assert plain.status_code == 303 and plain.headers["location"] == "/runs/7"
    assert "hx-redirect" not in plain.headers
