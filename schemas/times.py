"""RFC 3339 timestamps as every output of the project writes them: UTC with a ``Z``."""

from datetime import UTC, datetime


def rfc3339(seconds: float) -> str:
    """Unix ``seconds`` as ``2026-11-26T10:15:00.123456Z`` (microseconds only when there are any)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
