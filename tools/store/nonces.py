"""Used media stream tokens, shared by every worker: a token's nonce is stored when it is used,
so the same token is refused by every worker afterwards (see telephony.tokens)."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from tools.store import schema
from tools.store.db import Database

#: Rows are kept this long past their token's expiry (clocks of several machines differ a bit).
KEEP_PAST_EXPIRY_SECS = 300.0


class StreamNonces:
    """The ``stream_nonces`` table; satisfies telephony.tokens.NonceLedger."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    async def use(self, nonce: str, expires_at: float) -> bool:
        """Record ``nonce`` as used; False when it was already (by any worker)."""
        try:
            async with self.db.write() as conn:
                await conn.execute(
                    schema.stream_nonces.insert().values(nonce=nonce, expires_at=expires_at)
                )
        except sa.exc.IntegrityError:
            return False
        return True

    async def purge(self) -> int:
        """Forget nonces of tokens expired a while ago (they are refused as expired anyway)."""
        cutoff = self._clock() - KEEP_PAST_EXPIRY_SECS
        t = schema.stream_nonces
        async with self.db.write() as conn:
            result = await conn.execute(t.delete().where(t.c.expires_at < cutoff))
            return int(result.rowcount or 0)
