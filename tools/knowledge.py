"""Knowledge base search: SQLite FTS5 with BM25 ranking (a LIKE fallback on other databases)."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from tools import schema
from tools.db import Database
from tools.registry import ToolContext, ToolError, ToolResult, tool

_STOPWORDS = frozenset(
    "a an and are as at be can could do does for from have how i if in is it me my of on or "
    "please tell the there to what when where which who why will with you your we us our "
    "hi hello yes no ok okay um uh so just like know want would about any".split()
)


def query_terms(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return [w for w in words if w not in _STOPWORDS and len(w) > 1][:12]


async def search_articles(db: Database, query: str, limit: int = 3) -> list[dict[str, Any]]:
    """Best matching articles, best first, each with title, body and score."""
    terms = query_terms(query)
    if not terms:
        return []
    async with db.read() as conn:
        if db.is_sqlite:
            match = " OR ".join(f'"{t}"*' for t in terms)
            rows = await conn.execute(
                sa.text(
                    "SELECT a.id, a.title, a.body, bm25(kb_fts, 4.0, 1.0, 2.0) AS score "
                    "FROM kb_fts JOIN kb_articles a ON a.id = kb_fts.rowid "
                    "WHERE kb_fts MATCH :match ORDER BY score LIMIT :limit"
                ),
                {"match": match, "limit": limit},
            )
            return [
                {"id": r.id, "title": r.title, "body": r.body, "score": round(-r.score, 3)}
                for r in rows
            ]
        table = schema.kb_articles
        matches = [
            sa.case(
                (sa.or_(table.c.title.ilike(f"%{t}%"), table.c.body.ilike(f"%{t}%")), 1), else_=0
            )
            for t in terms
        ]
        hits: sa.ColumnElement[int] = matches[0]
        for term_hit in matches[1:]:
            hits = hits + term_hit
        rows = await conn.execute(
            sa.select(table.c.id, table.c.title, table.c.body, hits.label("score"))
            .where(hits > 0)
            .order_by(sa.desc("score"))
            .limit(limit)
        )
        return [{"id": r.id, "title": r.title, "body": r.body, "score": r.score} for r in rows]


def _first_sentences(text: str, count: int = 2) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    return " ".join(sentences[:count])


@tool(timeout_secs=3.0)
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
