"""Phone-number and time-zone rules: the one implementation the YAML config, the admin console
and the agent's tools all use.

A phone number is accepted when ``phonenumbers`` finds it *valid* (not merely of a possible
length): these numbers are dialled (transfers, callbacks), so a number the admin console saves
is exactly one the business config and the tools accept, and the other way round. Numbers
without a country code are read as US numbers. A time zone is accepted when it is an IANA name
the system's zone database knows.
"""

from __future__ import annotations

from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers

DEFAULT_REGION = "US"


class InvalidPhoneNumber(ValueError):
    """The text is not a dialable phone number; the message says why, for a person to read."""


def phone_e164(text: str, region: str = DEFAULT_REGION) -> str:
    """The E.164 form of a valid phone number; :class:`InvalidPhoneNumber` otherwise."""
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidPhoneNumber(
            f"{text!r} is not a phone number; write it with its country code, e.g. +1 413 555 0199"
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(
            f"{text!r} is not a valid phone number; check the digits and the country code"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def is_timezone(name: str) -> bool:
    """True for an IANA time-zone name ``ZoneInfo`` can load ("America/New_York")."""
    if name not in _zone_names():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
