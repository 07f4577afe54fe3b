"""Jobs in, work units out: submission, leasing, results and reissue.

The scheduler turns a job into tasks (through its task type's ``split``),
hands replicas out in batched leases, checks each result batch's EIP-712
signature against the values it leased, and records results. Expired
leases are reaped and their tasks reissued to other workers.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coopgrid import tasks
from coopgrid.blobs import BlobStore
from coopgrid.config import REWARD_CEILING, Settings
from coopgrid.datasets import Dataset
from coopgrid.limits import DatasetLimits
from coopgrid.memory import release_unused
from coopgrid.coordinator.access import can_read, unreadable_dataset
from coopgrid.coordinator.metrics import Metrics
from coopgrid.coordinator.trust import TrustPolicy, gold_probability, may_audit, record_threshold
from coopgrid.coordinator.validation import Validator
from coopgrid.coordinator.wakeup import Wakeup
from coopgrid.errors import (
    AuthError, CoopgridError, DatasetError, Forbidden, IntegrityError, InvalidInput, JobNotFound, LeaseError,
)
from coopgrid.gold import MAX_GOLD
from coopgrid.identity import recover_batch_signer
from coopgrid.protocol import ZERO_HASH, LeaseRequest, ResultBatch, ResultRef, b64decode, b64encode, sha256_hex
from coopgrid.registry import ModelRegistry
from coopgrid.store.base import (
    IncomingResult, JobRecord, NewGoldTask, NewJob, NewTask, RecordOutcome, Store, Token, WorkerRecord,
)
from coopgrid.store.schema import JobState

log = logging.getLogger(__name__)

#: most further shards one job may name (each at most one upload)
MAX_SHARDS = 10_000


class GoldItem(BaseModel):
    """A submitter's labelled item: one item and the answer it knows (``coopgrid submit --gold FILE``)."""

    model_config = ConfigDict(extra="forbid")

    input: Any = Field(description="One item: a row of numbers (array datasets), or text / {\"base64\": ...} (files).")
    output: Any = Field(description="The task type's answer for that item (echo: the item; classify: the label).")
    line: int | None = Field(None, ge=1, description="Its line in the submitter's file, for error messages.")


class JobSpec(BaseModel):
    """POST /v1/jobs."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field("", max_length=100)
    task_type: str = Field(min_length=1, max_length=50)
    model: str | None = Field(None, max_length=120, description="Model hash, name, or name:version.")
    dataset: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the dataset .npz, uploaded as a blob.")
    shards: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=list, max_length=MAX_SHARDS,
        description="A dataset larger than one upload: the sha256 of each further shard (.npz blobs of the same "
                    "kind), in item order after `dataset`.",
    )
    task_size: int = Field(256, ge=1, le=1_000_000, description="Items per task (work unit).")
    reward_per_task: int = Field(
        0, ge=0, lt=REWARD_CEILING, description="Reward token base units per accepted task (bounded by the coordinator)."
    )
    funder: str | None = Field(
        None, pattern=r"^0x[0-9a-fA-F]{40}$",
        description="A paid job: the account that funds its escrow (needed when reward_per_task > 0).",
    )
    min_stake: int | None = Field(
        None, ge=0, lt=REWARD_CEILING, description="Stake a worker needs to take this job's replicas."
    )
    params: dict[str, Any] = Field(default_factory=dict)
    trust: TrustPolicy = Field(default_factory=TrustPolicy, description="Replication, quorum, gold, adaptive.")
    gold: list[GoldItem] = Field(
        default_factory=list, max_length=MAX_GOLD,
        description="Labelled items whose answers the submitter knows: gold tests that quarantine a worker "
                    "failing them; not part of the job's tasks or output.",
    )


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        blobs: BlobStore,
        registry: ModelRegistry,
        summarizer: Any,
        validator: Validator,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.registry = registry
        self.summarizer = summarizer
        self.validator = validator
        self.rng = rng or random.Random()
        self.metrics = metrics or Metrics()
        self._running_jobs: _RunningJobs | None = None  # what leases need of the running jobs (_running)
        #: wakes held lease requests (long polls) when work may have appeared; app.build gives it the database
        self.wakeup = Wakeup()

    # -- submission ---------------------------------------------------------------

    def submit(self, spec: JobSpec, token: Token) -> JobRecord:
        if spec.reward_per_task > self.settings.max_reward_per_task:
            raise InvalidInput(
                f"reward_per_task {spec.reward_per_task} is above this coordinator's bound of "
                f"{self.settings.max_reward_per_task} per task (max_reward_per_task); offer less",
                limit=str(self.settings.max_reward_per_task),
            )
        if spec.reward_per_task and not spec.funder:
            raise InvalidInput(
                "a job with a reward needs the funder: pass funder (the address whose tokens fund its escrow; "
                "`coopgrid submit --reward R` does it with your --key-file)"
            )
        task_type = tasks.get(spec.task_type)
        try:
            params = task_type.validate_params(spec.params)
        except ValidationError as exc:
            fields = task_type.Params.model_fields
            valid = ", ".join(f"{name} ({(f.description or '').split(';')[0].rstrip('.')})" if f.description else name
                              for name, f in fields.items())
            raise InvalidInput(
                f"params for {spec.task_type!r} are not valid: {_first_error(exc)}; "
                f"{spec.task_type!r} takes: {valid or 'no params'}"
            ) from exc
        model_hash = None
        if task_type.needs_model:
            if not spec.model:
                raise InvalidInput(f"{spec.task_type!r} jobs need a model: pass its hash or name")
            model = self.registry.resolve(spec.model)
            self.registry.check_task_type(model, spec.task_type)
            model_hash = model.hash
        elif spec.model:
            raise InvalidInput(f"{spec.task_type!r} jobs take no model")
        # a hash learnt from someone else's job is refused exactly like one never uploaded
        for digest in [spec.dataset, *spec.shards]:
            if not can_read(self.store, token, digest, time.time()) or not self.blobs.exists(digest):
                raise unreadable_dataset(digest)
        limits = DatasetLimits(self.settings.max_dataset_bytes, self.settings.max_dataset_items)
        dataset = Dataset.from_npz(self.blobs.get(spec.dataset), limits)
        if model_hash is not None:
            task_type.check_input(dataset, model.manifest)
        gold = self._gold(spec, task_type, params, dataset)
        job = NewJob(
            id=secrets.token_hex(32),
            owner_token_id=token.id,
            name=spec.name or f"{spec.task_type} job",
            task_type=spec.task_type,
            model_hash=model_hash,
            params=params.model_dump(mode="json"),
            dataset_hash=spec.dataset,
            n_items=0 if spec.shards else len(dataset),  # a sharded job's items are counted as it streams in
            task_size=spec.task_size,
            reward_per_task=spec.reward_per_task,
            policy=spec.trust.model_dump(),
            initial_replicas=spec.trust.initial_replicas,
            funder=_checksum(spec.funder) if spec.reward_per_task else None,
            min_stake=(spec.min_stake if spec.min_stake is not None
                       else self.settings.default_min_stake if spec.reward_per_task else 0),
            shards=tuple(spec.shards),
        )
        new_tasks = self._tasks(spec, task_type, params, dataset, limits, model.manifest if model_hash else None)
        try:
            record = self.store.create_job(job, new_tasks, time.time(), gold=gold)
        finally:
            del dataset
            release_unused()  # the decoded dataset and the task rows made for the inserts
        self.wakeup.notify(others=True)
        log.info(
            "job %s submitted by %s: %s, %d items in %d tasks", record.id, token.name, record.task_type,
            record.n_items, record.n_tasks,
            extra={"event": "job_submitted", "job": record.id, "owner": token.name, "task_type": record.task_type,
                   "items": record.n_items, "tasks": record.n_tasks},
        )
        return record

    def _gold(self, spec: JobSpec, task_type: Any, params: BaseModel, dataset: Dataset) -> list[NewGoldTask]:
        """The submitter's labelled items as gold tasks, each checked against the job's dataset and type."""
        if not spec.gold:
            return []
        if spec.trust.gold_rate == 0:
            raise InvalidInput("labelled items (gold) are only used as gold tests: give the job a gold rate "
                               "above 0 (--gold-rate), or leave the labelled items out")
        out = []
        for i, g in enumerate(spec.gold):
            try:
                data, n, known = task_type.gold_task(g.input, g.output, dataset, params)
                task_type.decode(known)  # what validation will read back
            except Exception as exc:  # noqa: BLE001 - the item is wrong, whatever raised: say which and why
                where = f"line {g.line}" if g.line else f"item {i + 1}"
                raise InvalidInput(
                    f"labelled item at {where} of the gold file: {exc}; each line is "
                    '{"input": ONE_ITEM, "output": ITS_ANSWER} (`coopgrid submit --help`, --gold)',
                    line=g.line or i + 1,
                ) from None
            if len(data) <= self.settings.inline_input_bytes:
                out.append(NewGoldTask(sha256_hex(data), data, n, known))
            else:
                self.blobs.put(data)
                out.append(NewGoldTask(sha256_hex(data), None, n, known))
        return out

    def _tasks(
        self, spec: JobSpec, task_type: Any, params: BaseModel, first: Dataset, limits: DatasetLimits,
        manifest: dict[str, Any] | None,
    ) -> Iterator[NewTask]:
        """The job's tasks as they are split, shard after shard: one shard is decoded at a time."""
        n_tasks = offset = 0
        for digest in [spec.dataset, *spec.shards]:
            if digest == spec.dataset and offset == 0:
                dataset = first
            else:
                dataset = Dataset.from_npz(self.blobs.get(digest), limits)
                _check_shard(first, dataset, digest)
                if manifest is not None:
                    task_type.check_input(dataset, manifest)
            start = offset
            try:
                for data, n in task_type.split(dataset, spec.task_size, params):
                    digest_in = sha256_hex(data)
                    if len(data) <= self.settings.inline_input_bytes:
                        yield NewTask(digest_in, data, offset, n)
                    else:
                        self.blobs.put(data)
                        yield NewTask(digest_in, None, offset, n)
                    offset += n
                    n_tasks += 1
                    most = spec.reward_per_task * n_tasks  # what the job can spend at most (R per accepted task)
                    if most > self.settings.max_job_reward:
                        raise InvalidInput(
                            f"{n_tasks} tasks (or more) at {spec.reward_per_task} each could spend {most}, above "
                            f"this coordinator's bound of {self.settings.max_job_reward} per job (max_job_reward); "
                            "lower the reward or split the job",
                            limit=str(self.settings.max_job_reward),
                        )
            except (ValueError, TypeError) as exc:
                raise DatasetError(f"cannot split the dataset into {spec.task_type!r} tasks: {exc}") from exc
            offset = start + len(dataset)  # the next shard's items follow this one's, whatever split yielded
            del dataset

    def job_for(self, job_id: str, token: Token) -> JobRecord:
        """The job if ``token`` may see it; a submitter sees only its own."""
        job = self.store.get_job(job_id)
        if job is None or (token.role != "operator" and job.owner_token_id != token.id):
            raise JobNotFound(f"no job {job_id}; `coopgrid status` lists yours", job_id=job_id)
        return job

    # -- leasing ------------------------------------------------------------------

    def lease(self, worker: WorkerRecord, request: LeaseRequest) -> dict[str, Any] | None:
        now = time.time()
        worker = self.store.get_worker(worker.address) or worker  # quarantine may be newer than a cached record
        if worker.quarantined_at is not None:
            raise Forbidden(
                f"worker {worker.address} is quarantined ({worker.quarantine_reason}) and gets no more work",
                address=worker.address,
            )
        # No worker takes more than its fair share of what is waiting, so a
        # short job is spread over every active worker instead of the first
        # one to ask; a long queue still goes out in full batches.
        want = min(request.max_replicas, self.settings.max_lease_batch)
        # counted up to a batch per active worker, for at most 64 of them: enough to know each one's
        # share (a bigger grid shares 64 batches), without counting a million-replica queue every time
        audits_due = now - self.settings.audit_wait_seconds if self.settings.audit_wait_seconds else None
        ready, active = self.store.queue_depth(now - self.settings.lease_seconds, cap=want, per_worker=64,
                                               audits_due=audits_due)
        if ready == 0:
            return None  # nothing to do: no write transaction for an idle poll
        running = self._running()
        excluded = self._needs_more_stake(worker.address, running)
        fair = max(1, -(-ready // max(active, 1)))
        quota, validated = self.store.lease_quota(worker.id, request.task_types)
        n = min(request.max_replicas, self.settings.max_lease_batch, fair, quota)
        # a fresh key of a quarantined worker's owner or network is tested as a newcomer for longer
        validated //= 1 + worker.prior_quarantines
        gold_p = gold_probability(TrustPolicy(gold_rate=running.gold_rate), validated)
        gold = sum(self.rng.random() < gold_p for _ in range(n)) if gold_p else 0
        audits = may_audit(running.record_need, worker.trusted,
                           0 if worker.trusted else self.store.record_run(worker.id, request.task_types))
        lease = self.store.lease(
            worker.id, n, request.task_types, self.settings.lease_seconds, now, gold=gold, rng=self.rng,
            audits=audits, audits_due=audits_due,
            separate_networks=self.settings.separate_networks, exclude_jobs=sorted(excluded),
            platform_class=worker.platform_class, homogeneous_jobs=running.homogeneous,
        )
        if lease is None:
            if excluded:
                need = max(excluded.values())
                raise Forbidden(
                    f"the work waiting here needs a stake of {need} (you have {self._stake(worker.address)}): "
                    "stake with `coopgrid stake AMOUNT --key-file KEYSTORE`",
                    address=worker.address, min_stake=str(need),
                )
            return None
        self.metrics.leases.inc()
        self.metrics.leased_replicas.inc(len(lease.replicas))
        urls = self._input_urls(lease.replicas)
        return {
            "lease_id": lease.id,
            "expires_at": lease.expires_at,
            "lease_seconds": self.settings.lease_seconds,
            "chain_id": self.settings.chain_id,
            "jobs": {
                j.id: {"task_type": j.task_type, "model_hash": j.model_hash, "params": j.params}
                for j in lease.jobs.values()
            },
            "replicas": [
                {
                    "id": r.replica_id,
                    "job": r.job_id,
                    "task_index": r.task_index,
                    "input_hash": r.input_hash,
                    "input": b64encode(r.input_data) if r.input_data is not None else None,
                    "n_items": r.n_items,
                    **({"input_url": urls[r.input_hash]} if r.input_hash in urls else {}),
                }
                for r in lease.replicas
            ],
        }

    def _input_urls(self, replicas: Any) -> dict[str, str]:
        """Presigned URLs of a lease's input blobs, for a blob store that gives them (an object store).

        Only the blobs of this lease (coordinator/access.py's rule for workers), and valid no longer
        than the lease: the worker fetches from the store itself and still checks each sha256. A
        store that cannot presign leaves the worker on the coordinator's GET /v1/blobs path."""
        urls: dict[str, str] = {}
        for r in replicas:
            if r.input_data is None and r.input_hash not in urls:
                url = self.blob_url(r.input_hash)
                if url is None:
                    return {}
                urls[r.input_hash] = url
        return urls

    def blob_url(self, digest: str) -> str | None:
        """A presigned URL of a blob a worker may read now (the caller checked that), or None:
        the blob store gives none, or URLs are off (blob_url_seconds=0)."""
        seconds = int(min(self.settings.blob_url_seconds, self.settings.lease_seconds))
        if seconds < 1:
            return None
        try:
            url = self.blobs.url(digest, seconds)
        except CoopgridError:
            log.warning("cannot presign a blob URL; workers fetch blobs through the coordinator", exc_info=True)
            return None
        if url is not None:
            self.metrics.blob_urls.inc()
        return url

    #: the worker's active stake (set by app.build when there is a ledger): address -> base units
    stake_of: Any = None

    def _stake(self, address: str) -> int:
        return int(self.stake_of(address)) if self.stake_of is not None else 0

    def _needs_more_stake(self, address: str, running: _RunningJobs) -> dict[str, int]:
        """Running jobs whose minimum stake this worker does not have: job id -> the stake needed."""
        if not running.min_stakes:
            return {}
        have = self._stake(address)
        return {job_id: need for job_id, need in running.min_stakes.items() if need > have}

    def _running(self) -> _RunningJobs:
        """What leases need to know of the running jobs: read again whenever the set of running jobs
        changed (submitted, funded, finished or cancelled, by any coordinator on the database), so a new
        job's stake, gold and placement rules hold from its first lease; one indexed read of their ids
        otherwise, however many jobs the grid ran before."""
        ids = self.store.running_job_ids()
        cached = self._running_jobs
        if cached is None or cached.ids != ids:
            jobs = self.store.list_jobs(states=[JobState.RUNNING.value])
            cached = self._running_jobs = _RunningJobs.of(jobs)
        return cached

    def heartbeat(self, worker: WorkerRecord, lease_id: int) -> float:
        return self.store.extend_lease(lease_id, worker.id, self.settings.lease_seconds, time.time())

    def submit_results(self, worker: WorkerRecord, lease_id: int, batch: ResultBatch,
                       defer_validation: bool = False) -> RecordOutcome:
        """Record a worker's result batch and validate the tasks it touched; with ``defer_validation``
        the round is left to :meth:`validate_deferred` (the API runs it after answering the worker)."""
        view = self.store.lease_view(lease_id)
        if view is None or view.worker_id != worker.id:
            raise LeaseError(f"lease {lease_id} is unknown to this coordinator", lease_id=lease_id)
        refs, incoming = [], []
        for item in batch.results:
            rep = view.replicas.get(item.replica_id)
            if rep is None:
                raise LeaseError(f"replica {item.replica_id} is not part of lease {lease_id}", lease_id=lease_id)
            output = None
            if item.error is None:
                if item.output is None:
                    raise InvalidInput(f"result for replica {item.replica_id} has neither output nor error")
                try:
                    output = b64decode(item.output)
                except ValueError:
                    raise InvalidInput(f"output of replica {item.replica_id} is not valid base64") from None
                if sha256_hex(output) != item.output_hash:
                    raise IntegrityError(
                        f"output of replica {item.replica_id} does not hash to its output_hash",
                        replica_id=item.replica_id,
                    )
            refs.append(
                ResultRef(rep.job_id, rep.task_index, rep.input_hash, rep.model_hash or ZERO_HASH, item.output_hash)
            )
            incoming.append(IncomingResult(item.replica_id, item.output_hash, output, item.error))
        signer = recover_batch_signer(self.settings.chain_id, worker.address, lease_id, refs, batch.signature)
        if signer != worker.address:
            raise AuthError(
                f"the result batch is signed by {signer}, not by lease {lease_id}'s worker {worker.address}",
                lease_id=lease_id,
            )
        outcome = self.store.record_results(lease_id, worker.id, batch.signature, incoming, batch.release,
                                            time.time(), judge=self.validator.lone)
        self.metrics.count_results(outcome.statuses)
        self.metrics.count_validations(outcome.judged)
        validated = False
        if outcome.tasks and not outcome.lease_expired:
            if defer_validation:
                self.validator.defer(outcome.tasks)
            else:
                outcome.completed_jobs += self.validator.validate(outcome.tasks)
                validated = True
        if batch.release:
            self.wakeup.notify(others=True)
        elif (validated or outcome.replicas_added) and self.wakeup.waiting:
            # a task waits for the replicas just issued; an audit does not: it rides with the next
            # lease, or an idle worker's periodic look (RECHECK), instead of waking every idle worker
            # into a lease of a few replicas each
            self.wakeup.notify()
        if outcome.lease_expired:
            raise LeaseError(
                f"lease {lease_id} expired at {view.expires_at:.0f} and its replicas were reissued; "
                f"the {len(incoming)} results were recorded as late and not counted",
                lease_id=lease_id,
            )
        return outcome

    def validate_deferred(self) -> list[str]:
        """Run the validation rounds :meth:`submit_results` deferred; returns the jobs they completed."""
        completed, urgent = self.validator.drain()
        if urgent and self.wakeup.waiting:
            self.wakeup.notify()
        return completed

    def reap(self) -> int:
        n = self.store.reap_expired(time.time())
        if n:
            self.wakeup.notify(others=True)
        return n


@dataclass(frozen=True)
class _RunningJobs:
    """The running jobs' figures a lease uses, read together (Scheduler._running)."""

    ids: frozenset[str]
    min_stakes: dict[str, int]  # job -> the stake a worker needs for it (jobs that ask for one)
    homogeneous: list[str]  # jobs whose task type needs homogeneous redundancy
    gold_rate: float  # the highest gold rate
    record_need: int  # the lowest run that gives a record

    @classmethod
    def of(cls, jobs: list[JobRecord]) -> _RunningJobs:
        policies = [TrustPolicy.model_validate(j.policy or {}) for j in jobs]
        return cls(
            ids=frozenset(j.id for j in jobs),
            min_stakes={j.id: j.min_stake for j in jobs if j.min_stake},
            homogeneous=sorted(j.id for j in jobs if _homogeneous(j.task_type)),
            gold_rate=max((p.gold_rate for p in policies), default=0.0),
            record_need=min((record_threshold(p) for p in policies), default=record_threshold(TrustPolicy())),
        )


def _check_shard(first: Dataset, shard: Dataset, digest: str) -> None:
    """A further shard must hold the same kind of items as the first, or the job's items would not be one set."""
    what = (first.kind, first.media, first.x.shape[1:] if first.kind == "array" else None, first.meta.get("header"))
    got = (shard.kind, shard.media, shard.x.shape[1:] if shard.kind == "array" else None, shard.meta.get("header"))
    if what != got:
        raise DatasetError(
            f"shard {digest} does not match the dataset's first shard (kind, media, item shape, CSV header: "
            f"{got} vs {what}); every shard of a job holds the same kind of items"
        )


def _homogeneous(task_type: str) -> bool:
    try:
        return bool(tasks.get(task_type).homogeneous)
    except InvalidInput:  # a job of a type no longer installed: nothing of it is leased anyway
        return False


def _checksum(address: str) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(address.lower())


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]
