"""Input event on the `mentions` topic: one social post that mentions a brand."""

from datetime import datetime
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

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
