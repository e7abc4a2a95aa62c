"""Logging: one loguru sink (text, or JSON lines carrying the call's sid), pipecat's chatter at
WARNING, secrets scrubbed from every line and traceback."""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any, TextIO
from urllib.parse import urlsplit

from loguru import logger

from agent.settings import Secret, Settings


def secret_values(settings: Settings) -> list[str]:
    """The settings' secrets worth scrubbing (6 characters or more), the database password too."""
    values = []
    for value in vars(settings).values():
        if isinstance(value, Secret) and len(value.reveal()) >= 6:
            values.append(value.reveal())
    password = urlsplit(settings.database_url).password if settings.database_url else None
    if password and len(password) >= 6:
        values.append(password)
    return values


_SECRETS: list[str] = []


def redact(value: str) -> None:
    """Never let ``value`` reach a log line (it is replaced by asterisks)."""
    if len(value) >= 6 and value not in _SECRETS:
        _SECRETS.append(value)


def scrub(text: str) -> str:
    """``text`` with every secret given to :func:`redact` replaced by asterisks."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "**********")
    return text


class _Scrubbed:
    """A text stream that scrubs what is written to it (a line with its traceback)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        self._stream.write(scrub(text))

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._stream, "isatty", lambda: False)())


def json_line(record: Any) -> str:
    """A loguru format function: the record as one JSON object (time, level, message, logger,
    module, function, line, the bound extras such as ``call_sid``, and the exception's
    traceback when there is one), secrets scrubbed before encoding."""
    fields: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": scrub(record["message"]),
        "logger": record["name"],
        "module": record["module"],
        "function": record["function"],
        "line": record["line"],
    }
    for key, value in record["extra"].items():
        if not key.startswith("_"):
            fields[key] = scrub(value) if isinstance(value, str) else value
    if record["exception"] is not None:
        kind, error, trace = record["exception"]
        fields["exception"] = scrub("".join(traceback.format_exception(kind, error, trace)))
    record["extra"]["_json"] = json.dumps(fields, default=str)
    return "{extra[_json]}\n"


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """One sink (``stream``, default stderr) at the settings' level and format (text, or
    FRONTDESK_LOG_FORMAT=json: :func:`json_line`); pipecat below WARNING only at DEBUG."""
    for value in secret_values(settings):
        redact(value)
    level = settings.log_level.upper()

    def keep(record: Any) -> bool:
        name = record["name"] or ""
        if name.startswith("pipecat") and record["level"].no < 30 and level != "DEBUG":
            return False
        record["message"] = scrub(record["message"])
        return True

    sink = _Scrubbed(stream if stream is not None else sys.stderr)
    logger.remove()
    if settings.log_format == "json":
        logger.add(sink, level=level, filter=keep, format=json_line, colorize=False)
    else:
        logger.add(sink, level=level, filter=keep, backtrace=False, diagnose=False)
