"""Logs: one JSON object per line for collectors, readable lines on a terminal.

Each line carries ``trace_id`` and ``span_id`` while a span is active, so a log
line leads to its trace and back. Credentials are masked in every line, whatever
logged them: the password of a URL (``postgresql://user:***@host``) and the value
of ``password=``-like settings (libpq conninfo, query strings).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Final, TextIO

from opentelemetry import trace

HUMAN_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK: Final = "***"

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^\s:/@]*):(?P<secret>[^\s@/]*)@")
_SETTING = re.compile(
    r"(?P<head>\w*?(?:password|passwd|pwd|secret|token|api[_-]?key)"
    r"\s*[=:]\s*)(?P<secret>'[^']*'|\"[^\"]*\"|[^\s&;,'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every credential it holds replaced by ``***``."""
    if "@" in text:
        text = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
    return _SETTING.sub(rf"\g<head>{MASK}", text)


def _trace_fields() -> dict[str, str]:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


class JsonLineFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"[, "trace_id", "span_id", "exception"]}``."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_trace_fields(),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class HumanFormatter(logging.Formatter):
    """The classic one-line format, the trace appended while a span is active."""

    def __init__(self) -> None:
        super().__init__(HUMAN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        fields = _trace_fields()
        if fields:
            line += f" [trace_id={fields['trace_id']} span_id={fields['span_id']}]"
        return line


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """The root logger at ``level``, writing to ``stream`` (stderr): JSON lines,
    or human-readable lines when ``stream`` is a terminal."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    isatty = getattr(stream, "isatty", None)
    handler.setFormatter(HumanFormatter() if isatty and isatty() else JsonLineFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
