"""Input event on the `mentions` topic: one social post that mentions a brand."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import UnionType
from typing import Annotated, Any, Final, Union, get_args, get_origin

from annotated_types import MaxLen
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StrictStr

#: Longest accepted post text, in characters (after nothing: the raw field length).
MAX_TEXT_CHARS: Final = 10_000


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or whitespace only")
    return value


def _rfc3339(value: str) -> str:
    # RFC 3339 needs a full date, a time and an explicit offset; fromisoformat alone accepts far more.
    if len(value) < 20 or value[10] not in "Tt ":
        raise ValueError("must be an RFC 3339 timestamp such as 2026-11-26T10:15:00Z")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ValueError("must be an RFC 3339 timestamp such as 2026-11-26T10:15:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError("must carry a UTC offset (Z or +hh:mm)")
    return value


def primary_language(tag: str) -> str:
    """``en-US``, ``EN``, ``en_GB`` -> ``en``: the primary subtag of a BCP 47 / POSIX language tag."""
    return tag.strip().replace("_", "-").split("-", 1)[0].lower()


NonBlankStr = Annotated[StrictStr, AfterValidator(_non_blank)]
Rfc3339Str = Annotated[StrictStr, AfterValidator(_rfc3339)]


class Mention(BaseModel):
    """A post as the scrapers publish it (JSON object, UTF-8).

    Unknown fields are kept (``model_extra``) and carried through to the result. ``created_at`` stays the
    string the scraper sent, so the output repeats it byte for byte; :meth:`created_at_datetime` parses it.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    id: NonBlankStr
    text: Annotated[NonBlankStr, Field(max_length=MAX_TEXT_CHARS)]
    brand: StrictStr | None = None
    source: StrictStr | None = None
    author: StrictStr | None = None
    lang: StrictStr | None = None
    url: StrictStr | None = None
    created_at: Rfc3339Str | None = None

    def created_at_datetime(self) -> datetime | None:
        """``created_at`` as an aware datetime, or None when the post has none."""
        if self.created_at is None:
            return None
        return datetime.fromisoformat(self.created_at.replace("z", "Z"))


@dataclass(frozen=True, slots=True)
class FieldChecks:
    """:class:`Mention`'s fields as the compiled decode (``worker/_fastbatch.c``) checks them, derived from
    the model itself by :func:`field_checks`: a field added to ``Mention`` is checked on the fast path
    too, or the worker does not start.

    ``required``: non-blank strings and their longest length (-1: no limit); ``optional_strings``: a
    string or None; ``timestamps``: an RFC 3339 string or None.
    """

    required: tuple[tuple[str, int], ...]
    optional_strings: tuple[str, ...]
    timestamps: tuple[str, ...]


def _validators(alias: object) -> tuple[Callable[..., Any], ...]:
    return tuple(m.func for m in get_args(alias)[1:] if isinstance(m, AfterValidator))


def field_checks(model: type[BaseModel] = Mention) -> FieldChecks:
    """The checks of every field of ``model``; :class:`TypeError` names a field of a shape they do not
    know (then teach them, in ``worker/_fastbatch.c`` and here)."""
    required: list[tuple[str, int]] = []
    optional: list[str] = []
    timestamps: list[str] = []
    for name, info in model.model_fields.items():
        annotation, metadata = info.annotation, list(info.metadata)
        nullable = get_origin(annotation) in (Union, UnionType) and type(None) in get_args(annotation)
        if nullable:
            (annotation,) = [arg for arg in get_args(annotation) if arg is not type(None)]
        if get_origin(annotation) is Annotated:
            annotation, *more = get_args(annotation)
            metadata += more
        strict = any(isinstance(m, Strict) and m.strict for m in metadata)
        validators = tuple(m.func for m in metadata if isinstance(m, AfterValidator))
        limits = [m.max_length for m in metadata if isinstance(m, MaxLen)]
        known = {type(m) for m in metadata} <= {Strict, AfterValidator, MaxLen}
        if annotation is not str or not strict or not known:
            shape = None
        elif not nullable and info.is_required() and validators == _validators(NonBlankStr):
            shape = "required"
        elif nullable and info.default is None and not limits:
            shape = {(): "optional", _validators(Rfc3339Str): "timestamp"}.get(validators)
        else:
            shape = None
        if shape is None:
            raise TypeError(f"{model.__name__}.{name} ({info}) has no fast check: teach schemas.field_checks")
        if shape == "required":
            required.append((name, min(limits) if limits else -1))
        else:
            (optional if shape == "optional" else timestamps).append(name)
    return FieldChecks(tuple(required), tuple(optional), tuple(timestamps))
