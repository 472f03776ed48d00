"""Pydantic validation errors in words, for people: the API's 422s and, by the same rules, dead letters."""

from collections.abc import Mapping, Sequence
from typing import Any


def describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic/FastAPI validation error in words; ``loc`` is within the body (a leading ``"body"``,
    as FastAPI writes it, is dropped), e.g. ``'texts[3]' must not be empty or whitespace only``."""
    kind: str = error["type"]
    loc: Sequence[str | int] = error["loc"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    where = field_path(loc)
    if kind == "json_invalid":
        position = f" at character {loc[-1]}" if len(loc) > 1 else ""
        return f"the body is not valid JSON ({ctx.get('error', 'decode error')}{position})"
    if where is None:
        if kind == "missing":
            return "the body is missing: send a JSON object"
        return "the body must be a JSON object"
    match kind:
        case "missing":
            return f"'{where}' is required"
        case "extra_forbidden":
            return f"'{where}' is not an accepted field"
        case "string_type":
            return f"'{where}' must be a string"
        case "list_type":
            return f"'{where}' must be a list of strings"
        case "string_too_long":
            return f"'{where}' is too long: at most {ctx.get('max_length', 0):,} characters are accepted"
        case "too_long" if ctx.get("field_type") != "List":
            return f"'{where}' is too long: at most {ctx.get('max_length', 0):,} characters are accepted"
        case "too_long":
            return f"'{where}' has too many items: at most {ctx.get('max_length', 0):,} are accepted"
        case "too_short":
            return f"'{where}' needs at least {ctx.get('min_length', 1):,} item(s)"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"'{where}' {message}" if kind == "value_error" else f"'{where}': {message}"


def field_path(loc: Sequence[str | int]) -> str | None:
    """``("body", "texts", 3)`` -> ``texts[3]``; None for the body itself."""
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None
