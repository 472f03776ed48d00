"""Error answers a person can act on: 422 with a sentence, 503 with the model's reason."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.bodies import FieldProblem, Unavailable, ValidationProblem
from api.model_state import ModelNotReadyError, ModelStatus
from schemas.validation import describe_error, field_path

#: How many problems the ``detail`` sentence spells out; ``errors`` always lists them all.
_SPELLED_OUT = 3
_RETRY_LOADING_SECONDS = "5"


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 ``{"detail": "<sentence>", "errors": [...]}`` instead of FastAPI's raw error list."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    problems = [FieldProblem(loc=list(e["loc"]), msg=e["msg"], type=e["type"]) for e in errors]
    body = ValidationProblem(detail=summarize(errors, request.headers.get("content-type")), errors=problems)
    return JSONResponse(body.model_dump(), status_code=422)


async def model_not_ready_handler(request: Request, exc: Exception) -> JSONResponse:
    """503 with the reason there is no model; never a label."""
    assert isinstance(exc, ModelNotReadyError)
    return unavailable(exc.status, str(exc))


def unavailable(status: ModelStatus | str, reason: str) -> JSONResponse:
    """A 503 body; clients are told to retry soon while the model is still loading."""
    headers = {"Retry-After": _RETRY_LOADING_SECONDS} if status == ModelStatus.LOADING else None
    body = Unavailable(status=str(status), detail=reason)
    return JSONResponse(body.model_dump(), status_code=503, headers=headers)


def summarize(errors: Sequence[Mapping[str, Any]], content_type: str | None) -> str:
    """One sentence for all the problems, e.g. ``Invalid request: 'text' must not be empty...``."""
    sent_json = content_type is not None and "json" in content_type.lower()
    if not sent_json and any(field_path(e["loc"]) is None and e["type"] != "missing" for e in errors):
        # FastAPI only parses bodies declared as JSON; anything else reaches validation as raw bytes.
        return "Invalid request: the body must be JSON, sent with Content-Type: application/json."
    said = [describe_error(error) for error in errors[:_SPELLED_OUT]]
    more = len(errors) - len(said)
    if more:
        said.append(f"and {more} more problem{'s' if more > 1 else ''} (see 'errors')")
    return "Invalid request: " + "; ".join(said) + "."
