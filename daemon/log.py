"""Logging: structlog with a console renderer on a TTY and JSON lines otherwise; library logs too."""

from __future__ import annotations

import logging
import sys
from typing import Any


class LazyLogger:
    """structlog's logger for one module, imported at the first log call: modules that
    `framewatch --help` imports to list plugin commands (the plugin host, built-in plugins) must not
    pay for importing structlog (and, where it is installed, rich) when nothing is logged."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str):
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            import structlog

            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, attr)


def get_logger(name: str) -> Any:
    """`structlog.get_logger(name)`, imported on first use (LazyLogger)."""
    return LazyLogger(name)


def setup_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Configure structlog and route stdlib `logging` records through the same renderer (stderr)."""
    import structlog

    if json is None:
        json = not sys.stderr.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # transformers and friends are chatty at INFO; their warnings still come through.
    for noisy in ("transformers", "urllib3", "httpx", "filelock", "apscheduler", "watchdog"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
