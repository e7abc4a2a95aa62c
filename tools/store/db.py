"""Database access: one async engine, Alembic migrations at start-up, two backends, one API.

- **SQLite** (aiosqlite, the embedded default): reads run in parallel; writes go through
  :meth:`Database.write`, which serialises them inside the process (as datasette does) and
  takes SQLite's write lock up front (BEGIN IMMEDIATE), so read-then-write transactions such as
  booking a slot cannot interleave.
- **PostgreSQL** (asyncpg): no process lock at all, since several workers share the database.
  Writes are plain READ COMMITTED transactions; what must not interleave is guarded by the
  database itself (the appointments' exclusion constraint, unique keys) or by a transaction-level
  advisory lock (``write(serial=...)``, migrations).

Everything else (the SQL per record kind) is written once against SQLAlchemy Core and runs on
both; the few places dialects differ ask :attr:`Database.is_sqlite` or the connection's dialect.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: PostgreSQL error codes the store tells apart (``SQLSTATE``).
EXCLUSION_VIOLATION = "23P01"
UNIQUE_VIOLATION = "23505"
DEADLOCK_DETECTED = "40P01"


def new_id(result: sa.CursorResult[Any]) -> int:
    """The primary key of the row an INSERT created."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("INSERT returned no primary key")
    return int(key[0])


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def database_url(url: str) -> str:
    """``url`` with the async driver named: ``postgresql://`` (or ``postgres://``) becomes
    ``postgresql+asyncpg://``, ``sqlite://`` becomes ``sqlite+aiosqlite://``; URLs that name
    a driver already are kept."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def sqlstate(error: BaseException) -> str:
    """The SQLSTATE of a failed statement (``""`` when the driver gives none, as SQLite's)."""
    seen: BaseException | None = error
    while seen is not None:
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str) and code:
            return code
        seen = getattr(seen, "orig", None) or seen.__cause__
    return ""


def advisory_key(name: str) -> int:
    """A stable 32-bit key for ``pg_advisory_xact_lock`` from a readable name."""
    return zlib.crc32(f"frontdesk:{name}".encode())


class Database:
    """The one handle on the database: ``read()`` and ``write()`` connections, ``migrate()``.

    ``url`` is any SQLAlchemy URL of the two backends (see :func:`database_url`)."""

    def __init__(self, url: str) -> None:
        self.url = database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.is_postgresql = self.url.startswith("postgresql")
        if not (self.is_sqlite or self.is_postgresql):
            raise ValueError(
                f"FRONTDESK_DATABASE must be a sqlite:// or postgresql:// URL, not {url!r}"
            )
        if self.is_sqlite:
            self._ensure_sqlite_dir(self.url)
            self.engine: AsyncEngine = create_async_engine(
                self.url, connect_args={"timeout": 30}, pool_pre_ping=False
            )
            event.listen(self.engine.sync_engine, "connect", self._on_sqlite_connect)
            event.listen(self.engine.sync_engine, "begin", self._on_sqlite_begin)
        else:
            self.engine = create_async_engine(self.url, pool_pre_ping=True)
        self._write_lock = asyncio.Lock()
        #: Told the operation's name whenever work on the database is tried again (the app
        #: counts them in its metrics); does nothing by default.
        self.on_retry: Callable[[str], None] = lambda _operation: None

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
        """Apply Alembic migrations up to head (idempotent). Several processes may call it at
        once: on PostgreSQL the first takes an advisory lock and migrates, the others wait for
        it and find nothing left to do."""
        from alembic import command
        from alembic.config import Config

        def upgrade(sync_connection: sa.Connection) -> None:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = sync_connection
            command.upgrade(config, "head")

        async with self.write(serial="migrate") as conn:
            await conn.run_sync(upgrade)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self, serial: str = "") -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on normal exit, rolled back on any exception.

        ``serial`` names work that must not run in two transactions at once, in any process
        (seeding, migrating): on PostgreSQL the transaction first takes the advisory lock of
        that name; on SQLite every write is serial already."""
        if self.is_sqlite:
            async with self._write_lock, self.engine.connect() as conn:
                conn = await conn.execution_options(frontdesk_write=True)
                async with conn.begin():
                    yield conn
            return
        async with self.engine.connect() as conn, conn.begin():
            if serial:
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(serial)}
                )
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
