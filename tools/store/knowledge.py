"""Knowledge-base search as stored: SQLite FTS5 with BM25 ranking, a LIKE fallback elsewhere.

One of the places SQL dialects differ (with tools.store.db and the FTS migration): on SQLite the
``kb_fts`` index ranks; on other databases each query term found in a title or body counts one.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from tools.store import schema
from tools.store.db import Database

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
