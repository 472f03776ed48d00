"""The brand endpoints: JSON for programs, the brand page for browsers (``Accept: text/html``).

``GET /brands`` and ``GET /brands/{brand}`` answer from the :class:`api.brand_book.BrandBook` the
follower keeps; while the follower cannot vouch for it (Kafka not configured, unreachable, the topic
missing, access refused, still reading the topic up to its end) they answer 503 with what is wrong.
``GET /`` and both brand routes serve the page to a browser; the page polls the JSON endpoints. Its
assets come from this API alone, and its Content-Security-Policy forbids loading anything else.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.requests import Request

from api.bodies import Problem
from api.context import ApiContext, api_context
from api.json_io import json_response
from schemas.brands import BrandDetail, BrandList, BrandsUnavailable

STATIC = Path(__file__).resolve().parent / "static"
#: The page's own files, by URL name: (file, media type).
ASSETS = {"brand-page.js": "text/javascript", "brand-page.css": "text/css"}
#: The page and its assets may load nothing from anywhere else (no CDN, no font service).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_RETRY_SOON = {"connecting", "loading"}

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "model": BrandsUnavailable,
        "description": "The API cannot tell what the reputation topic says (no Kafka configured, broker "
        "unreachable, topic missing, access refused, or still reading it); `detail` says which",
    }
}
_HTML: dict[str, Any] = {"text/html": {"schema": {"type": "string"}}}
BrandName = Annotated[str, PathParam(examples=["acme"])]


async def list_brands(request: Request) -> Response:
    """Every brand's latest window: counts, net sentiment, negative share against its baseline, z-score,
    volume ratio, alert state, window bounds, and the window's top complaint and praise terms."""
    if wants_html(request):
        return brand_page(request)
    api = api_context(request)
    return unavailable(api) or json_response(api.brands.brands())


async def brand(request: Request, brand: BrandName) -> Response:
    """One brand: its recent windows (oldest first), what people complain about and praise in the latest
    ones, and example posts with the words that made them negative or positive."""
    if wants_html(request):
        return brand_page(request)
    api = api_context(request)
    problem = unavailable(api)
    if problem is not None:
        return problem
    detail = api.brands.brand(brand)
    if detail is None:
        topic = api.settings.reputation_topic
        said = f"topic {topic!r} has no window of brand {brand!r} (GET /brands lists the brands)"
        return json_response(Problem(detail=said), status_code=404)
    return json_response(detail)


async def home(request: Request) -> Response:
    """The brand page for browsers; the interactive API docs for anything else."""
    return brand_page(request) if wants_html(request) else RedirectResponse("/docs")


async def asset(request: Request) -> Response:
    """One of the page's own files."""
    name = request.path_params["name"]
    if name not in ASSETS:
        return json_response(Problem(detail=f"no asset {name!r}"), status_code=404)
    return Response(_read(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


def brand_page(request: Request) -> HTMLResponse:
    """The page; its script reads the brand (if any) from the address and polls the JSON endpoints."""
    refresh = api_context(request).settings.brand_page_refresh_seconds
    html = _read("brand-page.html").replace("{{refresh_seconds}}", f"{refresh:g}")
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"}
    return HTMLResponse(html, headers=headers)


def unavailable(api: ApiContext) -> JSONResponse | None:
    """The 503 while the follower cannot vouch for the book; None when it can."""
    topic = api.settings.reputation_topic
    if api.follower is None:
        body = BrandsUnavailable(
            status="not_configured",
            detail="Kafka is not configured: set KAFKA_BOOTSTRAP_SERVERS (and KAFKA_* login settings) "
            f"for the API to follow the reputation topic {topic!r}",
            topic=topic,
        )
        return JSONResponse(body.model_dump(), status_code=503)
    state = api.follower.state()
    if state.status is None:
        return None
    headers = {"Retry-After": "2" if state.status in _RETRY_SOON else "10"}
    body = BrandsUnavailable(status=state.status, detail=state.detail, topic=topic)
    return JSONResponse(body.model_dump(), status_code=503, headers=headers)


def wants_html(request: Request) -> bool:
    """A browser asking for a page: ``text/html`` accepted, and at least as much as JSON."""
    accept = request.headers.get("accept")
    if not accept:
        return False
    quality: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media.lower()] = max(q, quality.get(media.lower(), 0.0))
    html = quality.get("text/html", 0.0)
    json = quality.get("application/json", quality.get("application/*", quality.get("*/*", 0.0)))
    return html > 0 and html >= json


@cache
def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def add_brand_routes(router: APIRouter) -> None:
    """The brand endpoints, the page at ``/`` and its assets."""
    router.add_api_route("/", home, methods=["GET"], include_in_schema=False)
    router.add_api_route(
        "/brands",
        list_brands,
        methods=["GET"],
        tags=["brands"],
        response_model=BrandList,
        responses={200: {"content": _HTML}, **_UNAVAILABLE},
    )
    router.add_api_route(
        "/brands/{brand}",
        brand,
        methods=["GET"],
        tags=["brands"],
        response_model=BrandDetail,
        responses={
            200: {"content": _HTML},
            404: {"model": Problem, "description": "No window of this brand on the reputation topic"},
            **_UNAVAILABLE,
        },
    )
    router.add_api_route("/static/{name}", asset, methods=["GET"], include_in_schema=False)
