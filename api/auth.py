"""Optional API key for the scoring routes: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.datastructures import Headers

# auto_error=False: a missing header is our 401 (with one message), not FastAPI's 403.
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key (API_KEY)")
bearer_token = HTTPBearer(auto_error=False, description="the API key (API_KEY) as a bearer token")

UNAUTHORIZED_DETAIL = (
    "Missing or wrong API key: send it in the X-API-Key header or as Authorization: Bearer <key>."
)


class ApiKeyGuard:
    """Checks that a request presents the configured key."""

    def __init__(self, expected: SecretStr) -> None:
        self._expected = expected.get_secret_value().encode()

    def check(self, headers: Headers) -> None:
        """Return when ``headers`` carry the key; raise a 401 otherwise."""
        bearer = headers.get("authorization", "")
        scheme, _, token = bearer.partition(" ")
        presented = [headers.get("x-api-key"), token.strip() if scheme.lower() == "bearer" else None]
        # compare_digest on every presented key: the time taken says nothing about how close a guess was.
        if not any(hmac.compare_digest(key.encode(), self._expected) for key in presented if key is not None):
            raise HTTPException(
                status_code=401, detail=UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": "Bearer"}
            )


async def declare_api_key(
    api_key: Annotated[str | None, Security(api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_token)],
) -> None:
    """Route dependency that makes OpenAPI declare both key schemes.

    It checks nothing: the scoring routes are :class:`api.direct_route.DirectRoute` s, which do not run
    dependencies, so the endpoints call :meth:`ApiKeyGuard.check` themselves (first thing, before the body).
    """
