"""structlog, configured once for every ovault process.

JSON lines when not on a terminal (or OVAULT_LOG_FORMAT=json), readable
key=value lines on a terminal. Standard-library logging (aiohttp, asyncpg,
the SDK) is routed through the same processors.
"""
from __future__ import annotations

import logging
import os
import socket
import sys

import structlog

_configured = False


def configure(level: str | None = None, fmt: str | None = None, stream=None) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    level = (level or os.environ.get("OVAULT_LOG_LEVEL", "INFO")).upper()
    stream = stream or sys.stderr
    fmt = fmt or os.environ.get("OVAULT_LOG_FORMAT") or ("console" if stream.isatty() else "json")
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=shared + [structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel("WARNING")
    # transitions narrates every callback at INFO; our machines log their own steps.
    logging.getLogger("transitions").setLevel("WARNING")


def startup_banner(component: str, version: str) -> None:
    structlog.get_logger(component).info("starting", component=component, version=version,
                                         hostname=socket.gethostname(), pid=os.getpid())
