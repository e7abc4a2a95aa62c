"""Knowledge-base search as stored: full-text search with ranking on both backends.

One of the places SQL dialects differ (with tools.store.db and the FTS migrations): on SQLite the
FTS5 index ``kb_fts`` ranks by BM25 (migration 0001); on PostgreSQL the weighted ``tsvector``
column ``kb_articles.search`` (title A, tags B, body C; English stemming, migration 0005) ranks
by ``ts_rank``. Either way every query term matches as a prefix and any term may match.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

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
        rows = await conn.execute(
            sa.text(
                "SELECT a.id, a.title, a.body, ts_rank(a.search, q) AS score "
                "FROM kb_articles a, to_tsquery('english', :query) q "
                "WHERE a.search @@ q ORDER BY score DESC, a.id LIMIT :limit"
            ),
            {"query": " | ".join(f"{t}:*" for t in terms), "limit": limit},
        )
        return [
            {"id": r.id, "title": r.title, "body": r.body, "score": round(r.score, 3)} for r in rows
        ]
