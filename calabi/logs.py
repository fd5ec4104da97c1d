"""Log output: text (the default) or one JSON object per line (``--log-format json`` / ``CALABI_LOG_FORMAT``)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from calabi.request_context import current_request

__all__ = ["JsonFormatter", "json_logs_on", "use_json_logs"]

_json_logs = False


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC, ISO 8601), level, logger, message, and while a request is
    answered its request id, actor and route template; an exception's traceback as ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = current_request()
        if request is not None:
            entry["request_id"] = request.request_id
            for key, value in (("actor", request.actor), ("route", request.route)):
                if value:
                    entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def use_json_logs(level: int = logging.INFO) -> None:
    """Send every logger's records, at ``level`` and above, to stderr as JSON lines (replaces the root handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    global _json_logs
    _json_logs = True


def json_logs_on() -> bool:
    """Whether this process writes JSON lines (``use_json_logs`` ran)."""
    return _json_logs
