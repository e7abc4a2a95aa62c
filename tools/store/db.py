"""Database access: one async engine, Alembic migrations at start-up, one writer at a time.

Reads run in parallel; writes go through :meth:`Database.write`, which serialises them inside
the process (as datasette does) and, on SQLite, takes the write lock up front (BEGIN IMMEDIATE)
so read-then-write transactions such as booking a slot cannot interleave.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def new_id(result: sa.CursorResult[Any]) -> int:
    """The primary key of the row an INSERT created."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("INSERT returned no primary key")
    return int(key[0])


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self._ensure_sqlite_dir(url)
            self.engine: AsyncEngine = create_async_engine(
                url, connect_args={"timeout": 30}, pool_pre_ping=False
            )
            event.listen(self.engine.sync_engine, "connect", self._on_sqlite_connect)
            event.listen(self.engine.sync_engine, "begin", self._on_sqlite_begin)
        else:
            self.engine = create_async_engine(url, pool_pre_ping=True)
        self._write_lock = asyncio.Lock()

    @staticmethod
    def _ensure_sqlite_dir(url: str) -> None:
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, manage transactions, so BEGIN IMMEDIATE works.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @staticmethod
    def _on_sqlite_begin(conn: Any) -> None:
        # Writers take SQLite's write lock up front; readers start a plain deferred transaction.
        immediate = conn.get_execution_options().get("frontdesk_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    async def migrate(self) -> None:
        """Apply Alembic migrations up to head (idempotent)."""
        from alembic import command
        from alembic.config import Config

        def upgrade(sync_connection: sa.Connection) -> None:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = sync_connection
            command.upgrade(config, "head")

        async with self._write_lock, self.engine.begin() as conn:
            await conn.run_sync(upgrade)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on normal exit, rolled back on any exception."""
        async with self._write_lock, self.engine.connect() as conn:
            conn = await conn.execution_options(frontdesk_write=True)
            async with conn.begin():
                yield conn

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def close(self) -> None:
        await self.engine.dispose()
