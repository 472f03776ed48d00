"""Optional API key for the scoring routes: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.

A route is protected by declaring :func:`require_api_key` as a dependency (on the route, its router or an
``include_router``). FastAPI runs it on ordinary routes and on included copies of any route;
:class:`api.direct_route.DirectRoute` runs its check itself and refuses any dependency it would not run,
so a declared key is always an enforced key.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.datastructures import Headers

from api.context import api_context

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


def check_api_key(request: Request) -> None:
    """Raise a 401 unless ``request`` carries the app's API key (nothing to check without ``API_KEY``)."""
    guard = api_context(request).api_key
    if guard is not None:
        guard.check(request.headers)


async def require_api_key(
    request: Request,
    api_key: Annotated[str | None, Security(api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_token)],
) -> None:
    """Route dependency: a 401 without the API key. The two ``Security`` parameters declare both key
    schemes in OpenAPI; the check reads the headers itself (:func:`check_api_key`)."""
    check_api_key(request)
