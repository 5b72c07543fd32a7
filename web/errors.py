"""Error pages in the site's layout; never a stack trace in the browser."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from web.templating import render

log = structlog.get_logger(__name__)


def _wants_html(request: Request[Any, Any, Any]) -> bool:
    # Browsers and htmx get pages; only a client that asks for JSON alone gets JSON.
    accept = request.headers.get("accept", "")
    return "text/html" in accept or "application/json" not in accept


def _page(request: Request[Any, Any, Any], status: int, title: str, message: str) -> Response[Any] | Template:
    if not _wants_html(request):
        return Response({"status": status, "detail": message}, status_code=status, media_type=MediaType.JSON)
    name = "errors/_message.html" if request.headers.get("hx-request") == "true" else "errors/page.html"
    response = render(request, name, status_code=status, status=status, title=title, message=message)
    if request.headers.get("hx-request") == "true":
        # htmx does not swap error responses by default; retarget so the message is shown.
        response.headers.update({"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
    return response


def not_authorized(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    if request.headers.get("hx-request") == "true":
        return Response(content="", status_code=401, headers={"HX-Redirect": "/login"})
    if not _wants_html(request):
        return Response({"status": 401, "detail": exc.detail}, status_code=401)
    return Redirect(f"/login?next={request.url.path}")


def permission_denied(
    request: Request[Any, Any, Any], exc: PermissionDeniedException
) -> Response[Any] | Template:
    if "CSRF" in (exc.detail or ""):
        message = (
            "This form expired or was sent from another site, so it was not accepted. "
            "Reload the page and try again."
        )
        return _page(request, 403, "Form expired", message)
    return _page(request, 403, "Not allowed", exc.detail or "You do not have permission to do that.")


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any] | Template:
    titles = {404: "Page not found", 405: "Not allowed", 413: "Too large", 400: "Bad request"}
    status = exc.status_code
    message = exc.detail if status != 404 else "There is nothing at this address."
    return _page(request, status, titles.get(status, "Error"), message)


def server_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any] | Template:
    log.exception("unhandled error", path=request.url.path, error=type(exc).__name__)
    return _page(
        request,
        HTTP_500_INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The console hit an unexpected error; nothing was half-saved. The details are in the server log.",
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    NotAuthorizedException: not_authorized,
    PermissionDeniedException: permission_denied,
    HTTPException: http_error,
    Exception: server_error,
}
