"""A FastAPI route that hands its endpoint the bare request: for the hot scoring routes.

FastAPI's per-request machinery (body parsing, dependency solving, response-model validation) costs about
27 µs of the ~90 µs a ``/predict`` spends in the app (measured in-process, 32 concurrent requests), and
the benchmark's 0.6 x ceiling target needs it gone. A :class:`DirectRoute` keeps everything FastAPI builds
from the route's declarations (the OpenAPI operation: ``response_model``, ``responses``,
``openapi_extra``, declared dependencies) but calls ``endpoint(request)`` directly, through FastAPI's
documented extension point (``APIRoute.get_route_handler``).

Contract for its endpoints: ``async def endpoint(request: Request) -> Response``, validating the body
themselves (:func:`api.json_io.read_json`). Exceptions still reach the app's exception handlers.

Dependencies: the one a DirectRoute runs is :func:`api.auth.require_api_key` (its check, before the
endpoint), however it is declared (route, router, ``include_router``). Any other dependency, or an
endpoint parameter other than the request, would be documented but never run, so building the route
raises :class:`UnsupportedDependencyError` instead: nothing a route declares can be silently skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

import fastapi.routing
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

    def get_route_handler(self) -> Endpoint:
        """The endpoint, called with the request and nothing else, behind the declared checks.

        FastAPI calls this once for the route and once per ``include_router``, with the dependencies of
        that inclusion (its route context), so each inclusion gets its own checks.
        """
        endpoint = cast(Endpoint, self.endpoint)
        checks = _checks(self.path, _dependant_in_context(self))
        if not checks:
            return endpoint

        async def checked(request: Request) -> Response:
            for check in checks:
                check(request)
            return await endpoint(request)

        return checked


def _dependant_in_context(route: DirectRoute) -> Dependant:
    """The dependant FastAPI would solve: the route's own, or, while FastAPI builds the handler of an
    included copy, that copy's (route + router + ``include_router`` dependencies).

    FastAPI has no public way to get the latter (``APIRoute.get_route_handler`` reads a private context
    variable); tests/test_api_auth.py fails if a FastAPI upgrade moves it, instead of a key going unchecked.
    """
    variable = getattr(fastapi.routing, "_effective_route_context_var", None)
    context = variable.get() if variable is not None else None
    if context is not None and getattr(context, "original_route", None) is route:
        return cast(Dependant, context.dependant)
    return route.dependant


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
