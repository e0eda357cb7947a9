"""structlog set-up at the edge: JSON lines off a terminal, a readable renderer on one.

Logs go to stderr so that stdout stays the command's output (JSON lines with --json). Kernels never
log; the edge binds `market`, `account`, `seq` where it has them.
"""

from __future__ import annotations

import sys

import structlog


def configure_logging(level: str = "info") -> None:
    renderer = (structlog.dev.ConsoleRenderer(colors=False) if sys.stderr.isatty()
                else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, 20)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
