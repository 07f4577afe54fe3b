"""The database schema, declared once with SQLAlchemy Core.

Alembic migrations (``store/migrations``) must produce exactly this schema; a
test compares the two. Times are unix seconds (float) so SQLite and
PostgreSQL agree without time-zone handling.
"""

from __future__ import annotations

import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData()


def written_out(column: Column, value: str | int) -> ColumnElement[bool]:
    """``column = value`` with the value in the statement's text, not bound: a partial index whose
    WHERE names that value serves only a query that names it too (SQLite plans without the bound
    value, or re-plans on every call; PostgreSQL's generic plans never use it)."""
    return column == literal_column(repr(value) if isinstance(value, str) else str(int(value)))


class ReplicaState(enum.IntEnum):
    READY = 0  # waiting for a worker
    LEASED = 1  # held by a worker until its lease expires
    DONE = 2  # a result came back
    EXPIRED = 3  # the lease ran out; a new replica was issued
    CANCELLED = 5  # the job was cancelled
    FAILED = 6  # the worker reported an error for it


class TaskState(str, enum.Enum):
    OPEN = "open"  # waiting for results or for a quorum
    # accepted alone from a worker with a record. Its result becomes final (results.final) after the
    # worker's later checks, and the task stays provisional: the state says how it was accepted, and
    # finality is the result's, so no task row is written a second time. An audit that confirms it
    # makes it DONE.
    PROVISIONAL = "provisional"
    DONE = "done"  # accepted and final
    INCONCLUSIVE = "inconclusive"  # max_replicas results and no quorum: reported, not guessed
    FAILED = "failed"  # every attempt reported an error
    # an item the submitter labelled (--gold FILE): only ever leased as gold, its answer ``known``;
    # outside the job's tasks as its submitter sees them (idx from n_tasks on, not in its output)
    GOLD = "gold"


class JobState(str, enum.Enum):
    UNFUNDED = "unfunded"  # a paid job whose escrow is not funded yet: no replica exists
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # finished, and not one task accepted: every task failed or was inconclusive
    CANCELLED = "cancelled"


class ResultStatus(str, enum.Enum):
    PENDING = "pending"  # waiting for validation (a quorum, or the canonical result to compare with)
    ACCEPTED = "accepted"  # the task's canonical result: counted, sealed (once final) and rewarded
    VALID = "valid"  # agreed with the canonical result: rewarded too
    INVALID = "invalid"  # disagreed with the quorum or with a known answer: never rewarded
    REJECTED = "rejected"  # from a quarantined worker, or a provisional result revoked
    DUPLICATE = "duplicate"  # the task was already decided: recorded, not counted
    LATE = "late"  # came after its lease expired: recorded, not counted
    ERROR = "error"  # the worker said it could not compute it


class ReplicaKind(str, enum.Enum):
    NORMAL = "normal"  # one of the task's replicas for its quorum
    GOLD = "gold"  # a task whose answer is known, to test the worker it goes to
    AUDIT = "audit"  # re-checks a result accepted without replication


tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("role", String(20), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

# Grants to read a blob that the other tables do not imply: the token that uploaded the bytes,
# and the owner of the job whose output (or other reduced artefact) they are. Knowing a hash
# is no credential; coordinator/access.py decides every read.
blob_readers = Table(
    "blob_readers",
    metadata,
    Column("blob", String(64), primary_key=True),
    Column("token_id", Integer, ForeignKey("tokens.id"), primary_key=True),
)

models = Table(
    "models",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("task_type", String(50), nullable=False),
    Column("manifest", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("anchor_tx", String(66), nullable=True),  # publishModel transaction
    Column("anchor_block", Integer, nullable=True),  # set once it is mined
    UniqueConstraint("name", "version", name="uq_models_name_version"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("address", String(42), nullable=False, unique=True),
    Column("name", String(100), nullable=False),
    Column("owner", String(100), nullable=False),
    Column("registered_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("quarantined_at", Float, nullable=True),
    Column("quarantine_reason", Text, nullable=True),
    Column("network", String(64), nullable=True),  # e.g. 203.0.113.0/24, for placement by network
    # quarantined workers that shared this one's owner or network when it first registered:
    # a fresh key is no clean slate for the operator of a quarantined one
    Column("prior_quarantines", Integer, nullable=False, server_default=text("0")),
    # vouched for by an operator (registered with an operator token): a root of trust for gold
    Column("trusted", Boolean, nullable=False, server_default=text("false")),
    # quarantined workers whose decisions this one shared (agreed with): a collusion signal
    Column("partner_quarantines", Integer, nullable=False, server_default=text("0")),
    # what it reported at registration (coopgrid.platforms.Platform as JSON) and the class derived from it:
    # replicas of a task whose type needs homogeneous redundancy stay within one class
    Column("platform", Text, nullable=True),
    Column("platform_class", String(128), nullable=True),
)
# a grid's every worker ever is a long table: those seen lately (each lease counts them), and a
# worker's kin (each lease keeps a task's replicas apart by owner, network and suspicion)
Index("ix_workers_last_seen", workers.c.last_seen)
Index("ix_workers_owner", workers.c.owner)
Index("ix_workers_network", workers.c.network)
Index("ix_workers_partner_quarantines", workers.c.partner_quarantines)

#: facts about the grid itself, e.g. its id, which worker signatures bind
grid_meta = Table(
    "grid_meta",
    metadata,
    Column("key", String(50), primary_key=True),
    Column("value", Text, nullable=False),
)

reputation = Table(
    "reputation",
    metadata,
    Column("worker_id", Integer, ForeignKey("workers.id"), primary_key=True),
    Column("task_type", String(50), primary_key=True),
    Column("run", Integer, nullable=False, server_default=text("0")),  # consecutive validated results
    Column("valid", Integer, nullable=False, server_default=text("0")),
    Column("invalid", Integer, nullable=False, server_default=text("0")),
    Column("errors", Integer, nullable=False, server_default=text("0")),
    Column("timeouts", Integer, nullable=False, server_default=text("0")),
    Column("gold_passed", Integer, nullable=False, server_default=text("0")),
    Column("gold_failed", Integer, nullable=False, server_default=text("0")),
    Column("checks_passed", Integer, nullable=False, server_default=text("0")),  # gold and audits passed
    Column("quota", Integer, nullable=False),  # most replicas per lease
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner_token_id", Integer, ForeignKey("tokens.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("task_type", String(50), nullable=False),
    Column("model_hash", String(64), ForeignKey("models.hash"), nullable=True),
    Column("params", Text, nullable=False),
    Column("dataset_hash", String(64), nullable=False),
    Column("n_items", Integer, nullable=False),
    Column("n_tasks", Integer, nullable=False),
    Column("task_size", Integer, nullable=False),
    Column("reward_per_task", String(80), nullable=False),
    Column("state", String(20), nullable=False),
    Column("tasks_done", Integer, nullable=False, server_default=text("0")),
    Column("tasks_failed", Integer, nullable=False, server_default=text("0")),
    Column("tasks_inconclusive", Integer, nullable=False, server_default=text("0")),
    Column("policy", Text, nullable=False, server_default=text("'{}'")),  # TrustPolicy as JSON
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("summary", Text, nullable=True),
    Column("output_hash", String(64), nullable=True),
    # why the job's results are held out of sealing (an epoch with them could not be built or committed)
    Column("seal_error", Text, nullable=True),
    Column("funder", String(42), nullable=True),  # the account whose escrow pays a paid job
    # a paid job's escrow is closed on chain (its funder took the rest back): the sealer stops looking at it
    Column("escrow_closed", Boolean, nullable=False, server_default=text("false")),
    Column("min_stake", String(80), nullable=False, server_default=text("'0'")),  # to lease its replicas
    # JSON list of the dataset's further shards (blobs) after dataset_hash, in item order; NULL: one blob
    Column("shards", Text, nullable=True),
    # retention: the Parquet archive (blob) of the job's purged task, replica and result rows
    Column("archive_hash", String(64), nullable=True),
    Column("archived_at", Float, nullable=True),
)
# who may read a dataset blob: its jobs' owners and the workers leasing them (coordinator/access.py)
Index("ix_jobs_dataset", jobs.c.dataset_hash)
# running jobs (every lease, and the scheduler's once-a-second look): a grid's every job ever is a long table
Index("ix_jobs_state", jobs.c.state)
# a page of jobs, newest first: a submitter's, or every job for an operator (GET /v1/jobs)
Index("ix_jobs_owner_created", jobs.c.owner_token_id, jobs.c.created_at, jobs.c.id)
Index("ix_jobs_created", jobs.c.created_at, jobs.c.id)
# paid jobs whose escrow is still open: the few the sealer's loop looks at to close, not every paid job ever
ESCROW_OPEN = "funder IS NOT NULL AND NOT escrow_closed"  # the index serves a query written exactly so
Index("ix_jobs_escrow_open", jobs.c.id, sqlite_where=text(ESCROW_OPEN), postgresql_where=text(ESCROW_OPEN))

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("input_hash", String(64), nullable=False),
    Column("input_data", LargeBinary, nullable=True),  # small inputs inline; else a blob
    Column("first_item", Integer, nullable=False),
    Column("n_items", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("errors", Integer, nullable=False, server_default=text("0")),
    Column("issued", Integer, nullable=False, server_default=text("1")),  # normal replicas made so far
    # its answer came from a root of trust (a trusted worker took part in accepting it): fit for gold
    Column("rooted", Boolean, nullable=False, server_default=text("false")),
    # a submitter's gold item (state 'gold'): the answer it supplied, as the task type's canonical bytes
    Column("known", LargeBinary, nullable=True),
    UniqueConstraint("job_id", "idx", name="uq_tasks_job_idx"),
)
# who may read a task's input blob (inline inputs are no blobs, so they stay out of the index)
Index(
    "ix_tasks_input_blob",
    tasks.c.input_hash,
    sqlite_where=text("input_data IS NULL"),
    postgresql_where=text("input_data IS NULL"),
)

leases = Table(
    "leases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("worker_id", Integer, ForeignKey("workers.id"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("state", String(10), nullable=False),  # open | closed | expired
)
Index(
    "ix_tasks_rooted", tasks.c.id, sqlite_where=text("state = 'done' AND rooted"),
    postgresql_where=text("state = 'done' AND rooted"),
)
Index("ix_leases_open", leases.c.expires_at, sqlite_where=text("state = 'open'"), postgresql_where=text("state = 'open'"))
# a worker's live leases, for reading the blobs they need (coordinator/access.py)
Index(
    "ix_leases_worker_open", leases.c.worker_id, sqlite_where=text("state = 'open'"), postgresql_where=text("state = 'open'")
)

replicas = Table(
    "replicas",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("worker_id", Integer, ForeignKey("workers.id"), nullable=True),
    Column("lease_id", Integer, ForeignKey("leases.id"), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("kind", String(10), nullable=False, server_default=text("'normal'")),
)
Index("ix_replicas_ready", replicas.c.id, sqlite_where=text("state = 0"), postgresql_where=text("state = 0"))
# leases serve ready replicas in task order: a task already started (its second replica, an
# audit, a tie-breaker) goes out before the first replicas of later tasks
Index(
    "ix_replicas_ready_task", replicas.c.task_id, sqlite_where=text("state = 0"), postgresql_where=text("state = 0")
)
Index("ix_replicas_lease", replicas.c.lease_id)
Index("ix_replicas_job_state", replicas.c.job_id, replicas.c.state)
Index("ix_replicas_task", replicas.c.task_id)

result_batches = Table(
    "result_batches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("worker_id", Integer, ForeignKey("workers.id"), nullable=False),
    Column("lease_id", Integer, ForeignKey("leases.id"), nullable=False),
    Column("signature", String(132), nullable=False),
    # JSON [[replica id, output hash], ...] in the signed order: with the replicas, the signed values
    # (evidence for a slash: the signature is over the whole batch)
    Column("signed", Text, nullable=True),
    Column("size", Integer, nullable=False),
    Column("received_at", Float, nullable=False),
)
# the foreign key's own index: deleting a lease that found no work checks its batches
Index("ix_result_batches_lease", result_batches.c.lease_id)

results = Table(
    "results",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("replica_id", Integer, ForeignKey("replicas.id"), nullable=False),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("worker_id", Integer, ForeignKey("workers.id"), nullable=False),
    Column("batch_id", Integer, ForeignKey("result_batches.id"), nullable=False),
    Column("output_hash", String(64), nullable=False),
    Column("output", LargeBinary, nullable=True),
    Column("error", Text, nullable=True),
    Column("status", String(10), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("epoch", Integer, nullable=True),  # the epoch this accepted result was sealed in
    Column("final", Boolean, nullable=False, server_default=text("false")),  # sealable and rewardable
    Column("checks_at", Integer, nullable=True),  # provisional: the worker's passed checks when accepted
)
# The database itself guarantees that no task is ever counted twice.
Index(
    "uq_results_accepted_task",
    results.c.task_id,
    unique=True,
    sqlite_where=text("status = 'accepted'"),
    postgresql_where=text("status = 'accepted'"),
)
Index("ix_results_job_status", results.c.job_id, results.c.status)
Index("ix_results_epoch", results.c.epoch)
Index("ix_results_task", results.c.task_id)
Index("ix_results_worker_final", results.c.worker_id, results.c.final)
Index("ix_results_replica", results.c.replica_id)
# provisional results by worker and the checks they wait for: finality bookkeeping reads only these,
# however many final results the worker has piled up
Index(
    "ix_results_provisional",
    results.c.worker_id,
    results.c.checks_at,
    sqlite_where=text("status = 'accepted' AND final = false"),
    postgresql_where=text("status = 'accepted' AND final = false"),
)
# final answers by task: where gold is drawn from (a provisional task's result becomes final in place)
Index(
    "ix_results_final_task",
    results.c.task_id,
    sqlite_where=text("status = 'accepted' AND final"),
    postgresql_where=text("status = 'accepted' AND final"),
)
# results waiting for a validation round: few at any time, however many a grid has recorded (the
# catch-up round looks for them here)
Index(
    "ix_results_pending",
    results.c.task_id,
    sqlite_where=text("status = 'pending'"),
    postgresql_where=text("status = 'pending'"),
)
# results that agreed with a task still provisional, unpaid until it is final: few, so finality
# looks here for them instead of at every task it makes final
Index(
    "ix_results_unpaid",
    results.c.task_id,
    sqlite_where=text("status = 'valid' AND final = false"),
    postgresql_where=text("status = 'valid' AND final = false"),
)


# Sealed results a quarantined worker helped decide: on chain already, so reported, not reopened.
disputes = Table(
    "disputes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("result_id", Integer, ForeignKey("results.id"), nullable=False),  # the sealed (accepted) result
    Column("worker_id", Integer, ForeignKey("workers.id"), nullable=False),  # the quarantined worker
    Column("epoch", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("result_id", "worker_id", name="uq_disputes_result_worker"),
)
Index("ix_disputes_job", disputes.c.job_id)


class EpochState(str, enum.Enum):
    OPEN = "open"  # results assigned; roots not computed yet
    SEALED = "sealed"  # roots computed and dumped; no transaction yet
    SENT = "sent"  # transaction signed and stored (maybe broadcast); waiting for it
    COMMITTED = "committed"  # mined on chain


slashes = Table(
    "slashes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("worker_id", Integer, ForeignKey("workers.id"), nullable=False, unique=True),  # once per quarantine
    Column("job_id", String(64), nullable=False),  # the harmed job, whose escrow gets the tokens
    Column("evidence", String(64), nullable=False),  # blob: the evidence bundle (its sha256 is on chain)
    Column("amount", String(80), nullable=False),
    Column("tx_hash", String(66), nullable=True),  # set once mined
    Column("created_at", Float, nullable=False),
)

epochs = Table(
    "epochs",
    metadata,
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("state", String(10), nullable=False),
    Column("result_count", Integer, nullable=False),
    Column("results_root", String(66), nullable=True),
    Column("rewards_root", String(66), nullable=True),
    Column("results_dump", String(64), nullable=True),  # blob: StandardMerkleTree dump
    Column("rewards_dump", String(64), nullable=True),
    Column("spends_dump", String(64), nullable=True),  # blob: JSON {job id: [funder, cumulative spend]}
    Column("tx_hash", String(66), nullable=True),
    Column("raw_tx", LargeBinary, nullable=True),
    Column("block_number", Integer, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("committed_at", Float, nullable=True),
)

# Scale-out: what several coordinator processes on one database agree through.

duty_leases = Table(
    "duty_leases",
    metadata,
    # a periodic duty (reaper, sealer, ...) run by one process at a time: the one whose lease has not expired
    Column("name", String(40), primary_key=True),
    Column("holder", String(120), nullable=False),  # host:pid:random of the process
    Column("expires_at", Float, nullable=False),
)

request_nonces = Table(
    "request_nonces",
    metadata,
    # a worker's signed request, remembered for the clock window so a replay to any process is refused
    Column("address", String(42), primary_key=True),
    Column("nonce", String(80), primary_key=True),
    Column("expires_at", Float, nullable=False),
    Index("ix_request_nonces_expires_at", "expires_at"),
)
