"""Logging: one loguru sink, pipecat's chatter at WARNING, secrets scrubbed from every line."""

from __future__ import annotations

import sys
from typing import Any
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


def configure_logging(settings: Settings) -> None:
    for value in secret_values(settings):
        redact(value)
    level = settings.log_level.upper()

    def keep(record: Any) -> bool:
        name = record["name"] or ""
        if name.startswith("pipecat") and record["level"].no < 30 and level != "DEBUG":
            return False
        message = record["message"]
        for secret in _SECRETS:
            if secret in message:
                record["message"] = message = message.replace(secret, "**********")
        return True

    logger.remove()
    logger.add(sys.stderr, level=level, filter=keep, backtrace=False, diagnose=False)
