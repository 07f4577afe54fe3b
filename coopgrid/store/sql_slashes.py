"""Slashing in the SQL store: the signed values behind a provable lie, and the slashes made.

A worker's result batch is signed over every result it holds, in order
(``result_batches.signed`` keeps the replica ids and output hashes; the
replicas give the rest), so any batch can be shown again, signature and all.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select, update

from coopgrid.protocol import ZERO_HASH, ResultRef
from coopgrid.store import schema as s
from coopgrid.store.base import Lie, SignedBatch, WorkerRecord
from coopgrid.store.schema import ResultStatus


class SlashQueries:
    """Mixed into SqlStore, which provides ``_read`` and ``_write``."""

    _read: Any
    _write: Any

    def provable_lie(self, worker_id: int) -> Lie | None:
        r, a = s.results, s.results.alias("accepted")
        q = (
            select(r.c.id, r.c.task_id, r.c.batch_id, r.c.output_hash, r.c.output, s.tasks.c.idx, s.tasks.c.input_hash,
                   s.jobs.c.id.label("job_id"), s.jobs.c.model_hash, s.jobs.c.task_type, s.jobs.c.policy,
                   s.jobs.c.funder, a.c.output_hash.label("accepted_hash"))
            .join(s.tasks, s.tasks.c.id == r.c.task_id)
            .join(s.jobs, s.jobs.c.id == r.c.job_id)
            .join(a, (a.c.task_id == r.c.task_id) & (a.c.status == ResultStatus.ACCEPTED.value) & a.c.final)
            .where(r.c.worker_id == worker_id, r.c.status == ResultStatus.INVALID.value, s.jobs.c.funder.is_not(None),
                   r.c.output.is_not(None), s.result_batches.c.signed.is_not(None))
            .join(s.result_batches, s.result_batches.c.id == r.c.batch_id)
            .order_by(r.c.id)
        )
        with self._read() as conn:
            for lie in conn.execute(q):
                quorum = int(json.loads(lie.policy).get("quorum", 1))
                others = conn.execute(
                    select(r.c.batch_id, r.c.output_hash, r.c.output, r.c.worker_id, r.c.status,
                           s.workers.c.quarantined_at)
                    .join(s.result_batches, s.result_batches.c.id == r.c.batch_id)
                    .join(s.workers, s.workers.c.id == r.c.worker_id)
                    .where(r.c.task_id == lie.task_id, r.c.worker_id != worker_id, r.c.output.is_not(None),
                           s.result_batches.c.signed.is_not(None))
                    .order_by(r.c.id)
                ).all()
                agreeing, seen = [], set()
                for o in others:
                    # a quarantined co-signer proves nothing: colluders who outvoted an honest worker
                    # are caught in their turn, and their majority then slashes no one
                    if o.output_hash == lie.accepted_hash and o.worker_id not in seen and o.quarantined_at is None \
                            and o.status in (ResultStatus.ACCEPTED.value, ResultStatus.VALID.value):
                        seen.add(o.worker_id)
                        agreeing.append((o.batch_id, o.output_hash, o.output))
                with_liar = 1 + len({o.worker_id for o in others if o.output_hash == lie.output_hash})
                if quorum < 2 or len(agreeing) < quorum or with_liar >= len(agreeing):
                    continue  # no quorum of signed results to show, or a tie: never evidence
                return Lie(
                    job_id=lie.job_id, task_index=lie.idx, input_hash=lie.input_hash,
                    model_hash=lie.model_hash or ZERO_HASH, task_type=lie.task_type, quorum=quorum,
                    funder=lie.funder, batch_id=lie.batch_id, output=lie.output, agreeing=agreeing,
                )
        return None

    def signed_batch(self, batch_id: int) -> SignedBatch:
        with self._read() as conn:
            b = conn.execute(
                select(s.result_batches, s.workers.c.address)
                .join(s.workers, s.workers.c.id == s.result_batches.c.worker_id)
                .where(s.result_batches.c.id == batch_id)
            ).one()
            items = json.loads(b.signed)
            rows = {
                row.id: row
                for row in conn.execute(
                    select(s.replicas.c.id, s.tasks.c.job_id, s.tasks.c.idx, s.tasks.c.input_hash, s.jobs.c.model_hash)
                    .join(s.tasks, s.tasks.c.id == s.replicas.c.task_id)
                    .join(s.jobs, s.jobs.c.id == s.tasks.c.job_id)
                    .where(s.replicas.c.id.in_([rid for rid, _ in items]))
                )
            }
        refs = [
            ResultRef(rows[rid].job_id, rows[rid].idx, rows[rid].input_hash, rows[rid].model_hash or ZERO_HASH, out)
            for rid, out in items
        ]
        return SignedBatch(b.address, b.lease_id, b.signature, refs)

    def unslashed_quarantined(self) -> list[WorkerRecord]:
        from coopgrid.store.sql import _worker

        q = select(s.workers).where(
            s.workers.c.quarantined_at.is_not(None), s.workers.c.id.not_in(select(s.slashes.c.worker_id))
        )
        with self._read() as conn:
            return [_worker(row) for row in conn.execute(q)]

    def add_slash(self, worker_id: int, job_id: str, evidence: str, amount: int, now: float) -> None:
        with self._write() as conn:
            conn.execute(insert(s.slashes).values(worker_id=worker_id, job_id=job_id, evidence=evidence,
                                                  amount=str(amount), created_at=now))

    def set_slash_tx(self, worker_id: int, tx_hash: str) -> None:
        with self._write() as conn:
            conn.execute(update(s.slashes).where(s.slashes.c.worker_id == worker_id).values(tx_hash=tx_hash))

    def list_slashes(self) -> list[dict[str, Any]]:
        q = select(s.slashes, s.workers.c.address).join(s.workers, s.workers.c.id == s.slashes.c.worker_id)
        with self._read() as conn:
            return [
                {"worker": r.address, "worker_id": r.worker_id, "job_id": r.job_id, "evidence": r.evidence,
                 "amount": r.amount, "tx_hash": r.tx_hash, "created_at": r.created_at}
                for r in conn.execute(q.order_by(s.slashes.c.id))
            ]
