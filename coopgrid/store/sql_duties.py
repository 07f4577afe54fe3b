"""What several coordinator processes on one database agree through (a mixin of :class:`SqlStore`).

Periodic duties go to one process at a time through a lease row per duty
(Oban's peers table: holder and expiry, renewed by the holder, taken over once
expired) rather than PostgreSQL advisory locks: an advisory lock lives in one
session, so it is lost silently when a pooled connection is recycled or
pgbouncer hands the session to someone else, and it cannot be seen by an
operator with a plain SELECT. Request nonces are rows with a unique key, so
a replay to any process of the grid is refused. Validation rounds lock their
tasks' rows, so a task is decided once whichever process received its results.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from coopgrid.store import schema as s
from coopgrid.store.schema import ResultStatus


class DutyQueries:
    """Mixed into SqlStore, which provides ``engine``, ``dialect``, ``_read`` and ``_write``."""

    engine: Any
    dialect: str
    _read: Any
    _write: Any
    _held: threading.local

    @property
    def shared(self) -> bool:
        return self.dialect == "postgresql"

    # -- duties -------------------------------------------------------------------

    def hold_duty(self, name: str, holder: str, ttl: float, now: float) -> bool:
        with self._write() as conn:
            # compare-and-set: renew our own lease or take an expired one; the row lock taken by the
            # UPDATE orders two processes racing for the same expired lease, and the loser matches nothing
            taken = conn.execute(
                update(s.duty_leases)
                .where(s.duty_leases.c.name == name)
                .where((s.duty_leases.c.holder == holder) | (s.duty_leases.c.expires_at < now))
                .values(holder=holder, expires_at=now + ttl)
            ).rowcount
            if taken:
                return True
            if conn.execute(select(s.duty_leases.c.name).where(s.duty_leases.c.name == name)).first():
                return False
        try:  # nobody ever held it: the first insert wins, the others hit the primary key
            with self._write() as conn:
                conn.execute(insert(s.duty_leases).values(name=name, holder=holder, expires_at=now + ttl))
            return True
        except IntegrityError:
            return False

    def release_duty(self, name: str, holder: str) -> None:
        with self._write() as conn:
            conn.execute(
                delete(s.duty_leases).where(s.duty_leases.c.name == name, s.duty_leases.c.holder == holder)
            )

    def duty_holders(self, now: float) -> dict[str, str]:
        with self._read() as conn:
            rows = conn.execute(select(s.duty_leases).where(s.duty_leases.c.expires_at >= now)).all()
        return {r.name: r.holder for r in rows}

    # -- nonces -------------------------------------------------------------------

    def remember_nonce(self, address: str, nonce: str, expires_at: float) -> bool:
        try:
            with self._write() as conn:
                if self.dialect == "postgresql":
                    # one more commit per worker request: not worth a WAL flush of its own. A nonce lost to a
                    # database crash only reopens, for the last instant's requests, a replay that the
                    # lease and result rows (committed durably) refuse anyway
                    conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
                conn.execute(insert(s.request_nonces).values(address=address, nonce=nonce, expires_at=expires_at))
        except IntegrityError:
            return False
        return True

    def purge_nonces(self, now: float) -> int:
        with self._write() as conn:
            return conn.execute(delete(s.request_nonces).where(s.request_nonces.c.expires_at < now)).rowcount

    # -- validation rounds --------------------------------------------------------------

    @contextlib.contextmanager
    def locked_tasks(self, task_ids: Sequence[int] | None) -> Iterator[None]:
        if not self.shared or getattr(self._held, "conn", None) is not None:
            yield  # SQLite: one process, whose validator serialises its rounds
            return
        with self._write() as conn:
            if task_ids is None:
                ids = sorted(set(conn.execute(
                    select(s.results.c.task_id).where(s.written_out(s.results.c.status, ResultStatus.PENDING.value))
                ).scalars()))
            else:
                ids = sorted(set(task_ids))
            if ids:
                # in id order, so two rounds over overlapping tasks cannot deadlock each other; NO KEY UPDATE,
                # the lock an UPDATE of these rows takes: rounds exclude each other, while inserts of results
                # and replicas (whose foreign keys take KEY SHARE on their task) go on
                conn.execute(
                    text("SELECT id FROM tasks WHERE id IN :ids ORDER BY id FOR NO KEY UPDATE").bindparams(
                        bindparam("ids", expanding=True)
                    ),
                    {"ids": ids},
                )
            self._held.conn = conn
            try:
                yield
            finally:
                self._held.conn = None
