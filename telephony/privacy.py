"""How phone numbers appear in logs: masked (the database keeps them whole)."""

from __future__ import annotations


def mask_phone(number: str) -> str:
    """+14135550123 -> +1413***0123; anything of six characters or fewer -> ***."""
    if len(number) <= 6:
        return "***"
    return f"{number[:5]}***{number[-4:]}"
