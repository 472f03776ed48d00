"""A FastAPI route that hands its endpoint the bare request: for the hot scoring routes.

FastAPI's per-request machinery (body parsing, dependency solving, response-model validation) is a large
share of a ``/predict`` that does little else, and the API benchmark's target needs it gone (figures in
docs/results.md). A :class:`DirectRoute` keeps everything FastAPI builds from the route's declarations
(the OpenAPI operation: ``response_model``, ``responses``, ``openapi_extra``, declared dependencies) but
calls ``endpoint(request)`` directly, through FastAPI's documented extension point
(``APIRoute.get_route_handler``).

Contract for its endpoints: ``async def endpoint(request: Request) -> Response``, validating the body
themselves (:func:`api.json_io.read_json`). Exceptions still reach the app's exception handlers.

Dependencies: the one a DirectRoute runs is :func:`api.auth.require_api_key` (its check, before the
endpoint), declared on the route or on its router. Any other dependency, or an endpoint parameter other
than the request, would be documented but never run, so building the route raises
:class:`UnsupportedDependencyError` instead: nothing a route declares can be silently skipped.

Included copies (``include_router``) get FastAPI's own handler: FastAPI keeps the dependencies an
inclusion adds to itself (no public API exposes them), and its handler runs all of them. The app's hot
routes are added to the app's router directly, so they take the direct path.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from api.auth import check_api_key, require_api_key

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]
RequestCheck = Callable[[Request], None]

#: Dependencies a DirectRoute runs, each as a plain check of the request that raises to refuse it.
CHECKS: dict[Callable[..., Any], RequestCheck] = {require_api_key: check_api_key}


class UnsupportedDependencyError(TypeError):
    """A DirectRoute was declared with a dependency or parameter it would not run."""


class DirectRoute(APIRoute):
    """An ``APIRoute`` whose handler is the endpoint itself, after the checks of :data:`CHECKS`."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        self._constructed = False
        super().__init__(path, endpoint, **kwargs)
        self._constructed = True

    def get_route_handler(self) -> Endpoint:
        """The endpoint, called with the request and nothing else, behind the declared checks.

        ``APIRoute.__init__`` builds the route's own handler from :attr:`dependant`. A later build is
        FastAPI building an included copy, whose added dependencies only FastAPI's handler knows: it
        gets that handler, so every dependency of the inclusion runs.
        """
        if self._constructed:
            return super().get_route_handler()
        endpoint = cast(Endpoint, self.endpoint)
        checks = _checks(self.path, self.dependant)
        if not checks:
            return endpoint

        async def checked(request: Request) -> Response:
            for check in checks:
                check(request)
            return await endpoint(request)

        return checked


def _checks(path: str, dependant: Dependant) -> list[RequestCheck]:
    params = [
        p.name
        for p in (
            *dependant.path_params,
            *dependant.query_params,
            *dependant.header_params,
            *dependant.cookie_params,
            *dependant.body_params,
        )
    ]
    if params:
        raise UnsupportedDependencyError(
            f"DirectRoute {path}: the endpoint takes only the request; it declares {', '.join(params)}, "
            "which would never be filled in (read them from the request, or use a normal APIRoute)"
        )
    checks: list[RequestCheck] = []
    for dependency in dependant.dependencies:
        check = CHECKS.get(dependency.call) if dependency.call is not None else None
        if check is None:
            name = getattr(dependency.call, "__qualname__", repr(dependency.call))
            raise UnsupportedDependencyError(
                f"DirectRoute {path}: dependency {name} would be documented but never run; "
                f"a DirectRoute runs only {', '.join(c.__qualname__ for c in CHECKS)} "
                "(or use a normal APIRoute)"
            )
        if check not in checks:
            checks.append(check)
    return checks
