"""JSON bodies in and out of the scoring routes, straight through pydantic-core.

The scoring routes take the raw request and validate it with ``model_validate_json`` (parsing and
validation in one pass in Rust), and send ``to_json`` bytes back, instead of FastAPI's body parameter
and response model: the same contracts and the same 422s, at about half the per-request cost, which
``python -m bench.api_bench`` needs to reach its target. The OpenAPI document still declares both bodies
(see :func:`request_body_openapi` and the routes' ``response_model``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_json(request: Request, model: type[ModelT]) -> ModelT:
    """The request body validated as ``model``, or :class:`RequestValidationError` (a 422)."""
    body = await request.body()
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    if not _declares_json(request.headers.get("content-type")):
        # Like FastAPI's strict content type: a form or text body is not parsed as JSON by accident.
        raise RequestValidationError(
            [{"type": "content_type", "loc": ("body",), "msg": "Content-Type must be application/json"}]
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def json_response(content: BaseModel, status_code: int = 200) -> Response:
    """``content`` serialised by pydantic-core."""
    return Response(
        type(content).__pydantic_serializer__.to_json(content),
        status_code=status_code,
        media_type="application/json",
    )


#: "Has a character Python's str.strip() keeps", in ECMAScript regex terms: ECMAScript's \s lacks
#: U+001C-U+001F and U+0085 (Python whitespace) and includes U+FEFF (not Python whitespace).
NON_BLANK_PATTERN = r"[^\s\u001c-\u001f\u0085]|\ufeff"


def request_body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the required JSON request body.

    Every string in the request bodies is a ``schemas.api.ApiText``, which must not be blank; pydantic's
    JSON schema cannot say so (an AfterValidator), so the published schema gets
    :data:`NON_BLANK_PATTERN` (at least one character that is not whitespace to Python) and clients
    and schema-driven tests know blank text is invalid.
    """
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    _require_non_blank(schema)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _require_non_blank(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "string":
            node.setdefault("pattern", NON_BLANK_PATTERN)
        for child in node.values():
            _require_non_blank(child)
    elif isinstance(node, list):
        for child in node:
            _require_non_blank(child)


def _declares_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
