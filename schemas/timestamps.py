"""RFC 3339 timestamps in UTC with the ``Z`` suffix, as every record and document here carries them."""

from datetime import UTC, datetime
from typing import Literal

TimeSpec = Literal["auto", "seconds", "milliseconds", "microseconds"]


def utc_rfc3339(moment: datetime | float, timespec: TimeSpec = "auto") -> str:
    """``2026-11-26T10:15:00.123456Z``: an aware datetime (any offset) or a Unix time, in UTC."""
    when = datetime.fromtimestamp(moment, UTC) if isinstance(moment, int | float) else moment.astimezone(UTC)
    return when.isoformat(timespec=timespec).replace("+00:00", "Z")
