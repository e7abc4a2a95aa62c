"""Prompt and phrase loading: text files in prompts/ with named {placeholders}."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


class _Lenient(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def fill(template: str, **values: Any) -> str:
    """Fill {placeholders}; unknown ones become empty rather than failing a call."""
    return string.Formatter().vformat(template, (), _Lenient(values)).strip()


@lru_cache(maxsize=8)
def load_text(name: str) -> str:
    return (PROMPTS_DIR / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def phrases() -> dict[str, str]:
    data = yaml.safe_load(load_text("phrases.yaml"))
    return {str(k): str(v) for k, v in data.items()}


def without_tools(text: str, disabled: Iterable[str]) -> str:
    """``text`` minus the lines that name a disabled tool, so the model is never told to use one.

    A worked example ``call <tool> {...}`` goes together with the ``Caller:`` line before it.
    """
    names = [n for n in disabled if n]
    if not names:
        return text
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")
    kept: list[str] = []
    for line in text.split("\n"):
        if pattern.search(line):
            if line.startswith("call ") and kept and kept[-1].startswith("Caller:"):
                kept.pop()
            continue
        kept.append(line)
    return "\n".join(kept)
