"""Benchmark the store on SQLite and PostgreSQL: what a call's tools and records cost.

    .venv/bin/python -m bench.store [--database URL ...] [--rounds 3]

Without ``--database`` it runs on a temporary SQLite file and on a throw-away PostgreSQL
cluster (Debian's, as the tests start it), rounds interleaved. Each round, on a fresh migrated
and seeded database: sequential bookings through the real ``book_appointment`` (each its own
slot), availability checks, knowledge searches, a call's turn writes, and 50 concurrent booking
attempts for 5 slots (wall time; exactly 5 must win). Prints median and p90 per operation (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path

from tests.conftest import BUSINESS_YAML, SUNDAY_MORNING, make_ctx, pg_database
from tests.postgres import start_cluster
from tools.actions.calendar import book_appointment, check_availability
from tools.actions.knowledge import search_knowledge_base
from tools.errors import ToolError
from tools.store.business import seed_business
from tools.store.calls import CallStore
from tools.store.db import Database

OPS = 30
HOURS = ["9am", "10am", "11am", "1pm", "2pm", "3pm", "4pm", "5pm"]
QUERIES = ["where can I park", "do you take apple pay", "cancellation policy", "gift cards"]


async def _timed(samples: dict[str, list[float]], name: str, op: Awaitable[object]) -> None:
    """Await ``op`` (a coroutine: nothing of it runs before this) and record its time."""
    started = time.perf_counter()
    await op
    samples.setdefault(name, []).append((time.perf_counter() - started) * 1000)


async def one_round(url: str, samples: dict[str, list[float]]) -> None:
    db = Database(url)
    await db.migrate()
    await seed_business(db, BUSINESS_YAML)
    try:
        for i in range(OPS):
            day = SUNDAY_MORNING + timedelta(days=1 + i // 8)
            when = f"{day:%A %B %d} at {HOURS[i % len(HOURS)]}"
            ctx = make_ctx(db, phone=f"+1413555{i:04d}")
            await _timed(samples, "book", book_appointment(ctx, "haircut", when))
            await _timed(samples, "availability", check_availability(ctx, "haircut", when))
            query = QUERIES[i % len(QUERIES)]
            await _timed(samples, "kb search", search_knowledge_base(ctx, query))
        calls = CallStore(db)
        call_id = await calls.start_call(call_sid=f"CA{time.monotonic_ns():032x}")
        for i in range(OPS):
            turn = calls.add_turn(call_id, role="caller", text=f"turn {i}", timings={"t": i})
            await _timed(samples, "turn write", turn)
        await _timed(samples, "50 racing for 5 slots", _race(db))
    finally:
        await db.close()


async def _race(db: Database) -> None:
    times = ["Friday at 10am", "Friday at 11am", "Friday at noon", "Friday at 1pm", "Friday at 2pm"]
    attempts = [
        book_appointment(make_ctx(db, phone=f"+1413666{i:04d}"), "beard trim", times[i % 5])
        for i in range(50)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    wins = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, ToolError) and r.code == "slot_taken"]
    if len(wins) != 5 or len(lost) != 45:
        raise SystemExit(f"race: {len(wins)} bookings, {len(lost)} refusals: {results}")


def _report(label: str, samples: dict[str, list[float]]) -> None:
    print(f"\n{label}")
    for name, values in samples.items():
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
        print(f"  {name:24} median {statistics.median(values):7.1f} ms   p90 {p90:7.1f} ms")


async def main(urls: list[str], rounds: int) -> None:
    cluster = None
    with tempfile.TemporaryDirectory(prefix="frontdesk-bench-") as tmp:
        if not urls:
            cluster = start_cluster()
            urls = ["sqlite", "postgresql"]
        try:
            results: dict[str, dict[str, list[float]]] = {u: {} for u in urls}
            for n in range(rounds):
                for url in urls:
                    real = url
                    if url == "sqlite":
                        real = f"sqlite+aiosqlite:///{Path(tmp) / f'bench{n}.db'}"
                    elif url == "postgresql" and cluster is not None:
                        real = await pg_database(cluster, template="template0")
                    await one_round(real, results[url])
            for url, samples in results.items():
                _report(url.split("@")[-1], samples)
        finally:
            if cluster is not None:
                cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", action="append", default=[], help="a URL (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.database, args.rounds))
