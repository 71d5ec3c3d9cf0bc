"""`serve`: run the service with uvicorn until it is stopped."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from etlb.gate import Gate
from etlb.server.app import create_app
from etlb.server.settings import ServiceSettings

__all__ = ["serve"]

logger = logging.getLogger(__name__)


def serve(
    config_path: Path | None,
    *,
    host: str | None = None,
    port: int | None = None,
    group_commit: bool | None = None,
) -> None:
    """Serve the gate of `config_path` over HTTP until SIGINT or SIGTERM. None keeps the configured value.

    The store must open: unlike the MCP proxy, the service does not start without it, so that a
    deployment fails visibly instead of refusing every call.
    """
    with Gate.from_config(config_path) as gate:
        settings = ServiceSettings.from_config(gate.config, host=host, port=port, group_commit=group_commit)
        app = create_app(gate, settings)
        logger.info("serving on http://%s:%d", settings.host, settings.port)
        # "auto" picks uvloop and httptools when they are installed, and asyncio and h11 otherwise.
        # log_config=None leaves logging to the command line's configuration.
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            loop="auto",
            http="auto",
            log_config=None,
            server_header=False,
        )
