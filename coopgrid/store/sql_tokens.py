"""API tokens beyond issuing and checking them: listing and revoking (a mixin of :class:`SqlStore`).

A revoked token keeps its row, because its jobs and blob grants still name it;
what it loses is its secret: the stored sha256 is replaced by a marker that no
sha256 hex digest can equal, so the old secret never authenticates again.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select, update

from coopgrid.store import schema as s
from coopgrid.store.base import TokenInfo

#: stored in place of a revoked token's secret hash (not hex, so never a sha256)
REVOKED = "revoked-"


def revoked_marker() -> str:
    return REVOKED + secrets.token_hex(28)  # 64 characters, like a digest: fits the column, stays unique


class TokenQueries:
    """Mixed into SqlStore, which provides ``_read`` and ``_write``."""

    _read: Any
    _write: Any

    def list_tokens(self) -> list[TokenInfo]:
        with self._read() as conn:
            rows = conn.execute(select(s.tokens).order_by(s.tokens.c.id)).all()
        return [
            TokenInfo(id=r.id, name=r.name, role=r.role, created_at=r.created_at,
                      revoked=r.secret_hash.startswith(REVOKED))
            for r in rows
        ]

    def revoke_token(self, token_id: int) -> bool:
        with self._write() as conn:
            n = conn.execute(
                update(s.tokens)
                .where(s.tokens.c.id == token_id, s.tokens.c.secret_hash.not_like(REVOKED + "%"))
                .values(secret_hash=revoked_marker())
            ).rowcount
        return bool(n)
