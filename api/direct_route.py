"""A FastAPI route that hands its endpoint the bare request: for the hot scoring routes.

FastAPI's per-request machinery (body parsing, dependency solving, response-model validation) costs about
27 µs of the ~90 µs a ``/predict`` spends in the app (measured in-process, 32 concurrent requests), and
the benchmark's 0.6 x ceiling target needs it gone. A :class:`DirectRoute` keeps everything FastAPI builds
from the route's declarations (the OpenAPI operation: ``response_model``, ``responses``,
``openapi_extra``, declared dependencies) but calls ``endpoint(request)`` directly, through FastAPI's
documented extension point (``APIRoute.get_route_handler``).

Contract for its endpoints: ``async def endpoint(request: Request) -> Response``, validating the body
themselves (:func:`api.json_io.read_json`) and enforcing anything their declared dependencies stand for:
those are documentation only here. Exceptions still reach the app's exception handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    """An ``APIRoute`` whose handler is the endpoint itself."""

    def get_route_handler(self) -> Endpoint:
        """The endpoint, called with the request and nothing else."""
        return cast(Endpoint, self.endpoint)
