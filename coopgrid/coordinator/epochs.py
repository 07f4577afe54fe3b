"""Epoch sealing: accepted results and rewards into Merkle roots on chain.

The store is the system of record. Each epoch moves through

    open     results assigned to it (one transaction; leasing goes on untouched)
    sealed   both trees built and their StandardMerkleTree dumps stored as blobs
    sent     the commitEpoch transaction signed and stored *before* it is broadcast
    committed its receipt seen (block recorded)

and every step is idempotent, so after a crash (even between broadcasting and
seeing the receipt) :meth:`Sealer.step` picks up where it was: an epoch the
chain already has is marked, a stored transaction is broadcast again (the node
ignores a duplicate), and because the contract only accepts the next epoch
number nothing is ever committed twice. While the chain is unreachable the
sealer backs off and retries; leasing and results never wait for it.

Failures tied to an epoch's *content* (a reward sum that cannot be a uint256,
a commit the contract refuses for what it carries) are isolated instead of
retried forever: the jobs at fault are held out of sealing (``jobs.seal_error``,
logged and listed by ``coopgrid ledger status``), their results leave the
epoch, which is built again without them (or dropped if nothing is left, its
number going to the next epoch). Nothing of that epoch had reached the chain,
so the strict sequence of epoch numbers is kept.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from coopgrid.blobs import BlobStore
from coopgrid.config import Settings
from coopgrid.errors import (
    ChainUnavailable,
    Conflict,
    InvalidInput,
    LedgerError,
    SealingError,
    TransactionRejected,
    TransactionReverted,
)
from coopgrid.ledger import Ledger, SignedTx
from coopgrid.coordinator import rewards
from coopgrid.ledger import merkle
from coopgrid.ledger.money import job_key
from coopgrid.protocol import ZERO_HASH
from coopgrid.store.base import EpochRecord, SealedResult, Store
from coopgrid.store.schema import EpochState

log = logging.getLogger(__name__)


#: Reverts of commitEpoch that say nothing about the epoch's content: the chain's state or our key.
_NOT_CONTENT = ("epoch out of sequence", "caller is not the owner")


def _content_refusal(reason: str | None) -> bool:
    """Whether the contract refused a commit for what it carries (not for its number or sender)."""
    return bool(reason) and not any(r in reason for r in _NOT_CONTENT)


#: TEST FACILITY, never set in production. COOPGRID_TEST_CRASH=before-send or after-send makes
#: the sealer SIGKILL its own process right after an epoch's transaction is stored (before it is
#: broadcast) or right after it is broadcast (before its receipt is seen): the crashes that the
#: reconciliation on start exists for, driven by tests/acceptance/test_coordinator_crash.py.
TEST_CRASH_VARIABLE = "COOPGRID_TEST_CRASH"
#: results trees kept for proofs and sealing, in leaves (the newest tree is kept whatever its size)
TREE_CACHE_LEAVES = 40_000


def _test_crash(point: str) -> None:
    if os.environ.get(TEST_CRASH_VARIABLE) == point:
        log.warning("%s=%s: killing this process", TEST_CRASH_VARIABLE, point)
        os.kill(os.getpid(), signal.SIGKILL)


def leaf_value(r: SealedResult) -> tuple[bytes, int, bytes, bytes, bytes]:
    """The result leaf (jobId, taskIndex, modelHash, inputHash, outputHash) of a result."""
    return merkle.result_leaf(r.job_id, r.task_index, r.model_hash or ZERO_HASH, r.input_hash, r.output_hash)


class Sealer:
    def __init__(self, settings: Settings, store: Store, blobs: BlobStore, ledger: Ledger) -> None:
        from coopgrid.coordinator.escrow import Escrow
        from coopgrid.coordinator.slashing import Slasher

        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.ledger = ledger
        self.escrow = Escrow(settings, store, ledger)
        self.slasher = Slasher(settings, store, blobs, ledger)
        self._lock = threading.Lock()
        self._trees: dict[int, merkle.StandardMerkleTree] = {}
        #: sealing rounds that failed, by cause (exported as coopgrid_chain_errors_total)
        self.failures: dict[str, int] = {"unavailable": 0, "ledger": 0, "other": 0}

    # -- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event, lead: Callable[[], bool] | None = None, leading: bool = True) -> None:
        """Seal and commit until ``stop`` is set; back off while the chain is down.

        ``lead``: whether this process is the grid's sealer now (asked every round; several processes
        share a database); ``leading``: whether it was when the loop starts. A process that becomes the
        sealer reconciles with the chain first, as at start: the last one may have died mid-commit."""
        delay = 1.0
        while not stop.wait(delay):
            try:
                if lead is not None:
                    was, leading = leading, lead()
                    if not leading:
                        delay = 1.0
                        continue
                    if not was:
                        self.reconcile()
                self.step()
                delay = 1.0
            except ChainUnavailable as exc:
                self.failures["unavailable"] += 1
                delay = min(delay * 2, 60.0)
                log.warning("chain unreachable (%s); sealing again in %.0fs", exc.message, delay)
            except LedgerError as exc:
                self.failures["ledger"] += 1
                delay = min(delay * 2, 60.0)
                log.error("sealing failed: %s; retrying in %.0fs", exc.message, delay)
            except Exception:
                self.failures["other"] += 1
                delay = min(delay * 2, 60.0)
                log.exception("sealing failed; retrying in %.0fs", delay)

    def step(self, force: bool = False) -> list[EpochRecord]:
        """One round: open an epoch if one is due (or ``force``), then drive every
        unfinished epoch to committed, in order. Returns the epochs committed."""
        with self._lock:
            count, oldest = self.store.unsealed()
            due = count >= self.settings.seal_every_results or (
                oldest is not None and time.time() - oldest >= self.settings.seal_every_seconds
            )
            unsent = self.store.list_epochs([EpochState.OPEN, EpochState.SEALED])
            if count and (due or force) and not unsent:  # one epoch at a time is built and checked
                number = self.store.open_epoch(time.time())
                log.info("epoch %s opened with %s results", number, count)
            done = []
            for epoch in self.store.list_epochs([EpochState.OPEN, EpochState.SEALED, EpochState.SENT]):
                committed = self._advance(epoch)
                if committed is not None:
                    done.append(committed)
            self._anchor_models()
            self.escrow.activate_funded()
            self.slasher.step()  # before closing: a slash credits the harmed job's escrow
            self.escrow.close_paid()
            return done

    def reconcile(self) -> list[EpochRecord]:
        """Bring store and chain into agreement (run at start, before serving)."""
        with self._lock:
            done = [
                self._advance(e) for e in self.store.list_epochs([EpochState.OPEN, EpochState.SEALED, EpochState.SENT])
            ]
            return [e for e in done if e is not None]

    # -- one epoch ------------------------------------------------------------------------

    def _advance(self, e: EpochRecord) -> EpochRecord | None:
        """Drive one epoch to committed; None when its content was held out and nothing was left."""
        n = e.number
        if e.state == EpochState.OPEN:
            try:
                self._build(n)
            except (SealingError, InvalidInput, ValueError, OverflowError) as exc:
                return self._isolate(e, exc)
            e = self._get(n)
        if e.state in (EpochState.SEALED, EpochState.SENT) and self.ledger.last_epoch() >= n:
            return self._mark_committed(e)
        if e.state == EpochState.SEALED:
            assert e.results_root and e.rewards_root
            try:
                signed = self.ledger.prepare_commit_epoch(
                    n, e.results_root, e.rewards_root, e.result_count, self.epoch_spends(e)
                )
            except TransactionReverted as exc:
                if exc.tx_hash is None and _content_refusal(exc.reason):
                    return self._isolate(e, exc)
                raise
            # stored before it is broadcast: a crash after this point re-sends the same transaction
            self.store.update_epoch(n, state=EpochState.SENT.value, tx_hash=signed.tx_hash, raw_tx=signed.raw)
            _test_crash("before-send")
            e = self._get(n)
        assert e.tx_hash and e.raw_tx
        try:
            self.ledger.broadcast(SignedTx(tx_hash=e.tx_hash, raw=e.raw_tx, nonce=-1, sender=self.ledger.account))
        except TransactionRejected:
            if self.ledger.last_epoch() >= n:
                return self._mark_committed(e)
            # the stored transaction can no longer be mined (its nonce was used): sign it anew
            log.warning("epoch %s: stored transaction %s was rejected; signing a new one", n, e.tx_hash)
            self.store.update_epoch(n, state=EpochState.SEALED.value, tx_hash=None, raw_tx=None)
            return self._advance(self._get(n))
        _test_crash("after-send")
        try:
            receipt = self.ledger.wait_receipt(e.tx_hash)
        except TransactionReverted as exc:
            if not _content_refusal(exc.reason) or self.ledger.last_epoch() >= n:
                raise
            # mined and refused (the chain moved between the check and the block): it never landed
            self.store.update_epoch(n, state=EpochState.SEALED.value, tx_hash=None, raw_tx=None)
            return self._isolate(self._get(n), exc)
        self.store.update_epoch(
            n, state=EpochState.COMMITTED.value, block_number=receipt.block_number, committed_at=time.time()
        )
        log.info(
            "epoch %s committed: %s results in block %s (tx %s)", n, e.result_count, receipt.block_number, e.tx_hash,
            extra={"event": "epoch_committed", "epoch": n, "results": e.result_count,
                   "block": receipt.block_number, "tx": e.tx_hash},
        )
        return self._get(n)

    def _build(self, n: int) -> None:
        """Both trees of an open epoch, and its jobs' cumulative spends, dumped as blobs; the epoch
        becomes sealed. Rewards follow rewards.SHARE_RULE: each task's R once, so a job spends
        R per accepted task, never more than it was funded with."""
        self._trees.pop(n, None)  # an epoch rebuilt after isolation has other leaves
        results_tree = self.results_tree(n)
        earned, spent = rewards.epoch_rewards(self.store.epoch_shares(n))
        previous_totals, previous_spends = self._cumulative(n - 1)
        totals = rewards.add(previous_totals, earned)
        too_big = sorted(a for a, t in totals.items() if not 0 <= t < 2**256)
        if too_big:
            raise SealingError(f"the cumulative rewards of {', '.join(too_big)} do not fit in a uint256")
        spends = dict(previous_spends)
        for job_id, amount in spent.items():
            job = self.store.get_job(job_id)
            if job is None or not job.funder:
                raise SealingError(f"job {job_id} pays rewards but has no funded escrow", job_id=job_id)
            funder, before = spends.get(job_id, (job.funder, 0))
            spends[job_id] = (funder, before + amount)
        rewards_tree = merkle.reward_tree(totals) if totals else None
        self.store.update_epoch(
            n,
            state=EpochState.SEALED.value,
            results_root=results_tree.root,
            rewards_root=rewards_tree.root if rewards_tree else "0x" + ZERO_HASH,
            # orjson: a 35,000-leaf dump is ~10 MB of JSON, written per epoch beside the grid's work
            # (every number in a dump is a string, as the JS library writes it, so none is too big for it)
            results_dump=self.blobs.put(orjson.dumps(results_tree.dump())),
            rewards_dump=self.blobs.put(orjson.dumps(rewards_tree.dump())) if rewards_tree else None,
            spends_dump=self.blobs.put(orjson.dumps({j: [f, str(a)] for j, (f, a) in sorted(spends.items())})),
        )

    def _cumulative(self, n: int) -> tuple[dict[str, int], dict[str, tuple[str, int]]]:
        """Every worker's cumulative reward and every job's (funder, cumulative spend) up to epoch ``n``."""
        e = self.store.get_epoch(n) if n >= 1 else None
        if e is None:
            return {}, {}
        totals: dict[str, int] = {}
        if e.rewards_dump:
            tree = merkle.StandardMerkleTree.load(orjson.loads(self.blobs.get(e.rewards_dump)))
            totals = {account: int(amount) for account, amount in tree.values}
        spends: dict[str, tuple[str, int]] = {}
        if e.spends_dump:
            spends = {j: (f, int(a)) for j, (f, a) in orjson.loads(self.blobs.get(e.spends_dump)).items()}
        return totals, spends

    def epoch_spends(self, e: EpochRecord) -> list[tuple[int, int]]:
        """The (escrow key, cumulative spend) of the jobs epoch ``e`` touches, for its commit."""
        _, now = self._cumulative(e.number)
        _, before = self._cumulative(e.number - 1)
        return sorted(
            (job_key(job_id, funder), amount)
            for job_id, (funder, amount) in now.items()
            if before.get(job_id, (funder, 0))[1] != amount
        )

    def _isolate(self, e: EpochRecord, exc: Exception) -> EpochRecord | None:
        """Hold the jobs that make epoch ``e`` unsealable, then seal what is left of it."""
        n = e.number
        why = getattr(exc, "message", None) or str(exc)
        reasons = self._job_problems(n)
        if not reasons:  # no single job explains it: hold them all rather than block every later epoch
            reasons = {job_id: f"epoch {n} could not be sealed with it: {why}" for job_id in self.store.epoch_jobs(n)}
        for job_id, reason in sorted(reasons.items()):
            log.error("epoch %s: job %s is held out of sealing: %s", n, job_id, reason)
        self.store.hold_jobs(reasons, n)
        self._trees.pop(n, None)
        again = self.store.get_epoch(n)
        if again is None:
            log.warning("epoch %s held nothing else; the next epoch takes its number", n)
            return None
        return self._advance(again)

    def _job_problems(self, n: int) -> dict[str, str]:
        """The jobs of epoch ``n`` that cannot be sealed, each with the reason (checked job by job)."""
        problems = {}
        bound = self.settings.max_reward_per_task
        for job_id in self.store.epoch_jobs(n):
            job = self.store.get_job(job_id)
            if job is not None and not 0 <= job.reward_per_task <= bound:
                problems[job_id] = (
                    f"its reward per task ({job.reward_per_task}) is above the bound of {bound} "
                    "(max_reward_per_task); it was accepted before rewards were bounded"
                )
            elif job is not None and job.reward_per_task and not job.funder:
                problems[job_id] = "it pays rewards but has no funder (a job from before escrow)"
        e = self.store.get_epoch(n)
        if e is not None and e.spends_dump:  # built: is any spend beyond what its escrow holds now?
            _, spends = self._cumulative(n)
            for job_id, (funder, amount) in spends.items():
                escrow = self.ledger.job_escrow("0x" + job_id, funder)
                if amount > escrow.budget:
                    problems[job_id] = (
                        f"its spend of {amount} is above its escrow's budget of {escrow.budget} "
                        f"(funded by {funder}; refunded early?)"
                    )
        return problems

    def _mark_committed(self, e: EpochRecord) -> EpochRecord:  # noqa: D401
        commit = self.ledger.epoch_commit(e.number)
        if commit is None or commit.results_root != e.results_root:
            raise LedgerError(
                f"the chain holds an epoch {e.number} that is not this coordinator's "
                f"(root {commit.results_root if commit else '?'} vs {e.results_root}); "
                "is another coordinator using this contract?",
                epoch=e.number,
            )
        self.store.update_epoch(
            e.number,
            state=EpochState.COMMITTED.value,
            tx_hash=commit.tx_hash,
            block_number=commit.block_number,
            committed_at=time.time(),
        )
        log.info("epoch %s found on chain in block %s", e.number, commit.block_number)
        return self._get(e.number)

    def _get(self, n: int) -> EpochRecord:
        e = self.store.get_epoch(n)
        assert e is not None
        return e

    # -- models -----------------------------------------------------------------------------

    def _anchor_models(self) -> None:
        for m in self.store.models_to_anchor():
            published = self.ledger.model_published("0x" + m.hash)
            if published is None:
                tx = self.ledger.publish_model("0x" + m.hash)
                published = self.ledger.model_published("0x" + m.hash)
                log.info("model %s anchored on chain (tx %s)", m.hash, tx)
            else:
                tx = m.anchor_tx or ""
            self.store.set_model_anchor(m.hash, tx, published.block_number if published else None)

    # -- proofs -------------------------------------------------------------------------------

    def results_tree(self, n: int) -> merkle.StandardMerkleTree:
        """The epoch's results tree (cached; rebuilt from the store, or loaded from its dump)."""
        tree = self._trees.get(n)
        if tree is None:
            e = self.store.get_epoch(n)
            if e is not None and e.results_dump:
                tree = merkle.StandardMerkleTree.load(orjson.loads(self.blobs.get(e.results_dump)))
            else:
                tree = merkle.result_tree(leaf_value(r) for r in self.store.epoch_results(n))
            self._trees[n] = tree
            # bounded by leaves, not trees: an epoch's tree holds ~1 KB of Python objects a leaf, and
            # nine epochs of 20,000 results each held ~180 MB in a million-task job
            while len(self._trees) > 1 and sum(map(len, self._trees.values())) > TREE_CACHE_LEAVES:
                self._trees.pop(next(iter(self._trees)))
        return tree

    def rewards_tree(self, n: int) -> merkle.StandardMerkleTree | None:
        e = self.store.get_epoch(n)
        if e is None or not e.rewards_dump:
            return None
        return merkle.StandardMerkleTree.load(orjson.loads(self.blobs.get(e.rewards_dump)))

    def result_proof(self, job_id: str, task_index: int) -> dict[str, Any] | None:
        """Everything needed to check one task's accepted result on chain, or None if not committed."""
        r = self.store.sealed_result(job_id, task_index)
        if r is None:  # a job past its retention: its rows are in its archive now
            job = self.store.get_job(job_id)
            if job is not None and job.archive_hash:
                from coopgrid.coordinator.retention import archived_result

                r = archived_result(self.blobs, job, task_index)
        if r is None or r.epoch is None:
            return None
        e = self.store.get_epoch(r.epoch)
        if e is None or e.state != EpochState.COMMITTED:
            return None
        tree = self.results_tree(r.epoch)
        value = leaf_value(r)
        return {
            "epoch": r.epoch,
            "leaf": {
                "jobId": "0x" + r.job_id,
                "taskIndex": r.task_index,
                "modelHash": "0x" + (r.model_hash or ZERO_HASH),
                "inputHash": "0x" + r.input_hash,
                "outputHash": "0x" + r.output_hash,
            },
            "leaf_hash": tree.leaf_hash(value),
            "proof": tree.get_proof(value),
            "results_root": e.results_root,
            "tx_hash": e.tx_hash,
            "block_number": e.block_number,
            "worker": r.worker_address,
            "contract": self.ledger.address,
            "chain_id": self.ledger.chain_id,
        }

    def reward_status(self, address: str) -> dict[str, Any]:
        """Sealed, claimed, claimable and pending rewards of an address, with the claim proof."""
        committed = self.store.list_epochs([EpochState.COMMITTED])
        latest = committed[-1] if committed else None
        sealed, proof = 0, None
        if latest is not None:
            tree = self.rewards_tree(latest.number)
            if tree is not None:
                for i, (account, amount) in enumerate(tree.values):
                    if account.lower() == address.lower():
                        sealed, proof = int(amount), tree.get_proof(i)
                        break
        claimed = self.ledger.claimed(address)
        return {
            "address": address,
            "epoch": latest.number if latest else None,
            "cumulative": str(sealed),
            "claimed": str(claimed),
            "claimable": str(max(sealed - claimed, 0)),
            # accepted or valid, provisional included, not yet in a committed epoch
            "pending": str(self.store.pending_rewards().get(address, 0)),
            "balance": str(self.ledger.balance_of(address)),
            "proof": proof,
        }

    def claim(self, address: str) -> dict[str, Any]:
        """Send ``address``'s claim for everything committed, paid by the coordinator's key.

        Under the sealer's lock, so a claim never takes the nonce of an epoch
        transaction that is signed but not yet broadcast.
        """
        with self._lock:
            status = self.reward_status(address)
            if status["proof"] is None or int(status["claimable"]) == 0:
                raise Conflict(
                    f"nothing to claim for {address}: {status['claimed']} claimed of {status['cumulative']} "
                    f"committed, {status['pending']} pending in epochs not yet committed",
                    address=address,
                )
            tx = self.ledger.claim(None, address, int(status["cumulative"]), status["proof"])
            return {**self.reward_status(address), "tx_hash": tx, "claimed_now": status["claimable"]}
