"""Response bodies the API adds to the shared contracts in :mod:`schemas` (errors and probes)."""

from typing import Literal

from pydantic import BaseModel, Field

from schemas import ModelRef


class Problem(BaseModel):
    """A refused request: ``detail`` says why, for a person."""

    detail: str


class FieldProblem(BaseModel):
    """One thing wrong with a request body."""

    loc: list[str | int] = Field(description='where: e.g. ["body", "texts", 3]')
    msg: str
    type: str = Field(description="pydantic error type, e.g. string_too_long")


class ValidationProblem(Problem):
    """A 422: ``detail`` sums the problems up in a sentence; ``errors`` lists each one."""

    errors: list[FieldProblem]


class Unavailable(Problem):
    """A 503: there is no usable model (yet); ``detail`` carries the reason."""

    status: Literal["loading", "failed", "failing"]


class Health(BaseModel):
    """``GET /health``: the process is up and serving HTTP."""

    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    """``GET /ready`` when a model is loaded and just scored a probe text."""

    status: Literal["ready"] = "ready"
    model: ModelRef
