"""The search_knowledge_base tool: the best article's first sentences, the top passages as data."""

from __future__ import annotations

import re

from tools.errors import ToolError
from tools.registry import ToolContext, ToolResult
from tools.store.knowledge import search_articles


def _first_sentences(text: str, count: int = 2) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    return " ".join(sentences[:count])


async def search_knowledge_base(ctx: ToolContext, query: str) -> ToolResult:
    """Search the knowledge base (policies, parking, payment, products, offerings, FAQs).

    Args:
        query: The caller's question in their own words.
    """
    results = await search_articles(ctx.db, query)
    if not results:
        raise ToolError(
            "I'm not sure about that one. I can take a message or connect you with someone.",
            code="no_answer",
        )
    best = results[0]
    return ToolResult(
        say=_first_sentences(best["body"]),
        data={"passages": [{"title": r["title"], "text": r["body"]} for r in results]},
    )
