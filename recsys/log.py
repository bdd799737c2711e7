"""Logging set-up shared by the CLI and the service: timestamped lines, or JSON with the request id.

``RECSYS_LOG_FORMAT=text`` (the default) writes ``2026-01-31T12:00:00.123Z INFO name: message``;
``RECSYS_LOG_FORMAT=json`` writes one JSON object per line with ``time``, ``level``, ``logger``,
``message``, ``request_id`` (inside a request) and ``exception`` (when one is logged), for log
collectors. The service's request-id middleware sets :data:`request_id` for the duration of a
request; :class:`RequestIdFilter` copies it onto every record logged meanwhile.

Standard library only, so importing it costs nothing at start-up.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, Literal

LogFormat = Literal["text", "json"]

#: The id of the HTTP request being handled (None outside a request).
request_id: ContextVar[str | None] = ContextVar("recsys_request_id", default=None)

#: Loggers that log at the configured level; every other library logs warnings and errors only.
OWN_LOGGERS = ("recsys", "pipelines", "service", "uvicorn", "uvicorn.error", "uvicorn.access")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's id, or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` with UTC ISO 8601 timestamps to the millisecond, and the request id when set."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{line} [request {rid}]" if rid else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            payload["request_id"] = rid
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def utc_timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def make_formatter(log_format: LogFormat = "text") -> logging.Formatter:
    """The formatter for ``log_format`` (also the factory ``logging_config`` names for uvicorn)."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (as ``logging.lastResort``
    does), so a test runner that swaps stderr around a command does not leave a closed stream."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestIdFilter())

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; ours is fixed
        pass


def logging_config(level: str = "INFO", log_format: LogFormat = "text") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dictionary equivalent to :func:`configure_logging`.

    uvicorn takes it as ``log_config``, so its own loggers (``uvicorn.error``, ``uvicorn.access``)
    write through this handler in every worker process instead of in their own formats.
    """
    make_formatter(log_format)  # validates the name here, not in a worker
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"recsys": {"()": make_formatter, "log_format": log_format}},
        "handlers": {"stderr": {"()": StderrHandler, "formatter": "recsys"}},
        # Other libraries (alembic, httpx, optuna) speak only when something is wrong.
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level.upper()} for name in OWN_LOGGERS
        },
    }


def configure_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    """Route log records through one timestamped (or JSON) stderr handler on the root logger.

    recsys's own loggers (and uvicorn's) log at ``level``; other libraries keep the root's level
    (warnings by default). Calling it again replaces the handler it added before and leaves other
    handlers (pytest's, a notebook's) alone.
    """
    formatter = make_formatter(log_format)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(formatter)
    root.addHandler(handler)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
