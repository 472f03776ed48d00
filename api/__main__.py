"""``sentiment-api`` / ``python -m api``: serve the API with uvicorn, configured from the environment."""

from __future__ import annotations

import logging

import uvicorn

from api.main import create_app
from api.settings import ApiSettings


def main() -> None:
    """Serve one uvicorn worker on ``API_HOST:API_PORT``."""
    settings = ApiSettings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn's "auto" loop/http pick uvloop and httptools when installed: the fast path.
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
