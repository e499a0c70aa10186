"""Logging set-up: text or JSON lines with structured fields, and a last-line secret filter.

Code logs with ``extra={"tenant": ..., "kid": ...}``; both formats show those fields. Secrets are
never logged on purpose; ``RedactSecrets`` is the safety net that replaces any configured secret
value that still reaches a record (say, inside a third-party exception text), through the one
``monitor.redact.Redactor``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal, TextIO

from monitor.redact import Redactor

FIELDS = ("tenant", "kid", "old_kid", "new_kid", "event", "event_id", "reason", "destination")


class RedactSecrets(logging.Filter):
    """Replace known secret values in the fully formatted message, then freeze it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = Redactor(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        self.redact = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = self.redact(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _timestamp(record: logging.LogRecord) -> str:
    # isoformat truncates to milliseconds like "%f"[:-3], at a fraction of strftime's cost
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _fields_of(record: logging.LogRecord) -> list[tuple[str, object]]:
    """The structured fields the record carries (from ``extra``), in FIELDS order."""
    values = record.__dict__
    return [(name, values[name]) for name in FIELDS if name in values]


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{name}={value}" for name, value in _fields_of(record))
        line = f"{_timestamp(record)} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields_of(record))
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str)


def configure_logging(
    *,
    log_format: Literal["text", "json"] = "text",
    level: str = "info",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> RedactSecrets:
    """Install one handler on the root logger; returns the filter so reloads can update it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    redactor = RedactSecrets(secrets)
    handler.addFilter(redactor)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; apscheduler every job run.
    for noisy in ("httpx", "httpcore", "apscheduler", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return redactor
