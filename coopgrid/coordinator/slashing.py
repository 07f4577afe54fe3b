"""Slashing quarantined workers, with public evidence.

When the trust layer quarantines a worker, the sealer's loop waits
``slash_delay_seconds`` (colluders who outvoted an honest worker are caught in
their turn meanwhile), then looks for a lie it can prove (:meth:`Store.provable_lie`: the worker's own signed result, in a
paid job, outvoted by at least a quorum of other workers' signed results on a
task now final, none of them quarantined, and provably different by its task
type's own rule). If there
is one, it writes the evidence bundle (:mod:`coopgrid.ledger.evidence`) as a
blob, records the slash, then slashes ``slash_fraction`` of the worker's stake
on chain with the bundle's sha256. The tokens go into the harmed job's escrow:
its funder gets them back with the unspent budget. A worker quarantined for an
unprovable reason (ties, tolerances, errors, a free job) is never slashed.

Crash safety: the slash is recorded (with its evidence) before it is sent; a
recorded slash without a transaction is looked up among the contract's
``Slashed`` events by its evidence hash before it is ever sent again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from coopgrid.blobs import BlobStore
from coopgrid.config import Settings
from coopgrid.errors import TransactionReverted
from coopgrid.ledger import Ledger, evidence
from coopgrid.store.base import Store

log = logging.getLogger(__name__)


class Slasher:
    def __init__(self, settings: Settings, store: Store, blobs: BlobStore, ledger: Ledger) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.ledger = ledger
        self._unprovable: set[int] = set()  # quarantined workers without a provable lie (checked again on restart)

    def bundle(self, worker_id: int) -> tuple[dict[str, Any], Any] | None:
        """The evidence bundle against a worker, and the lie it shows; None without a provable lie."""
        from coopgrid import tasks

        lie = self.store.provable_lie(worker_id)
        if lie is None:
            return None
        task_type = tasks.get(lie.task_type)
        if not evidence.provably_different(task_type, lie.output, lie.agreeing[0][2]):
            return None

        def shown(batch_id: int, output: bytes | None = None) -> dict[str, Any]:
            b = self.store.signed_batch(batch_id)
            index = next(
                i for i, r in enumerate(b.refs) if r.job_id == lie.job_id and r.task_index == lie.task_index
            )
            return evidence.batch_json(b.worker, b.lease_id, b.signature, b.refs, index, output)

        bundle = {
            "version": evidence.VERSION,
            "chain_id": self.settings.chain_id,
            "quorum": lie.quorum,
            "task": {"job_id": lie.job_id, "task_index": lie.task_index, "input_hash": lie.input_hash,
                     "model_hash": lie.model_hash, "task_type": lie.task_type},
            "liar": shown(lie.batch_id, lie.output),
            "agreeing": [shown(b, out if i == 0 else None) for i, (b, _, out) in enumerate(lie.agreeing)],
        }
        return bundle, lie

    def step(self) -> list[str]:
        """Slash every quarantined worker with a provable lie (once); returns the transactions sent."""
        sent = []
        for s in self.store.list_slashes():
            if s["tx_hash"] is None:  # recorded, maybe sent, before a crash
                sent += self._send(s["worker_id"], s["worker"], s["job_id"], s["evidence"], int(s["amount"]))
        now = time.time()
        for worker in self.store.unslashed_quarantined():
            if worker.id in self._unprovable:
                continue
            if worker.quarantined_at is not None and now - worker.quarantined_at < self.settings.slash_delay_seconds:
                continue  # time for whoever outvoted it to be caught, if they lied together
            made = self.bundle(worker.id)
            if made is None:
                self._unprovable.add(worker.id)
                log.info("worker %s is quarantined without a provable lie: not slashed", worker.address)
                continue
            bundle, lie = made
            stake = self.ledger.stake_of(worker.address)
            amount = int((stake.active + stake.unstaking) * self.settings.slash_fraction)
            if amount <= 0:
                self._unprovable.add(worker.id)
                log.info("worker %s lied provably but has no stake to slash", worker.address)
                continue
            data = evidence.encode(bundle)
            digest = self.blobs.put(data)
            self.store.add_slash(worker.id, lie.job_id, digest, amount, time.time())
            sent += self._send(worker.id, worker.address, lie.job_id, digest, amount)
        return sent

    def _send(self, worker_id: int, address: str, job_id: str, digest: str, amount: int) -> list[str]:
        funder = self.store.get_job(job_id).funder  # type: ignore[union-attr]
        for ev in self.ledger.money_events():
            if ev["event"] == "Slashed" and ev["evidence"].removeprefix("0x") == digest:
                self.store.set_slash_tx(worker_id, ev["tx"])
                return []
        try:
            tx = self.ledger.slash(address, amount, "0x" + job_id, funder, "0x" + digest)
        except TransactionReverted as exc:
            # the stake went down since (unstaked and withdrawn? then it was not slashable): take what is left
            stake = self.ledger.stake_of(address)
            left = int((stake.active + stake.unstaking) * self.settings.slash_fraction)
            if left <= 0 or left >= amount:
                log.error("slashing %s failed: %s", address, exc.message)
                raise
            tx = self.ledger.slash(address, left, "0x" + job_id, funder, "0x" + digest)
        self.store.set_slash_tx(worker_id, tx)
        log.warning("slashed %s of %s's stake into job %s's escrow (tx %s, evidence %s)", amount, address, job_id,
                    tx, digest)
        return [tx]
