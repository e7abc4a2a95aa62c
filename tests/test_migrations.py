"""The Alembic migrations build exactly the schema tools/store/schema.py declares, on both
backends: a column, index or constraint added to one and not the other fails here. (The
knowledge base's full-text index is the migrations' own: an FTS5 table on SQLite, a generated
``tsvector`` column with its GIN index on PostgreSQL.)"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tools.store import schema
from tools.store.db import Database


def _differences(connection: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": False})
    return [
        diff
        for diff in compare_metadata(context, schema.metadata)
        if not _full_text_or_version(diff)
    ]


def _full_text_or_version(diff: Any) -> bool:
    kind = diff[0]
    if kind == "remove_table":
        return bool(diff[1].name == "alembic_version" or diff[1].name.startswith("kb_fts"))
    if kind == "remove_column":
        return bool(diff[2] == "kb_articles" and diff[3].name == "search")
    if kind == "remove_index":
        return bool(diff[1].table.name == "kb_articles")
    return False


async def test_migrations_at_head_match_the_declared_schema(db: Database):
    async with db.read() as conn:
        differences = await conn.run_sync(_differences)
    assert differences == []
