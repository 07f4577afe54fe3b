"""The Store interface: every durable operation the coordinator performs.

Operations, not tables: a backend implements ``lease`` or ``record_results``
as one transaction each, so a crash between two calls never leaves half an
operation behind. :class:`coopgrid.store.sql.SqlStore` implements it for
SQLite (the embedded default) and PostgreSQL (several coordinators sharing
one database). Times are unix seconds.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    role: str  # "operator" (everything) or "submitter" (own jobs)


@dataclass(frozen=True)
class TokenInfo:
    """A token as its listing shows it (never its secret, which is not stored)."""

    id: int
    name: str
    role: str
    created_at: float
    revoked: bool


@dataclass(frozen=True)
class ModelRecord:
    hash: str
    name: str
    version: int
    task_type: str
    manifest: dict[str, Any]
    size: int
    created_at: float
    anchor_tx: str | None = None  # publishModel transaction, once sent
    anchor_block: int | None = None  # its block, once mined


@dataclass(frozen=True)
class WorkerRecord:
    id: int
    address: str
    name: str
    owner: str
    registered_at: float
    last_seen: float
    quarantined_at: float | None = None
    quarantine_reason: str | None = None
    network: str | None = None
    prior_quarantines: int = 0  # quarantined workers of its owner or network when it first registered
    trusted: bool = False  # registered with an operator token: a root of trust for gold
    partner_quarantines: int = 0  # quarantined workers whose decisions it shared
    platform: dict[str, Any] | None = None  # as reported at registration (coopgrid.platforms.Platform)
    platform_class: str | None = None  # coopgrid.platforms.platform_class of it; None: not reported


@dataclass(frozen=True)
class NewTask:
    input_hash: str
    input_data: bytes | None  # inline bytes, or None when the input is a blob
    first_item: int
    n_items: int


@dataclass(frozen=True)
class NewGoldTask:
    """A submitter's labelled item: a task only ever leased as gold, with its answer known."""

    input_hash: str
    input_data: bytes | None  # inline bytes, or None when the input is a blob
    n_items: int
    known: bytes  # the answer, as the task type's canonical output bytes


@dataclass(frozen=True)
class NewJob:
    id: str
    owner_token_id: int
    name: str
    task_type: str
    model_hash: str | None
    params: dict[str, Any]
    dataset_hash: str
    n_items: int
    task_size: int
    reward_per_task: int
    policy: dict[str, Any] = field(default_factory=dict)  # TrustPolicy as a dict
    initial_replicas: int = 1
    funder: str | None = None  # a paid job: the account whose escrow pays it (the job waits unfunded)
    min_stake: int = 0  # stake a worker needs to lease its replicas
    shards: tuple[str, ...] = ()  # further dataset blobs after dataset_hash, in item order


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner_token_id: int
    name: str
    task_type: str
    model_hash: str | None
    params: dict[str, Any]
    dataset_hash: str
    n_items: int
    n_tasks: int
    task_size: int
    reward_per_task: int
    state: str
    tasks_done: int
    tasks_failed: int
    tasks_inconclusive: int
    policy: dict[str, Any]
    created_at: float
    finished_at: float | None
    summary: dict[str, Any] | None
    output_hash: str | None
    seal_error: str | None = None  # set when its results are held out of sealing, and why
    funder: str | None = None
    min_stake: int = 0
    shards: tuple[str, ...] = ()  # further dataset blobs after dataset_hash, in item order
    archive_hash: str | None = None  # retention: its per-replica rows live in this Parquet archive now
    archived_at: float | None = None

    @property
    def complete(self) -> bool:
        return self.tasks_done + self.tasks_failed + self.tasks_inconclusive >= self.n_tasks


@dataclass(frozen=True)
class LeasedReplica:
    replica_id: int
    job_id: str
    task_index: int
    input_hash: str
    input_data: bytes | None
    n_items: int


@dataclass(frozen=True)
class LeaseJob:
    id: str
    task_type: str
    model_hash: str | None
    params: dict[str, Any]


@dataclass(frozen=True)
class Lease:
    id: int
    expires_at: float
    replicas: list[LeasedReplica]
    jobs: dict[str, LeaseJob]


@dataclass(frozen=True)
class LeaseReplicaView:
    """What the coordinator knows of one leased replica: the values a worker signs."""

    replica_id: int
    state: int
    job_id: str
    task_index: int
    input_hash: str
    model_hash: str | None


@dataclass(frozen=True)
class LeaseView:
    id: int
    worker_id: int
    worker_address: str
    state: str
    expires_at: float
    replicas: dict[int, LeaseReplicaView]


@dataclass(frozen=True)
class Lie:
    """A worker's result that a quorum of other workers' signed results outvoted: slashing evidence."""

    job_id: str
    task_index: int
    input_hash: str
    model_hash: str
    task_type: str
    quorum: int
    funder: str  # the harmed job's funder (its escrow gets the slashed tokens)
    batch_id: int  # the liar's signed batch
    output: bytes
    agreeing: list[tuple[int, str, bytes]]  # (batch id, output hash, output) of distinct other workers


@dataclass(frozen=True)
class SignedBatch:
    """A result batch as its worker signed it: every result, in order."""

    worker: str
    lease_id: int
    signature: str
    refs: list[Any]  # protocol.ResultRef


@dataclass(frozen=True)
class IncomingResult:
    replica_id: int
    output_hash: str
    output: bytes | None
    error: str | None


@dataclass
class RecordOutcome:
    """What :meth:`Store.record_results` did with each result."""

    statuses: dict[int, str] = field(default_factory=dict)  # replica id -> ResultStatus value
    completed_jobs: list[str] = field(default_factory=list)
    lease_expired: bool = False
    tasks: list[int] = field(default_factory=list)  # tasks with a new pending result, to validate
    judged: dict[str, int] = field(default_factory=dict)  # lone results judged at once: outcome -> count
    replicas_added: int = 0  # replicas a task waits for: second opinions its judged results asked for
    audits_added: int = 0  # audits of its results accepted alone: spot checks no task waits for


@dataclass(frozen=True)
class AcceptedOutput:
    task_index: int
    first_item: int
    n_items: int
    worker_address: str
    output: bytes


@dataclass(frozen=True)
class EpochRecord:
    number: int
    state: str  # see schema.EpochState
    result_count: int
    results_root: str | None
    rewards_root: str | None
    results_dump: str | None
    rewards_dump: str | None
    tx_hash: str | None
    raw_tx: bytes | None
    block_number: int | None
    created_at: float
    committed_at: float | None
    spends_dump: str | None = None  # blob: JSON {job id: [funder, cumulative spend]}


@dataclass(frozen=True)
class SealedResult:
    """Where one task's accepted result sits in the ledger: the result leaf's values."""

    epoch: int | None  # None while not sealed yet
    job_id: str
    task_index: int
    model_hash: str | None
    input_hash: str
    output_hash: str
    worker_address: str


@dataclass(frozen=True)
class Reputation:
    """A worker's record for one task type."""

    task_type: str
    run: int  # consecutive validated results
    valid: int
    invalid: int
    errors: int
    timeouts: int
    gold_passed: int
    gold_failed: int
    checks_passed: int  # gold tasks and audits passed
    quota: int  # most replicas per lease


@dataclass(frozen=True)
class CandidateRow:
    """A result as validation reads it."""

    result_id: int
    worker_id: int
    owner: str
    output: bytes
    kind: str  # ReplicaKind value of the replica it answers
    run: int
    checks_passed: int
    final: bool
    quarantined: bool
    trusted: bool = False


@dataclass
class TaskCheck:
    """A task with pending results, and its accepted one if any."""

    task_id: int
    job_id: str
    task_type: str
    policy: dict[str, Any]
    state: str
    issued: int
    canonical: CandidateRow | None
    pending: list[CandidateRow]
    outstanding: int = 0  # replicas of the task still ready or leased (gold excluded)
    rooted: bool = False  # its accepted answer came from a root of trust (gold that quarantines)
    sealed: bool = False  # its accepted result is in an epoch already (cannot be reopened)
    known: bytes | None = None  # a submitter's gold item: the answer it supplied


@dataclass(frozen=True)
class Accept:
    task_id: int
    result_id: int
    final: bool
    checks_at: int | None  # provisional: final once the worker's checks_passed reaches this
    rooted: bool = False  # a trusted worker took part: the task's answer may serve as gold that quarantines


@dataclass
class RepDelta:
    valid: int = 0
    invalid: int = 0
    gold_passed: int = 0
    gold_failed: int = 0
    checks: int = 0
    # disagreements it took part in as a newcomer: more of them than agreements in a round restarts its run
    contested: int = 0
    repeated: int = 0  # of ``valid``, agreements with a partner already counted this round: no run credit
    max_invalid: int = 3


@dataclass(frozen=True)
class Lone:
    """What validation would decide for a task's only result, with no other replica out.

    :meth:`Store.record_results` asks its ``judge`` for each such result and writes the verdict in
    the batch's own transaction, so that a grid of proven workers needs no validation round."""

    accept: bool  # accepted as the task's answer (else ``more`` replicas are issued)
    final: bool = False  # final at once (a trusted worker's, or no finality checks asked for)
    checks: int = 0  # a provisional result is final once its worker has passed this many more checks
    audit: bool = False  # issue one audit replica of the accepted result
    rooted: bool = False  # a root of trust decided it: fit for gold that quarantines
    more: int = 0  # normal replicas to issue when not accepted


#: (job id, the job's policy as stored, the worker's run, vouched for by the operator, how many of its
#: lone results in that job) -> a verdict for each
LoneJudge = Callable[[str, str, int, bool, int], list[Lone]]
#: jobs whose rules (task type, trust policy) a process keeps at hand; older ones are read again when
#: needed (a grid that runs for a year has run more jobs than it should hold in memory)
RULES_CACHED = 1024


@dataclass
class ValidationWrite:
    """One validation round's decisions, written by :meth:`Store.apply_validation` at once."""

    statuses: dict[int, tuple[str, bool]] = field(default_factory=dict)  # result -> (status, final)
    accepts: list[Accept] = field(default_factory=list)
    task_states: dict[int, str] = field(default_factory=dict)
    issued: dict[int, int] = field(default_factory=dict)  # task -> normal replicas added
    replicas: list[tuple[int, str, str]] = field(default_factory=list)  # (task, job, kind) to create
    job_deltas: dict[str, tuple[int, int]] = field(default_factory=dict)  # job -> (done, inconclusive)
    reputation: dict[tuple[int, str], RepDelta] = field(default_factory=dict)
    quarantine: dict[int, str] = field(default_factory=dict)  # worker -> reason
    # decided tasks to decide again (a dispute): their results go back to pending, one replica more
    reopen: dict[int, str] = field(default_factory=dict)  # task -> job
    finalized: list[int] = field(default_factory=list)  # provisional tasks made final by an agreeing audit
    #: (worker, partner) agreements credited to a run this round: a run is built from many partners
    pairs: set[tuple[int, int]] = field(default_factory=set)

    def rep(self, worker_id: int, task_type: str, max_invalid: int) -> RepDelta:
        d = self.reputation.setdefault((worker_id, task_type), RepDelta())
        d.max_invalid = max_invalid
        return d

    def job(self, job_id: str, done: int = 0, inconclusive: int = 0) -> None:
        d, i = self.job_deltas.get(job_id, (0, 0))
        self.job_deltas[job_id] = (d + done, i + inconclusive)


@dataclass
class GridFigures:
    """The grid at one moment, for /metrics and the dashboard (see :meth:`Store.grid_figures`)."""

    open_leases: int
    replicas: dict[tuple[str, str], int]  # (kind, state) -> replicas of running jobs
    queue_depth: dict[str, int]  # running job -> replicas waiting for a worker
    queued: int  # replicas waiting for a worker, in all
    workers: dict[str, int]  # active | idle | quarantined -> workers
    jobs: dict[str, int]  # state -> jobs
    epochs: dict[str, int]  # state -> epochs
    last_commit: float | None  # when the last epoch was committed on chain


class Store(abc.ABC):
    """Durable state of one coordinator (or of several sharing a database)."""

    # -- lifecycle --------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    # -- tokens -------------------------------------------------------------------

    @abc.abstractmethod
    def add_token(self, name: str, role: str, secret_hash: str, now: float) -> Token:
        """Store a new API token by the sha256 of its secret (the secret is never stored)."""

    @abc.abstractmethod
    def token_by_hash(self, secret_hash: str) -> Token | None:
        """The token whose secret hashes to ``secret_hash``."""

    @abc.abstractmethod
    def grid_id(self) -> str:
        """This grid's id (32 hex characters), made once and kept in the database.

        Every coordinator process of one grid shares it; worker request
        signatures bind it, so a request signed for one grid fails at another."""

    @abc.abstractmethod
    def count_tokens(self, role: str | None = None) -> int:
        """How many live (not revoked) tokens exist (of ``role``)."""

    @abc.abstractmethod
    def list_tokens(self) -> list[TokenInfo]:
        """Every token, revoked ones too, oldest first."""

    @abc.abstractmethod
    def revoke_token(self, token_id: int) -> bool:
        """Make a token's secret useless for ever; False if it was already revoked or does not exist."""

    # -- models -----------------------------------------------------------------

    @abc.abstractmethod
    def add_model(self, record: ModelRecord) -> ModelRecord:
        """Record a published model; publishing the same bytes again returns the existing record."""

    @abc.abstractmethod
    def get_model(self, ref: str) -> ModelRecord | None:
        """A model by hash, by ``name`` (latest version) or by ``name:version``."""

    @abc.abstractmethod
    def list_models(self) -> list[ModelRecord]:
        """Every published model, newest first."""

    @abc.abstractmethod
    def next_model_version(self, name: str) -> int:
        """The version number the next model called ``name`` gets."""

    # -- workers ----------------------------------------------------------------

    @abc.abstractmethod
    def register_worker(
        self, address: str, name: str, owner: str, now: float, network: str | None = None,
        platform: dict[str, Any] | None = None, platform_class: str | None = None, trusted: bool = False,
    ) -> WorkerRecord:
        """Create or update the worker with this address (``network``: the network it registered from;
        ``platform``: what it reported it computes on, and ``platform_class`` derived from it).

        A new worker's ``prior_quarantines`` counts the quarantined workers that share its
        (non-empty) owner or its network, so the trust layer can treat it as what it is."""

    @abc.abstractmethod
    def get_worker(self, address: str) -> WorkerRecord | None:
        """The registered worker with this (checksummed) address."""

    @abc.abstractmethod
    def list_workers(self) -> list[tuple[WorkerRecord, int]]:
        """Every worker with its count of credited results (accepted or agreeing with the accepted one)."""

    # -- jobs -------------------------------------------------------------------

    @abc.abstractmethod
    def create_job(
        self, job: NewJob, tasks: Iterable[NewTask], now: float, gold: Sequence[NewGoldTask] = ()
    ) -> JobRecord:
        """Create the job, its tasks (streamed: never all held at once) and its first replicas, atomically.

        ``gold``: the submitter's labelled items, stored as tasks in state ``gold`` numbered after the
        job's own (idx n_tasks, n_tasks + 1, ...; not counted in n_tasks) that no replica is made for:
        :meth:`lease` draws gold replicas from them first."""

    @abc.abstractmethod
    def get_job(self, job_id: str) -> JobRecord | None:
        """The job, or None."""

    @abc.abstractmethod
    def list_jobs(
        self, owner_token_id: int | None = None, states: Sequence[str] | None = None, limit: int | None = None,
        before: JobRecord | None = None, prefix: str | None = None,
    ) -> list[JobRecord]:
        """Jobs, newest first; only ``owner_token_id``'s, or those in ``states``, when given (the running
        ones are a few of a long-lived grid's every job). A page: at most ``limit``, those older than
        ``before`` (the last of the previous page), or those whose id starts with ``prefix`` (hex)."""

    @abc.abstractmethod
    def running_job_ids(self) -> set[str]:
        """The ids of the running jobs: one indexed read, for a caller that caches what it knows of them."""

    @abc.abstractmethod
    def cancel_job(self, job_id: str, now: float) -> JobRecord:
        """Stop handing out the job's replicas; results already accepted stay."""

    @abc.abstractmethod
    def disputes(self, job_id: str) -> list[dict[str, Any]]:
        """Sealed results of the job that a since-quarantined worker helped decide (epoch, task, output)."""
        return []

    def replica_counts(self, job_id: str) -> dict[str, int]:
        """The job's replicas by state name (ready, leased, done, expired...)."""

    @abc.abstractmethod
    def set_cancelled_output(
        self, job_id: str, summary: dict[str, Any], output_hash: str, artefacts: Sequence[str] = ()
    ) -> None:
        """Give a cancelled job (without output yet) the output reduced from what it had accepted;
        its owner is granted reading it and the ``artefacts``, as for a finished job."""

    @abc.abstractmethod
    def finish_job(
        self, job_id: str, summary: dict[str, Any], output_hash: str, now: float, artefacts: Sequence[str] = (),
        failed: bool = False,
    ) -> None:
        """Mark a complete job done (``failed``: finished with no task accepted) with its summary and output blob.

        In the same transaction the job's owner is granted reading the output and the
        ``artefacts`` (other blobs its reducer wrote, e.g. a dataset for the next job); a job
        that is no longer running is left as it is, and nothing is granted."""

    @abc.abstractmethod
    def complete_unfinished_jobs(self) -> list[str]:
        """Jobs whose tasks are all resolved but which have no output yet (e.g. after a crash)."""

    @abc.abstractmethod
    def accepted_outputs(self, job_id: str) -> Iterator[AcceptedOutput]:
        """The accepted result of every done task, in task order."""

    @abc.abstractmethod
    def job_workers(self, job_id: str) -> dict[str, int]:
        """Results per worker address that were accepted or agreed with the accepted one."""

    # -- blob access ----------------------------------------------------------------
    # The relations coordinator/access.py decides a blob read from; each is a query or two on
    # indexes (blob_readers' key, jobs.dataset_hash, tasks.input_hash, a worker's open leases).

    @abc.abstractmethod
    def grant_blob(self, blob: str, token_id: int) -> None:
        """Let ``token_id`` read ``blob`` (it uploaded those bytes); granting twice is a no-op."""

    @abc.abstractmethod
    def public_blob(self, blob: str) -> bool:
        """Whether any authenticated caller may read ``blob``: it is a published model's bytes."""

    @abc.abstractmethod
    def token_reads_blob(self, blob: str, token_id: int) -> bool:
        """Whether the token was granted ``blob`` (its upload, its job's output or artefact), or owns
        a job whose dataset it is or one of whose tasks has it as its input blob."""

    @abc.abstractmethod
    def worker_reads_blob(self, blob: str, worker_id: int, now: float) -> bool:
        """Whether the worker holds a live lease (open, its deadline not before ``now``) on a replica
        not answered yet of a task whose input blob is ``blob`` or of a job whose dataset is ``blob``."""

    # -- leasing ------------------------------------------------------------------

    @abc.abstractmethod
    def lease(
        self,
        worker_id: int,
        max_replicas: int,
        task_types: Sequence[str],
        lease_seconds: float,
        now: float,
        gold: int = 0,
        rng: Any = None,
        separate_networks: bool = False,
        exclude_jobs: Sequence[str] = (),
        platform_class: str | None = None,
        homogeneous_jobs: Sequence[str] = (),
        audits: bool = True,
        audits_due: float | None = None,
    ) -> Lease | None:
        """Lease up to ``max_replicas`` ready replicas to a worker in one lease, plus ``gold`` replicas
        of tasks whose answer is known; None if none are ready.

        Never two replicas of one task to the same worker or to workers of the same owner (or,
        with ``separate_networks``, of the same network). In ``homogeneous_jobs`` every replica
        of a task (gold ones included) goes to workers of one platform class: this worker's is
        ``platform_class`` (None: it reported none). ``audits``: whether audit replicas may go to
        this worker (:func:`coopgrid.coordinator.trust.may_audit`). ``audits_due``: audits issued after
        this time go only with other work (into a lease that has room), so that a job's last audits
        do not each cost a lease, a batch and a round of their own; older ones go out like any
        replica (None: every audit is due)."""

    @abc.abstractmethod
    def queue_depth(self, active_since: float, cap: int = 1_000_000, per_worker: int = 0,
                    audits_due: float | None = None) -> tuple[int, int]:
        """Ready replicas (counted up to ``cap``; with ``per_worker``, up to ``cap`` per active worker for
        at most that many workers), and workers seen since ``active_since``. ``audits_due``: as for
        :meth:`lease`, audits issued after it are not counted where they are most of a short queue."""

    @abc.abstractmethod
    def extend_lease(self, lease_id: int, worker_id: int, lease_seconds: float, now: float) -> float:
        """Push an open lease's deadline to now + lease_seconds; LeaseError if unknown, foreign or expired."""

    @abc.abstractmethod
    def lease_view(self, lease_id: int) -> LeaseView | None:
        """The lease with the signed values of its replicas, for checking a result batch."""

    @abc.abstractmethod
    def record_results(
        self,
        lease_id: int,
        worker_id: int,
        signature: str,
        items: Sequence[IncomingResult],
        release: Sequence[int],
        now: float,
        judge: LoneJudge | None = None,
    ) -> RecordOutcome:
        """Record a verified result batch in one transaction.

        A result for a task already done is recorded as a duplicate and not
        counted; results after the lease's deadline are recorded as late and
        not counted (``lease_expired`` is set). Replicas in ``release`` go back
        to the ready queue. A result of a quorum-of-one job is accepted at once;
        with a ``judge``, so is the only result of an open task of any other
        job, as the judge decides (adaptive replication); every other result
        waits for a validation round (``RecordOutcome.tasks``).
        """

    @abc.abstractmethod
    def reap_expired(self, now: float) -> int:
        """Expire leases past their deadline and issue a new replica for each open task; returns how many."""

    # -- epochs and rewards --------------------------------------------------------

    @abc.abstractmethod
    def unsealed(self) -> tuple[int, float | None]:
        """How many accepted results wait for an epoch, and when the oldest was received."""

    @abc.abstractmethod
    def open_epoch(self, now: float) -> int | None:
        """Assign every unsealed accepted result to the next epoch, atomically; None if there are none."""

    @abc.abstractmethod
    def epoch_results(self, number: int) -> list[SealedResult]:
        """The results sealed in an epoch."""

    @abc.abstractmethod
    def reward_totals(self, up_to_epoch: int | None) -> dict[str, int]:
        """Cumulative reward per worker address over accepted results sealed in epochs <= ``up_to_epoch``.

        ``None`` sums the accepted results not sealed yet instead (pending rewards).
        """

    @abc.abstractmethod
    def pending_rewards(self) -> dict[str, int]:
        """Per address: what it has earned under rewards.SHARE_RULE but cannot claim yet: the shares of
        tasks whose accepted result is not in a committed epoch (a provisional one: the whole reward, to
        its worker, until an audit that makes it final shares it)."""

    @abc.abstractmethod
    def share_rows(self, job_id: str | None = None, uncommitted: bool = False) -> list[tuple[int | None, Any]]:
        """(epoch, rewards.ShareRow) of every paid result that shares its task's reward: the paid results,
        gold tests excluded, in the epoch of their task's final accepted result (both None while unsealed);
        for a task whose accepted result is still provisional, that result alone (epoch None).
        ``job_id``: of one job only; ``uncommitted``: only tasks whose accepted result is not in a committed epoch."""

    @abc.abstractmethod
    def epoch_jobs(self, number: int) -> list[str]:
        """The ids of the jobs with results in an epoch."""

    @abc.abstractmethod
    def hold_jobs(self, reasons: dict[str, str], epoch: int) -> None:
        """Hold jobs out of sealing (job id -> why), atomically: their results leave the not yet
        committed ``epoch``, which goes back to open (roots cleared) or, left empty, is removed so
        that its number goes to the next epoch; nothing of a held job is sealed again."""

    @abc.abstractmethod
    def epoch_shares(self, number: int) -> list[Any]:
        """The paid results (rewards.ShareRow) of the tasks whose accepted result is sealed in the epoch,
        gold tests and jobs without a reward excluded: what :func:`coopgrid.coordinator.rewards.epoch_rewards`
        shares R among."""

    @abc.abstractmethod
    def job_unsealed(self, job_id: str, committed: set[int]) -> int:
        """How many paid results of a job are not in one of the ``committed`` epochs."""

    @abc.abstractmethod
    def activate_job(self, job_id: str, now: float) -> bool:
        """An unfunded job becomes running: its first replicas are made (once; False if it was not unfunded)."""

    @abc.abstractmethod
    def open_escrows(self) -> list[JobRecord]:
        """Paid jobs whose escrow is not marked closed (unfunded, running, or finished and not yet closed)."""

    @abc.abstractmethod
    def mark_escrow_closed(self, job_id: str) -> None:
        """The paid job's escrow is closed on chain: :meth:`open_escrows` no longer lists it."""

    # -- slashing (sql_slashes.py) --------------------------------------------------------

    @abc.abstractmethod
    def provable_lie(self, worker_id: int) -> Lie | None:
        """One outvoted result of a worker in a paid job whose task is final, with at least a quorum (>= 2)
        of distinct other workers' signed results agreeing on the accepted answer (none of them
        quarantined) and fewer with the worker's: what can be shown to anyone. None if there is no
        such result (a tie is none)."""

    @abc.abstractmethod
    def signed_batch(self, batch_id: int) -> SignedBatch:
        """A stored result batch with the values its signature covers."""

    @abc.abstractmethod
    def unslashed_quarantined(self) -> list[WorkerRecord]:
        """Quarantined workers with no slash recorded."""

    @abc.abstractmethod
    def add_slash(self, worker_id: int, job_id: str, evidence: str, amount: int, now: float) -> None:
        """Record a slash before it is sent (``evidence``: the bundle's blob digest); once per worker."""

    @abc.abstractmethod
    def set_slash_tx(self, worker_id: int, tx_hash: str) -> None:
        """The slash of ``worker_id`` was mined in ``tx_hash``."""

    @abc.abstractmethod
    def list_slashes(self) -> list[dict[str, Any]]:
        """Every slash recorded, oldest first."""

    @abc.abstractmethod
    def held_jobs(self) -> list[JobRecord]:
        """Jobs held out of sealing, with ``seal_error`` saying why."""

    @abc.abstractmethod
    def update_epoch(self, number: int, **fields: Any) -> None:
        """Set columns of an epoch row (state, roots, dumps, tx_hash, raw_tx, block_number...)."""

    @abc.abstractmethod
    def get_epoch(self, number: int) -> EpochRecord | None:
        """One epoch."""

    @abc.abstractmethod
    def list_epochs(self, states: Sequence[str] | None = None) -> list[EpochRecord]:
        """Epochs in number order, only those in ``states`` when given."""

    @abc.abstractmethod
    def sealed_result(self, job_id: str, task_index: int) -> SealedResult | None:
        """The accepted result of a task and its epoch; None if the task has no accepted result."""

    @abc.abstractmethod
    def models_to_anchor(self) -> list[ModelRecord]:
        """Published models whose hash is not yet anchored on chain."""

    @abc.abstractmethod
    def set_model_anchor(self, model_hash: str, tx_hash: str, block_number: int | None) -> None:
        """Record the publishModel transaction of a model (block None while not mined)."""

    # -- trust ------------------------------------------------------------------------

    @abc.abstractmethod
    def lease_quota(self, worker_id: int, task_types: Sequence[str]) -> tuple[int, int]:
        """(Most replicas the worker may lease now, its validated results so far)."""

    @abc.abstractmethod
    def record_run(self, worker_id: int, task_types: Sequence[str]) -> int:
        """The worker's run as validation counts it, lowest over ``task_types``; 0 without a record."""

    @abc.abstractmethod
    def reputations(self) -> list[tuple[WorkerRecord, Reputation]]:
        """Every worker's record per task type."""

    @abc.abstractmethod
    def tasks_to_validate(self, task_ids: Sequence[int] | None = None) -> list[TaskCheck]:
        """Tasks with pending results (all of them when ``task_ids`` is None, e.g. after a restart)."""

    @abc.abstractmethod
    def apply_validation(self, write: ValidationWrite, now: float) -> list[str]:
        """Write a validation round and its consequences atomically; returns the jobs it completed."""

    @abc.abstractmethod
    def trust_counts(self, job_id: str) -> dict[str, Any]:
        """Results by status and executed replicas by kind."""

    # -- figures ------------------------------------------------------------------

    @abc.abstractmethod
    def grid_figures(self, seen_since: float, replicas: bool = True) -> GridFigures:
        """Leases, queues, workers (active: seen since ``seen_since``), jobs and epochs.

        ``replicas``: also count the replicas of running jobs by kind, state and job (O(those replicas));
        without, ``replicas`` and ``queue_depth`` are empty and only the total ``queued`` is counted."""

    @abc.abstractmethod
    def failure_reasons(self, job_id: str, limit: int = 20) -> list[tuple[str, int]]:
        """(error a worker reported, how many replicas) for a job, most frequent first."""

    # -- scale-out: several coordinator processes on one database ---------------------

    @property
    @abc.abstractmethod
    def shared(self) -> bool:
        """Whether several processes may use this store at once (PostgreSQL), so that what one process
        remembers (request nonces, who runs a periodic duty) must live in the database."""

    @abc.abstractmethod
    def hold_duty(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew the lease on periodic duty ``name`` for ``holder`` until ``now + ttl``.

        True when ``holder`` holds it now: it held it already, nobody did, or the last holder's lease
        expired (that process died or stalled). At most one holder's lease is unexpired at a time."""

    @abc.abstractmethod
    def release_duty(self, name: str, holder: str) -> None:
        """Give up ``name`` if ``holder`` holds it (on a clean stop, so another process takes over at once)."""

    @abc.abstractmethod
    def duty_holders(self, now: float) -> dict[str, str]:
        """duty -> the process holding its unexpired lease."""

    @abc.abstractmethod
    def remember_nonce(self, address: str, nonce: str, expires_at: float) -> bool:
        """Record a signed request's nonce; False if it is recorded already (a replay)."""

    @abc.abstractmethod
    def purge_nonces(self, now: float) -> int:
        """Forget nonces whose window has passed; returns how many."""

    @abc.abstractmethod
    def locked_tasks(self, task_ids: Sequence[int] | None) -> contextlib.AbstractContextManager[None]:
        """A validation round's transaction: ``task_ids`` (every task with pending results when None)
        are locked until it ends, and this thread's store calls inside it run in it. Two rounds over one
        task, in any two processes, run one after the other: a task is decided exactly once."""

    # -- retention ----------------------------------------------------------------

    @abc.abstractmethod
    def jobs_to_archive(self, finished_before: float, sealed: bool, limit: int = 10) -> list[str]:
        """Finished jobs whose per-replica rows may be archived and purged (see store/sql_retention.py)."""

    @abc.abstractmethod
    def archive_rows(self, job_id: str, table: str) -> Iterator[list[dict[str, Any]]]:
        """A job's rows of ``table`` (tasks, replicas, results, result_batches), a batch at a time."""

    @abc.abstractmethod
    def purge_job(self, job_id: str, archive_hash: str, now: float) -> int:
        """Delete a job's task, replica and result rows, recording its archive; the rows deleted."""
