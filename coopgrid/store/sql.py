"""The Store on SQLAlchemy Core: SQLite (WAL, the embedded default) and PostgreSQL.

Hot paths (``lease``, ``record_results``) are a handful of set-based
statements per batch, never a round trip per item. On SQLite one process
owns the file and a lock serialises writers (readers run alongside in WAL);
on PostgreSQL leases are taken with ``FOR UPDATE SKIP LOCKED`` so several
coordinator processes can share one database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, create_engine, event, func, insert, or_, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError, OperationalError

from coopgrid.errors import ConfigError, Conflict, DatabaseUnavailable, JobNotFound, LeaseError
from coopgrid.store import schema as s
from coopgrid.store.dbstats import maybe_attach
from coopgrid.store.base import (
    RULES_CACHED,
    AcceptedOutput,
    IncomingResult,
    JobRecord,
    Lease,
    LeasedReplica,
    LeaseJob,
    LeaseReplicaView,
    LeaseView,
    ModelRecord,
    NewGoldTask,
    NewJob,
    NewTask,
    Lone,
    LoneJudge,
    RecordOutcome,
    Store,
    Token,
    WorkerRecord,
)
from coopgrid.store.sql_access import AccessQueries
from coopgrid.store.sql_duties import DutyQueries
from coopgrid.store.sql_ledger import LedgerQueries
from coopgrid.store.sql_slashes import SlashQueries
from coopgrid.store.sql_metrics import MetricsQueries
from coopgrid.store.sql_retention import RetentionQueries
from coopgrid.store.sql_tokens import REVOKED, TokenQueries
from coopgrid.store.sql_trust import TrustQueries
from coopgrid.store.schema import JobState, ReplicaKind, ReplicaState, ResultStatus, TaskState

log = logging.getLogger(__name__)

#: how many attempts that end in an error a task gets before it is marked failed
MAX_TASK_ERRORS = 3
#: tasks inserted per statement while a job streams in: memory stays at one chunk's rows
TASK_INSERT_CHUNK = 10_000


#: the ready state written into lease statements, not bound: the partial indexes of ready replicas
#: (ix_replicas_ready, ix_replicas_ready_task) serve only a statement that names it (PostgreSQL's
#: generic plans, which a prepared statement gets after five runs, never use them for a bound value:
#: each lease then read far more of the table, slower with every job the grid had run)
READY = int(ReplicaState.READY)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a committed transaction survives the process being
    # killed (SIGKILL); only an OS crash or power loss can lose the last ones.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _postgres_session(dbapi_conn: Any, _record: Any) -> None:
    # short statements by the thousand: JIT compiling one whose estimated cost crosses
    # jit_above_cost (a lease over a big job, once the tables are analyzed) took longer than running it;
    # likewise parallel workers: once a grid's tables had grown past min_parallel_table_scan_size, the
    # planner gave a lease's 1,000-row lookups a parallel worker each (a process started per statement:
    # 8 ms instead of 2), so every job ran slower than the one before
    with dbapi_conn.cursor() as cur:
        cur.execute("SET jit = off")
        cur.execute("SET max_parallel_workers_per_gather = 0")
    dbapi_conn.commit()


def open_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        maybe_attach(engine)
        return engine
    if url.startswith("postgresql"):
        engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        event.listen(engine, "connect", _postgres_session)
        maybe_attach(engine)
        return engine
    raise ConfigError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql+psycopg://...")


def _check_autovacuum(engine: Engine) -> None:
    """Warn an operator whose server does not vacuum: every lease, result and round leaves dead row
    versions behind, and without autovacuum the tables keep them all (each job then runs a little
    slower than the one before, and the database only grows)."""
    with engine.connect() as conn:
        on = conn.exec_driver_sql("SHOW autovacuum").scalar()
    if on != "on":
        log.warning(
            "autovacuum is off on this PostgreSQL server: the grid's tables will keep every dead row "
            "version and slow down job after job; turn it on (ALTER SYSTEM SET autovacuum = on; "
            "SELECT pg_reload_conf()) or VACUUM the database regularly",
            extra={"event": "autovacuum_off"},
        )


def _job(row: Any) -> JobRecord:
    return JobRecord(
        id=row.id,
        owner_token_id=row.owner_token_id,
        name=row.name,
        task_type=row.task_type,
        model_hash=row.model_hash,
        params=json.loads(row.params),
        dataset_hash=row.dataset_hash,
        n_items=row.n_items,
        n_tasks=row.n_tasks,
        task_size=row.task_size,
        reward_per_task=int(row.reward_per_task),
        state=row.state,
        tasks_done=row.tasks_done,
        tasks_failed=row.tasks_failed,
        tasks_inconclusive=row.tasks_inconclusive,
        policy=json.loads(row.policy),
        created_at=row.created_at,
        finished_at=row.finished_at,
        summary=json.loads(row.summary) if row.summary else None,
        output_hash=row.output_hash,
        seal_error=row.seal_error,
        funder=row.funder,
        min_stake=int(row.min_stake),
        shards=tuple(json.loads(row.shards)) if row.shards else (),
        archive_hash=row.archive_hash,
        archived_at=row.archived_at,
    )


def _model(row: Any) -> ModelRecord:
    return ModelRecord(
        hash=row.hash,
        name=row.name,
        version=row.version,
        task_type=row.task_type,
        manifest=json.loads(row.manifest),
        size=row.size,
        created_at=row.created_at,
        anchor_tx=row.anchor_tx,
        anchor_block=row.anchor_block,
    )


def _worker(row: Any) -> WorkerRecord:
    return WorkerRecord(
        id=row.id,
        address=row.address,
        name=row.name,
        owner=row.owner,
        registered_at=row.registered_at,
        last_seen=row.last_seen,
        quarantined_at=row.quarantined_at,
        quarantine_reason=row.quarantine_reason,
        network=row.network,
        prior_quarantines=row.prior_quarantines,
        trusted=bool(row.trusted),
        partner_quarantines=row.partner_quarantines,
        platform=json.loads(row.platform) if row.platform else None,
        platform_class=row.platform_class,
    )


class SqlStore(
    AccessQueries, DutyQueries, TrustQueries, LedgerQueries, SlashQueries, MetricsQueries, TokenQueries,
    RetentionQueries, Store,
):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # job id -> (task type, policy as stored, quorum of one): a job's never change (see record_results)
        self._job_rules: dict[str, tuple[str, str, bool]] = {}
        self._grid_id: str | None = None
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        self._held = threading.local()  # this thread's validation round's transaction (see locked_tasks)

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> SqlStore:
        engine = open_engine(url)
        if migrate:
            from coopgrid.store.migrate import upgrade

            upgrade(engine)
        if engine.dialect.name == "postgresql":
            _check_autovacuum(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        held = getattr(self._held, "conn", None)
        if held is not None:  # inside a validation round: its transaction, committed when the round ends
            yield held
            return
        with self._write_lock:
            try:
                with self.engine.begin() as conn:
                    yield conn
            except OperationalError as exc:
                raise DatabaseUnavailable(f"the database failed: {exc.orig}") from exc

    def _locking(self, q: Any, skip_locked: bool = False) -> Any:
        """``q`` FOR UPDATE on PostgreSQL (several processes); SQLite's single writer needs no row locks."""
        return q.with_for_update(skip_locked=skip_locked) if self.dialect == "postgresql" else q

    def _read(self) -> contextlib.AbstractContextManager[Any]:
        held = getattr(self._held, "conn", None)
        return contextlib.nullcontext(held) if held is not None else self.engine.connect()

    # -- tokens -------------------------------------------------------------------

    def add_token(self, name: str, role: str, secret_hash: str, now: float) -> Token:
        with self._write() as conn:
            token_id = conn.execute(
                insert(s.tokens).values(name=name, role=role, secret_hash=secret_hash, created_at=now)
            ).inserted_primary_key[0]
        return Token(id=token_id, name=name, role=role)

    def token_by_hash(self, secret_hash: str) -> Token | None:
        with self._read() as conn:
            row = conn.execute(select(s.tokens).where(s.tokens.c.secret_hash == secret_hash)).first()
        return Token(id=row.id, name=row.name, role=row.role) if row else None

    def grid_id(self) -> str:
        if self._grid_id is None:
            q = select(s.grid_meta.c.value).where(s.grid_meta.c.key == "grid_id")
            with self._read() as conn:
                value = conn.execute(q).scalar()
            if value is None:
                try:
                    with self._write() as conn:
                        conn.execute(insert(s.grid_meta).values(key="grid_id", value=secrets.token_hex(16)))
                except IntegrityError:  # another coordinator process of this grid made it first
                    pass
                with self._read() as conn:
                    value = conn.execute(q).scalar_one()
            self._grid_id = value
        return self._grid_id

    def count_tokens(self, role: str | None = None) -> int:
        q = select(func.count()).select_from(s.tokens).where(s.tokens.c.secret_hash.not_like(REVOKED + "%"))
        if role:
            q = q.where(s.tokens.c.role == role)
        with self._read() as conn:
            return conn.execute(q).scalar_one()

    # -- models -----------------------------------------------------------------

    def add_model(self, record: ModelRecord) -> ModelRecord:
        with self._write() as conn:
            existing = conn.execute(select(s.models).where(s.models.c.hash == record.hash)).first()
            if existing:
                return _model(existing)
            conn.execute(
                insert(s.models).values(
                    hash=record.hash,
                    name=record.name,
                    version=record.version,
                    task_type=record.task_type,
                    manifest=json.dumps(record.manifest, sort_keys=True),
                    size=record.size,
                    created_at=record.created_at,
                )
            )
        return record

    def get_model(self, ref: str) -> ModelRecord | None:
        q = select(s.models)
        if ":" in ref:
            name, _, version = ref.rpartition(":")
            if not version.isdigit():
                return None
            q = q.where(s.models.c.name == name, s.models.c.version == int(version))
        else:
            by_name = q.where(s.models.c.name == ref).order_by(s.models.c.version.desc()).limit(1)
            with self._read() as conn:
                row = conn.execute(select(s.models).where(s.models.c.hash == ref)).first()
                row = row or conn.execute(by_name).first()
            return _model(row) if row else None
        with self._read() as conn:
            row = conn.execute(q).first()
        return _model(row) if row else None

    def list_models(self) -> list[ModelRecord]:
        with self._read() as conn:
            rows = conn.execute(select(s.models).order_by(s.models.c.created_at.desc())).all()
        return [_model(r) for r in rows]

    def next_model_version(self, name: str) -> int:
        with self._read() as conn:
            top = conn.execute(select(func.max(s.models.c.version)).where(s.models.c.name == name)).scalar()
        return (top or 0) + 1

    # -- workers ----------------------------------------------------------------

    def register_worker(
        self, address: str, name: str, owner: str, now: float, network: str | None = None,
        platform: dict[str, Any] | None = None, platform_class: str | None = None, trusted: bool = False,
    ) -> WorkerRecord:
        reported = {"platform": json.dumps(platform, sort_keys=True) if platform is not None else None,
                    "platform_class": platform_class}
        with self._write() as conn:
            row = conn.execute(select(s.workers).where(s.workers.c.address == address)).first()
            if row:
                conn.execute(
                    update(s.workers)
                    .where(s.workers.c.id == row.id)
                    # vouching is given by registering with an operator token, and kept until quarantine
                    .values(name=name, owner=owner, last_seen=now, network=network, trusted=row.trusted or trusted,
                            **reported)
                )
            else:
                lineage = [s.workers.c.network == network] if network else []
                if owner:
                    lineage.append(s.workers.c.owner == owner)
                prior = 0
                if lineage:
                    prior = conn.execute(
                        select(func.count())
                        .select_from(s.workers)
                        .where(s.workers.c.quarantined_at.is_not(None), or_(*lineage))
                    ).scalar_one()
                conn.execute(
                    insert(s.workers).values(
                        address=address, name=name, owner=owner, registered_at=now, last_seen=now, network=network,
                        prior_quarantines=prior, trusted=trusted, **reported,
                    )
                )
            row = conn.execute(select(s.workers).where(s.workers.c.address == address)).one()
        return _worker(row)

    def get_worker(self, address: str) -> WorkerRecord | None:
        with self._read() as conn:
            row = conn.execute(select(s.workers).where(s.workers.c.address == address)).first()
        return _worker(row) if row else None

    def list_workers(self) -> list[tuple[WorkerRecord, int]]:
        accepted = (
            select(s.results.c.worker_id, func.count().label("n"))
            .where(s.results.c.status.in_([ResultStatus.ACCEPTED.value, ResultStatus.VALID.value]))
            .group_by(s.results.c.worker_id)
            .subquery()
        )
        q = (
            select(s.workers, func.coalesce(accepted.c.n, 0).label("accepted"))
            .outerjoin(accepted, accepted.c.worker_id == s.workers.c.id)
            .order_by(s.workers.c.id)
        )
        with self._read() as conn:
            return [(_worker(r), r.accepted) for r in conn.execute(q)]

    # -- jobs -------------------------------------------------------------------

    def create_job(
        self, job: NewJob, tasks: Iterable[NewTask], now: float, gold: Sequence[NewGoldTask] = ()
    ) -> JobRecord:
        with self._write() as conn:
            conn.execute(
                insert(s.jobs).values(
                    id=job.id,
                    owner_token_id=job.owner_token_id,
                    name=job.name,
                    task_type=job.task_type,
                    model_hash=job.model_hash,
                    params=json.dumps(job.params, sort_keys=True),
                    dataset_hash=job.dataset_hash,
                    shards=json.dumps(list(job.shards)) if job.shards else None,
                    n_items=job.n_items,
                    n_tasks=0,
                    task_size=job.task_size,
                    reward_per_task=str(job.reward_per_task),
                    state=(JobState.UNFUNDED if job.funder else JobState.RUNNING).value,
                    funder=job.funder,
                    min_stake=str(job.min_stake),
                    tasks_done=0,
                    tasks_failed=0,
                    tasks_inconclusive=0,
                    policy=json.dumps(job.policy, sort_keys=True),
                    created_at=now,
                )
            )
            # the tasks stream in (a million-task job is never a list here), a chunk at a time
            n_tasks = n_items = 0
            for chunk in _chunks(tasks, TASK_INSERT_CHUNK):
                rows = [
                    (job.id, n_tasks + i, t.input_hash, t.input_data, t.first_item, t.n_items, TaskState.OPEN.value,
                     0, job.initial_replicas)
                    for i, t in enumerate(chunk)
                ]
                self._insert_tasks(conn, rows)
                n_tasks += len(rows)
                n_items += sum(t.n_items for t in chunk)
            conn.execute(
                update(s.jobs).where(s.jobs.c.id == job.id).values(n_tasks=n_tasks, n_items=job.n_items or n_items)
            )
            # the first replicas of every task, set-based rather than a row per round trip; a paid
            # job gets them once its escrow is funded (activate_job): until then nothing is leased
            for _ in range(0 if job.funder else job.initial_replicas):
                conn.execute(
                    text(
                        "INSERT INTO replicas (task_id, job_id, state, created_at, kind) "
                        "SELECT id, job_id, :ready, :now, 'normal' FROM tasks WHERE job_id = :job ORDER BY idx"
                    ),
                    {"ready": int(ReplicaState.READY), "now": now, "job": job.id},
                )
            if gold:  # after the first replicas: none is made for them
                conn.execute(
                    insert(s.tasks),
                    # numbered after the job's own tasks (a task index is signed as an unsigned number)
                    [{"job_id": job.id, "idx": n_tasks + i, "input_hash": g.input_hash, "input_data": g.input_data,
                      "first_item": 0, "n_items": g.n_items, "state": TaskState.GOLD.value, "errors": 0,
                      "issued": 0, "known": g.known} for i, g in enumerate(gold)],
                )
            row = conn.execute(select(s.jobs).where(s.jobs.c.id == job.id)).one()
        return _job(row)

    _TASK_COLUMNS = ("job_id", "idx", "input_hash", "input_data", "first_item", "n_items", "state", "errors", "issued")

    def _insert_tasks(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        """Rows into tasks: COPY on PostgreSQL through psycopg 3, executemany elsewhere."""
        raw = conn.connection.dbapi_connection
        if self.dialect == "postgresql" and hasattr(raw, "cursor") and type(raw).__module__.startswith("psycopg"):
            with raw.cursor() as cur, cur.copy(f"COPY tasks ({', '.join(self._TASK_COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        if conn.dialect.paramstyle == "qmark":
            mark = "?"
        elif conn.dialect.paramstyle in ("format", "pyformat"):
            mark = "%s"
        else:  # a driver of another style: SQLAlchemy binds it
            conn.execute(insert(s.tasks), [dict(zip(self._TASK_COLUMNS, row)) for row in rows])
            return
        # straight to the driver's executemany: a million tasks through SQLAlchemy's per-row
        # parameter processing cost more than the inserts themselves
        columns = ", ".join(self._TASK_COLUMNS)
        conn.exec_driver_sql(f"INSERT INTO tasks ({columns}) VALUES ({', '.join([mark] * len(rows[0]))})", rows)

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._read() as conn:
            row = conn.execute(select(s.jobs).where(s.jobs.c.id == job_id)).first()
        return _job(row) if row else None

    def list_jobs(
        self, owner_token_id: int | None = None, states: Sequence[str] | None = None, limit: int | None = None,
        before: JobRecord | None = None, prefix: str | None = None,
    ) -> list[JobRecord]:
        # newest first through ix_jobs_owner_created / ix_jobs_created; the id breaks ties of one instant
        q = select(s.jobs).order_by(s.jobs.c.created_at.desc(), s.jobs.c.id.desc())
        if owner_token_id is not None:
            q = q.where(s.jobs.c.owner_token_id == owner_token_id)
        if states is not None:
            q = q.where(s.jobs.c.state.in_(list(states)))  # ix_jobs_state
        if before is not None:
            q = q.where(tuple_(s.jobs.c.created_at, s.jobs.c.id) < tuple_(before.created_at, before.id))
        if prefix:
            if not all(c in "0123456789abcdef" for c in prefix):
                raise ValueError(f"a job id prefix is hex, not {prefix!r}")
            q = q.where(s.jobs.c.id.startswith(prefix, autoescape=True))
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [_job(r) for r in conn.execute(q)]

    def running_job_ids(self) -> set[str]:
        with self._read() as conn:
            return set(conn.execute(select(s.jobs.c.id).where(s.written_out(s.jobs.c.state, JobState.RUNNING.value)))
                       .scalars())

    def cancel_job(self, job_id: str, now: float) -> JobRecord:
        with self._write() as conn:
            row = conn.execute(select(s.jobs).where(s.jobs.c.id == job_id)).first()
            if row is None:
                raise JobNotFound(job_id=job_id)
            if row.state not in (JobState.RUNNING.value, JobState.UNFUNDED.value):
                raise Conflict(f"job {job_id} is already {row.state}", job_id=job_id)
            conn.execute(
                update(s.jobs)
                .where(s.jobs.c.id == job_id)
                .values(state=JobState.CANCELLED.value, finished_at=now)
            )
            conn.execute(
                update(s.replicas)
                .where(
                    s.replicas.c.job_id == job_id,
                    s.replicas.c.state.in_([int(ReplicaState.READY), int(ReplicaState.LEASED)]),
                )
                .values(state=int(ReplicaState.CANCELLED))
            )
            row = conn.execute(select(s.jobs).where(s.jobs.c.id == job_id)).one()
        return _job(row)

    def replica_counts(self, job_id: str) -> dict[str, int]:
        q = (
            select(s.replicas.c.state, func.count())
            .where(s.replicas.c.job_id == job_id)
            .group_by(s.replicas.c.state)
        )
        with self._read() as conn:
            return {ReplicaState(state).name.lower(): n for state, n in conn.execute(q)}

    def finish_job(
        self, job_id: str, summary: dict[str, Any], output_hash: str, now: float, artefacts: Sequence[str] = (),
        failed: bool = False,
    ) -> None:
        with self._write() as conn:
            owner = conn.execute(
                update(s.jobs)
                .where(s.jobs.c.id == job_id, s.jobs.c.state == JobState.RUNNING.value)
                .values(
                    state=(JobState.FAILED if failed else JobState.DONE).value,
                    finished_at=now,
                    summary=json.dumps(summary, sort_keys=True),
                    output_hash=output_hash,
                )
                .returning(s.jobs.c.owner_token_id)
            ).scalar()
            if owner is not None:
                self._grant_blobs(conn, [output_hash, *artefacts], owner)

    def set_cancelled_output(
        self, job_id: str, summary: dict[str, Any], output_hash: str, artefacts: Sequence[str] = ()
    ) -> None:
        with self._write() as conn:
            owner = conn.execute(
                update(s.jobs)
                .where(s.jobs.c.id == job_id, s.jobs.c.state == JobState.CANCELLED.value, s.jobs.c.output_hash.is_(None))
                .values(summary=json.dumps(summary, sort_keys=True), output_hash=output_hash)
                .returning(s.jobs.c.owner_token_id)
            ).scalar()
            if owner is not None:
                self._grant_blobs(conn, [output_hash, *artefacts], owner)

    def complete_unfinished_jobs(self) -> list[str]:
        q = select(s.jobs.c.id).where(
            s.jobs.c.state == JobState.RUNNING.value,
            s.jobs.c.tasks_done + s.jobs.c.tasks_failed + s.jobs.c.tasks_inconclusive >= s.jobs.c.n_tasks,
        )
        with self._read() as conn:
            return list(conn.execute(q).scalars())

    def accepted_outputs(self, job_id: str) -> Iterator[AcceptedOutput]:
        # a page of tasks at a time, by the job's (job_id, idx) index: a million outputs are never fetched at
        # once, and no server-side cursor is held open (PostgreSQL plans those for the first rows, and without
        # fresh statistics that plan sorted whole tables through temp files while the job waited to finish)
        page = 2000
        last = -1
        while True:
            # the page of tasks first (a subquery with its own LIMIT, never flattened), then each one's
            # accepted result by task: PostgreSQL without statistics planned the join the other way
            # round, a scan of every result of the grid per page (15 s a page at a million)
            tasks_page = (
                select(s.tasks.c.id, s.tasks.c.idx, s.tasks.c.first_item, s.tasks.c.n_items)
                .where(s.tasks.c.job_id == job_id, s.tasks.c.idx > last)
                .order_by(s.tasks.c.idx)
                .limit(page)
                .subquery()
            )
            q = (
                select(tasks_page.c.idx, tasks_page.c.first_item, tasks_page.c.n_items, s.workers.c.address,
                       s.results.c.id.label("result_id"), s.results.c.output)
                .outerjoin(s.results, (s.results.c.task_id == tasks_page.c.id)
                           & (s.results.c.status == ResultStatus.ACCEPTED.value))
                .outerjoin(s.workers, s.workers.c.id == s.results.c.worker_id)
                .order_by(tasks_page.c.idx)
            )
            with self._read() as conn:
                rows = conn.execute(q).all()
            for row in rows:
                if row.result_id is not None:  # a task that failed or was inconclusive has no output
                    yield AcceptedOutput(row.idx, row.first_item, row.n_items, row.address, row.output or b"")
            if len(rows) < page:
                return
            last = rows[-1].idx

    def job_workers(self, job_id: str) -> dict[str, int]:
        q = (
            select(s.workers.c.address, func.count())
            .join(s.results, s.results.c.worker_id == s.workers.c.id)
            .where(
                s.results.c.job_id == job_id,
                s.results.c.status.in_([ResultStatus.ACCEPTED.value, ResultStatus.VALID.value]),
            )
            .group_by(s.workers.c.address)
        )
        with self._read() as conn:
            return {address: n for address, n in conn.execute(q)}

    # -- leasing ------------------------------------------------------------------

    def lease(
        self,
        worker_id: int,
        max_replicas: int,
        task_types: Sequence[str],
        lease_seconds: float,
        now: float,
        gold: int = 0,
        rng: random.Random | None = None,
        separate_networks: bool = False,
        exclude_jobs: Sequence[str] = (),
        platform_class: str | None = None,
        homogeneous_jobs: Sequence[str] = (),
        audits: bool = True,
        audits_due: float | None = None,
    ) -> Lease | None:
        types = list(task_types)
        placement = (
            {"homogeneous": list(homogeneous_jobs), "platform_class": platform_class or "",
             "h_leased": int(ReplicaState.LEASED), "h_done": int(ReplicaState.DONE)}
            if homogeneous_jobs else {}
        )
        type_filter = " AND job_id IN (SELECT id FROM jobs WHERE state = 'running' AND task_type IN :types)"
        if self.dialect == "sqlite":
            # the unary + keeps SQLite off ix_replicas_job_state: through it, each lease read every
            # ready replica of the job and sorted them all for the first :n (a million-task job's
            # leases grew slower as it went); on ix_replicas_ready_task the order is the index's and
            # the walk stops after :n
            type_filter = type_filter.replace(" AND job_id", " AND +job_id")
        # Placement: never a second replica of a task to the same worker or to a
        # worker of the same owner, and at most one replica of a task per lease.
        windowed = self.dialect == "postgresql"

        def take_of(kinds: str) -> Any:
            candidates = (
                f"SELECT r.id FROM replicas r WHERE r.state = {READY}"
                + (" AND r.task_id > :after AND r.task_id <= :edge" if windowed else "")
                + (type_filter.replace("job_id", "r.job_id") if types else "")
                + (" AND r.job_id NOT IN :excluded" if exclude_jobs else "")
                + kinds
                + " AND NOT EXISTS (SELECT 1 FROM replicas o WHERE o.task_id = r.task_id AND o.worker_id IN :kin"
                " AND o.state IN (:leased, :done))"  # a replica that failed or expired may go back to its worker
                # the lowest ready replica of its task; on PostgreSQL as "+ 0": with planner statistics it
                # turned min(id) into a walk of ix_replicas_ready in id order, filtered by task (0.2 ms a
                # candidate, 400 ms a lease of 1,000), where the task's own one or two rows were enough
                + f" AND r.id = (SELECT min(r2.id{' + 0' if windowed else ''}) FROM replicas r2"
                f" WHERE r2.task_id = r.task_id AND r2.state = {READY})"
                + (_same_class("r.task_id", "r.job_id") if homogeneous_jobs else "")
                # task order, not replica order: replicas added by validation (a second opinion,
                # an audit, a tie-breaker) go out before later tasks' first replicas
                + " ORDER BY r.task_id, r.id LIMIT :n"
            )
            if self.dialect == "postgresql":
                candidates += " FOR UPDATE SKIP LOCKED"
            take = text(
                f"UPDATE replicas SET state = :leased, worker_id = :worker, lease_id = :lease WHERE id IN ({candidates})"
            ).bindparams(bindparam("kin", expanding=True))
            if types:
                take = take.bindparams(bindparam("types", expanding=True))
            if exclude_jobs:
                take = take.bindparams(bindparam("excluded", expanding=True))
            if homogeneous_jobs:
                take = take.bindparams(bindparam("homogeneous", expanding=True))
            return take

        # audits only where this worker may take them; recent ones only alongside other work (second pass)
        waiting = audits and audits_due is not None
        take = take_of("" if audits and not waiting else
                       " AND (r.kind != 'audit' OR r.created_at <= :due)" if waiting else " AND r.kind != 'audit'")
        expires = now + lease_seconds
        with self._write() as conn:
            me = conn.execute(
                select(s.workers.c.owner, s.workers.c.network, s.workers.c.partner_quarantines,
                       s.workers.c.quarantined_at).where(s.workers.c.id == worker_id)
            ).one()
            if me.quarantined_at is not None:
                return None  # quarantined by a round that committed since the caller looked
            kin = self._kin(conn, worker_id, me, separate_networks)
            params: dict[str, Any] = {
                "leased": int(ReplicaState.LEASED),
                "done": int(ReplicaState.DONE),
                "worker": worker_id,
                "n": max_replicas,
                "kin": kin,
                **({"types": types} if types else {}),
                **({"excluded": list(exclude_jobs)} if exclude_jobs else {}),
                **({"due": audits_due} if waiting else {}),
                **placement,
            }
            lease_id = conn.execute(
                insert(s.leases).values(worker_id=worker_id, created_at=now, expires_at=expires, state="open")
            ).inserted_primary_key[0]
            taken = self._take(conn, take, {**params, "lease": lease_id}, max_replicas, windowed)
            if waiting and 0 < taken < max_replicas:
                # room left beside other work: the audits still waiting ride along
                taken += self._take(conn, take_of(" AND r.kind = 'audit'"), {**params, "lease": lease_id},
                                    max_replicas - taken, windowed)
            if gold and taken:
                taken += self._add_gold(conn, worker_id, kin, lease_id, gold, types, now, rng or random.Random(),
                                        placement)
            if not taken:
                conn.execute(s.leases.delete().where(s.leases.c.id == lease_id))
                return None
            rows = conn.execute(
                text(
                    "SELECT r.id, t.job_id, t.idx, t.input_hash, t.input_data, t.n_items "
                    "FROM replicas r JOIN tasks t ON t.id = r.task_id WHERE r.lease_id = :lease ORDER BY r.id"
                ),
                {"lease": lease_id},
            ).all()
            job_ids = sorted({r.job_id for r in rows})
            jobs = conn.execute(
                select(s.jobs.c.id, s.jobs.c.task_type, s.jobs.c.model_hash, s.jobs.c.params, s.jobs.c.policy).where(
                    s.jobs.c.id.in_(job_ids)
                )
            ).all()
            deadlines = [d for j in jobs if (d := json.loads(j.policy).get("deadline"))]
            if deadlines and min(deadlines) < lease_seconds:  # a job's own deadline is shorter
                expires = now + min(deadlines)
                conn.execute(update(s.leases).where(s.leases.c.id == lease_id).values(expires_at=expires))
            conn.execute(update(s.workers).where(s.workers.c.id == worker_id).values(last_seen=now))
        replicas = [LeasedReplica(r.id, r.job_id, r.idx, r.input_hash, r.input_data, r.n_items) for r in rows]
        (rng or random).shuffle(replicas)  # gold replicas sit anywhere in the batch
        return Lease(
            id=lease_id,
            expires_at=expires,
            replicas=replicas,
            jobs={j.id: LeaseJob(j.id, j.task_type, j.model_hash, json.loads(j.params)) for j in jobs},
        )

    #: ready replicas a PostgreSQL lease looks at per window, per replica it wants; windows per lease
    #: before it looks at the whole queue
    WINDOW_PER_REPLICA, WINDOWS = 2, 4

    def _take(self, conn: Any, take: Any, params: dict[str, Any], n: int, windowed: bool) -> int:
        """Run a lease's ``take`` for up to ``n`` replicas: in windows on PostgreSQL, at once on SQLite."""
        if windowed:
            return self._take_in_windows(conn, take, params, n)
        return conn.execute(take, {**params, "n": n}).rowcount

    def _take_in_windows(self, conn: Any, take: Any, params: dict[str, Any], n: int) -> int:
        """Run the lease's ``take`` over the ready queue a window of task ids at a time.

        Without a bound, PostgreSQL's plan for the lease read every ready replica of the job and
        sorted them for the first ``n`` (~50 ms per lease at 20,000 ready, a million rows per lease
        in a million-task job). Each window is a range of task ids holding about ``2n`` ready
        replicas, found on ix_replicas_ready_task; a worker for which the first windows hold too
        little (its own tasks' second replicas, other types) gets the rest of the queue in one last
        look, so no work it may take is ever out of its reach."""
        edge_of = text(
            f"SELECT max(task_id) FROM (SELECT task_id FROM replicas WHERE state = {READY} AND task_id > :after "
            "ORDER BY task_id LIMIT :scan) AS w"
        )
        taken, after = 0, 0
        for _ in range(self.WINDOWS):
            edge = conn.execute(edge_of, {"after": after,
                                          "scan": self.WINDOW_PER_REPLICA * n}).scalar()
            if edge is None:
                return taken  # nothing ready beyond: the queue is done
            taken += conn.execute(take, {**params, "n": n - taken, "after": after, "edge": edge}).rowcount
            if taken >= n:
                return taken
            after = edge
        big = 2**62  # the rest of the queue, whatever its size
        return taken + conn.execute(take, {**params, "n": n - taken, "after": after, "edge": big}).rowcount

    def _kin(self, conn: Any, worker_id: int, me: Any, by_network: bool = False) -> list[int]:
        """The worker, every worker of the same (declared) owner and, when asked, of the same network;
        for a suspect (it shared a real part of a quarantined worker's decisions), every other suspect:
        the survivors of a colluding group never decide a task together (they could agree by
        arrangement), while an honest worker flagged by mistake still pairs with everyone else.
        ``me``: the worker's row (owner, network, partner_quarantines), read once by the lease."""
        related = []
        if me.owner:
            related.append(s.workers.c.owner == me.owner)
        if by_network and me.network:
            related.append(s.workers.c.network == me.network)
        if me.partner_quarantines:
            related.append(s.workers.c.partner_quarantines > 0)
        if not related:
            return [worker_id]
        return sorted({worker_id, *conn.execute(select(s.workers.c.id).where(or_(*related))).scalars()})

    def _add_gold(
        self, conn: Any, worker_id: int, kin: list[int], lease_id: int, k: int, types: list[str], now: float,
        rng: random.Random, placement: dict[str, Any] | None = None,
    ) -> int:
        """Lease ``k`` gold replicas: tasks of running jobs whose final answer is known.

        Each running job's tasks are searched within their own id range (from a random
        pivot, then wrapping), so the cost depends on the running jobs, never on how many
        finished jobs' tasks the grid has piled up. ``placement``: the lease's homogeneous-redundancy
        parameters (:func:`_same_class`): a known answer from another platform class is no fair test
        of this worker. Rooted answers (a trusted worker took part) first: only those can prove a
        lie; the others, decided by ordinary workers, are disputes when failed (see validation).
        Before both, the submitters' labelled items (``gold`` tasks): the strongest root of all."""
        running = select(s.jobs.c.id, s.jobs.c.n_tasks).where(s.jobs.c.state == JobState.RUNNING.value)
        if types:
            running = running.where(s.jobs.c.task_type.in_(types))
        sizes = dict(conn.execute(running).all())
        job_ids = sorted(sizes)
        rng.shuffle(job_ids)
        # the id range is walked on a partial index (ix_tasks_rooted, ix_results_final_task); SQLite
        # would rather walk every task of the job on (job_id, idx), which the unary + keeps it from doing
        same_job = "+t.job_id = :job" if self.dialect == "sqlite" else "t.job_id = :job"

        def tail(task: str) -> str:
            return (
                f" AND {task} >= :lo AND {task} <= :hi"
                f" AND {same_job}"
                f" AND NOT EXISTS (SELECT 1 FROM replicas o WHERE o.task_id = {task} AND o.worker_id IN :kin)"
                + (_same_class(task, "t.job_id") if placement else "")
                + f" ORDER BY {task} LIMIT :k"
            )

        # each spelled as its partial index is, so that it alone is walked: rooted answers, then any
        # final one (a task decided by a quorum, or accepted alone and made final by its worker's
        # checks since: the result says so, the task keeps the state it was accepted with)
        stmts = [
            text("SELECT t.id, t.job_id FROM tasks t WHERE t.state = 'done' AND t.rooted" + tail("t.id"))
            .bindparams(bindparam("kin", expanding=True)),
            text("SELECT t.task_id AS id, t.job_id FROM results t WHERE t.status = 'accepted' AND t.final"
                 + tail("t.task_id"))
            .bindparams(bindparam("kin", expanding=True)),
        ]
        if placement:
            stmts = [st.bindparams(bindparam("homogeneous", expanding=True)) for st in stmts]
        found: dict[int, Any] = {}
        # the submitters' own labelled items (--gold FILE) first: no worker decided their answers.
        # They follow the job's n_tasks own tasks: one index probe finds how many, a random pivot
        # spreads the draws
        submitted = text(
            "SELECT t.id, t.job_id FROM tasks t WHERE t.job_id = :job AND t.idx >= :lo AND t.idx <= :hi"
            " AND t.state = 'gold'"
            " AND NOT EXISTS (SELECT 1 FROM replicas o WHERE o.task_id = t.id AND o.worker_id IN :kin)"
            + (_same_class("t.id", "t.job_id") if placement else "")
            + " ORDER BY t.idx LIMIT :k"
        ).bindparams(bindparam("kin", expanding=True))
        if placement:
            submitted = submitted.bindparams(bindparam("homogeneous", expanding=True))
        for job_id in job_ids:
            first = sizes[job_id]
            last = conn.execute(select(func.max(s.tasks.c.idx)).where(s.tasks.c.job_id == job_id)).scalar()
            if last is None or last < first:
                continue
            pivot = rng.randint(first, last)
            params = {"kin": kin, "job": job_id, **(placement or {})}
            for a, b in ((pivot, last), (first, pivot - 1)):
                if len(found) >= k:
                    break
                for t in conn.execute(submitted, {**params, "lo": a, "hi": b, "k": k - len(found)}):
                    found[t.id] = t
            if len(found) >= k:
                break
        ranges = {job_id: self._task_id_range(conn, job_id) for job_id in job_ids} if len(found) < k else {}
        for stmt in stmts if len(found) < k else []:
            for job_id in job_ids:
                lo, hi = ranges[job_id]
                if lo is None or hi is None:
                    continue
                pivot = rng.randint(lo, hi)
                params = {"kin": kin, "job": job_id, **(placement or {})}
                for a, b in ((pivot, hi), (lo, pivot - 1)):
                    if len(found) >= k:
                        break
                    for t in conn.execute(stmt, {**params, "lo": a, "hi": b, "k": k - len(found)}):
                        found[t.id] = t
                if len(found) >= k:
                    break
            if len(found) >= k:
                break
        if found:
            conn.execute(
                insert(s.replicas),
                [
                    {"task_id": t.id, "job_id": t.job_id, "state": int(ReplicaState.LEASED), "worker_id": worker_id,
                     "lease_id": lease_id, "created_at": now, "kind": ReplicaKind.GOLD.value}
                    for t in found.values()
                ],
            )
        return len(found)

    @staticmethod
    def _task_id_range(conn: Any, job_id: str) -> tuple[int | None, int | None]:
        """Lowest and highest task id of a job: a job's tasks are inserted in idx order, so two index probes."""
        q = select(s.tasks.c.id).where(s.tasks.c.job_id == job_id)
        lo = conn.execute(q.order_by(s.tasks.c.idx).limit(1)).scalar()
        hi = conn.execute(q.order_by(s.tasks.c.idx.desc()).limit(1)).scalar()
        return lo, hi

    #: a ready queue this short is counted again without the audits still waiting to ride (queue_depth)
    RECOUNT_BELOW = 4096

    def queue_depth(self, active_since: float, cap: int = 1_000_000, per_worker: int = 0,
                    audits_due: float | None = None) -> tuple[int, int]:
        with self._read() as conn:
            active = conn.execute(
                select(func.count()).select_from(s.workers).where(s.workers.c.last_seen >= active_since)
            ).scalar_one()
            # counting stops at ``cap``: callers only need to know "at least this many"; the ready state
            # written out, so that the count walks a partial index of ready replicas, not the whole table
            ready = conn.execute(
                text(f"SELECT count(*) FROM (SELECT 1 FROM replicas WHERE state = {READY} LIMIT :cap) AS q"),
                {"cap": cap * min(max(active, 1), per_worker) if per_worker else cap},
            ).scalar_one()
            if audits_due is not None and 0 < ready < self.RECOUNT_BELOW:
                # a job's tail: audits that wait to ride with other work are no work on their own, and
                # idle workers asking for them would each cost a lease attempt that finds nothing
                ready = conn.execute(
                    text(f"SELECT count(*) FROM replicas WHERE state = {READY} "
                         "AND (kind != 'audit' OR created_at <= :due)"),
                    {"due": audits_due},
                ).scalar_one()
        return ready, active

    def extend_lease(self, lease_id: int, worker_id: int, lease_seconds: float, now: float) -> float:
        with self._write() as conn:
            row = conn.execute(self._locking(select(s.leases).where(s.leases.c.id == lease_id))).first()
            _check_lease(row, lease_id, worker_id, now)
            expires = now + lease_seconds
            conn.execute(update(s.leases).where(s.leases.c.id == lease_id).values(expires_at=expires))
            conn.execute(update(s.workers).where(s.workers.c.id == worker_id).values(last_seen=now))
        return expires

    def lease_view(self, lease_id: int) -> LeaseView | None:
        with self._read() as conn:
            lease = conn.execute(
                select(s.leases, s.workers.c.address)
                .join(s.workers, s.workers.c.id == s.leases.c.worker_id)
                .where(s.leases.c.id == lease_id)
            ).first()
            if lease is None:
                return None
            rows = conn.execute(
                text(
                    "SELECT r.id, r.state, t.job_id, t.idx, t.input_hash, j.model_hash "
                    "FROM replicas r JOIN tasks t ON t.id = r.task_id JOIN jobs j ON j.id = t.job_id "
                    "WHERE r.lease_id = :lease"
                ),
                {"lease": lease_id},
            ).all()
        return LeaseView(
            id=lease.id,
            worker_id=lease.worker_id,
            worker_address=lease.address,
            state=lease.state,
            expires_at=lease.expires_at,
            replicas={r.id: LeaseReplicaView(r.id, r.state, r.job_id, r.idx, r.input_hash, r.model_hash) for r in rows},
        )

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
        outcome = RecordOutcome()
        with self._write() as conn:
            # the lease row locked: the reaper of another process cannot expire it (and reissue its
            # replicas) between this check and this batch's results being written
            lease = conn.execute(self._locking(select(s.leases).where(s.leases.c.id == lease_id))).first()
            if lease is None or lease.worker_id != worker_id:
                raise LeaseError(f"lease {lease_id} is unknown to this coordinator", lease_id=lease_id)
            expired = lease.state == "expired" or lease.expires_at < now
            outcome.lease_expired = expired
            me = conn.execute(
                select(s.workers.c.quarantined_at, s.workers.c.trusted, s.workers.c.prior_quarantines,
                       s.workers.c.partner_quarantines).where(s.workers.c.id == worker_id)
            ).one()
            quarantined = me.quarantined_at is not None
            replica_rows = {
                r.id: r
                for r in conn.execute(
                    select(
                        s.replicas.c.id, s.replicas.c.state, s.replicas.c.task_id, s.replicas.c.job_id,
                        s.replicas.c.kind,
                    ).where(s.replicas.c.lease_id == lease_id)
                )
            }
            foreign = [i for i in [it.replica_id for it in items] + list(release) if i not in replica_rows]
            if foreign:
                raise LeaseError(
                    f"replicas {foreign[:10]} are not part of lease {lease_id}", lease_id=lease_id, replicas=foreign
                )
            batch_id = conn.execute(
                insert(s.result_batches).values(
                    worker_id=worker_id, lease_id=lease_id, signature=signature, size=len(items), received_at=now,
                    signed=json.dumps([[it.replica_id, it.output_hash] for it in items], separators=(",", ":")),
                )
            ).inserted_primary_key[0]
            live = [
                it for it in items if replica_rows[it.replica_id].state == int(ReplicaState.LEASED) and not expired
            ]
            live_ids = {it.replica_id for it in live}
            # Jobs with a quorum of one need no validation round: a result for an open task is
            # accepted and final here, in the same transaction (the throughput path of trusted grids).
            won: set[int] = set()
            lone = _LoneRound()
            if live and not quarantined:
                single = self._quorum_one(conn, {replica_rows[i].job_id for i in live_ids})
                firsts: dict[int, IncomingResult] = {}
                for it in live:  # a replica named twice is answered by its first mention only
                    firsts.setdefault(it.replica_id, it)
                direct = {
                    replica_rows[it.replica_id].task_id
                    for it in firsts.values()
                    if it.error is None
                    and replica_rows[it.replica_id].job_id in single
                    and replica_rows[it.replica_id].kind == ReplicaKind.NORMAL.value
                }
                if direct:
                    won = set(
                        conn.execute(
                            text(
                                # a trusted worker's answer is a root of trust: fit for gold that quarantines
                                "UPDATE tasks SET state = :done, rooted = :rooted WHERE state = :open AND id IN :ids "
                                "RETURNING id"
                            ).bindparams(bindparam("ids", expanding=True)),
                            {"done": TaskState.DONE.value, "open": TaskState.OPEN.value, "ids": sorted(direct),
                             "rooted": bool(me.trusted)},
                        ).scalars()
                    )
                if judge is not None:
                    lone = self._judge_lone(conn, judge, me, worker_id, [
                        replica_rows[it.replica_id] for it in firsts.values()
                        if it.error is None
                        and replica_rows[it.replica_id].job_id not in single
                        and replica_rows[it.replica_id].kind == ReplicaKind.NORMAL.value
                    ], now)
            outcome.judged, outcome.replicas_added, outcome.audits_added = lone.counts(), lone.more, lone.audits
            if self.dialect == "postgresql":
                # tasks judged alone were locked by their own update, and no round can be reading them
                # (they had no result before this batch's): only the others need the lock
                self._lock_judged_tasks(conn, [
                    replica_rows[it.replica_id] for it in items
                    if replica_rows[it.replica_id].task_id not in lone.won
                    and replica_rows[it.replica_id].task_id not in lone.waiting
                ])
            credited: dict[str, int] = {}  # job -> results accepted and final: the worker's record grows
            done: dict[str, int] = {}  # job -> tasks decided by this batch
            rows = []
            seen: set[int] = set()
            for it in items:
                rep = replica_rows[it.replica_id]
                verdict: tuple[bool, int | None] | None = None  # (final, checks_at) of a lone result accepted
                first = it.replica_id not in seen  # a replica named twice is answered once
                seen.add(it.replica_id)
                if it.error is not None:
                    status = ResultStatus.ERROR
                elif expired:
                    status = ResultStatus.LATE
                elif it.replica_id not in live_ids or not first:
                    status = ResultStatus.DUPLICATE
                elif quarantined:
                    status = ResultStatus.REJECTED  # a quarantined worker earns nothing more
                elif rep.task_id in won and rep.kind == ReplicaKind.NORMAL.value:
                    status = ResultStatus.ACCEPTED
                    won.discard(rep.task_id)
                    credited[rep.job_id] = credited.get(rep.job_id, 0) + 1
                    done[rep.job_id] = done.get(rep.job_id, 0) + 1
                elif rep.kind == ReplicaKind.NORMAL.value and (verdict := lone.won.pop(rep.task_id, None)):
                    status = ResultStatus.ACCEPTED
                    done[rep.job_id] = done.get(rep.job_id, 0) + 1
                    if verdict[0]:
                        credited[rep.job_id] = credited.get(rep.job_id, 0) + 1
                elif rep.task_id in lone.waiting and rep.kind == ReplicaKind.NORMAL.value:
                    # judged already: it waits for the further replica issued for it, no round needed now
                    status = ResultStatus.PENDING
                    lone.waiting.discard(rep.task_id)
                else:
                    status = ResultStatus.PENDING  # validation decides (quorum, gold, audit)
                    outcome.tasks.append(rep.task_id)
                outcome.statuses[it.replica_id] = status.value
                rows.append(
                    {
                        "replica_id": it.replica_id,
                        "task_id": rep.task_id,
                        "job_id": rep.job_id,
                        "worker_id": worker_id,
                        "batch_id": batch_id,
                        "output_hash": it.output_hash,
                        "output": it.output if status is not ResultStatus.ERROR else None,
                        "error": it.error,
                        "status": status.value,
                        "received_at": now,
                        "final": status is ResultStatus.ACCEPTED and (verdict is None or verdict[0]),
                        "checks_at": verdict[1] if verdict else None,
                    }
                )
            if rows:
                conn.execute(insert(s.results), rows)
            ok = [it.replica_id for it in live if it.error is None]
            failed = [replica_rows[it.replica_id] for it in live if it.error is not None]
            if quarantined and ok:
                # its answers count for nothing, so the replicas are not done: back to the queue, as
                # quarantine does with what a worker holds (this lease may have been taken in the
                # instant before the quarantine was written); a gold test is simply dropped
                outcome.replicas_added += conn.execute(
                    text(
                        "UPDATE replicas SET state = :ready, worker_id = NULL, lease_id = NULL "
                        "WHERE id IN :ids AND kind != 'gold'"
                    ).bindparams(bindparam("ids", expanding=True)),
                    {"ready": int(ReplicaState.READY), "ids": ok},
                ).rowcount
                conn.execute(
                    text("UPDATE replicas SET state = :st WHERE id IN :ids AND kind = 'gold'").bindparams(
                        bindparam("ids", expanding=True)
                    ),
                    {"st": int(ReplicaState.CANCELLED), "ids": ok},
                )
                ok = []
            if ok:
                conn.execute(
                    text("UPDATE replicas SET state = :st WHERE id IN :ids").bindparams(
                        bindparam("ids", expanding=True)
                    ),
                    {"st": int(ReplicaState.DONE), "ids": ok},
                )
            if failed:
                self._fail_replicas(conn, worker_id, failed, now)
            if release and not expired:
                conn.execute(
                    text(
                        "UPDATE replicas SET state = :ready, worker_id = NULL, lease_id = NULL "
                        "WHERE id IN :ids AND state = :leased AND kind != 'gold'"
                    ).bindparams(bindparam("ids", expanding=True)),
                    {"ready": int(ReplicaState.READY), "leased": int(ReplicaState.LEASED), "ids": list(release)},
                )
                conn.execute(  # a released gold replica is simply dropped
                    text("UPDATE replicas SET state = :st WHERE id IN :ids AND state = :leased").bindparams(
                        bindparam("ids", expanding=True)
                    ),
                    {"st": int(ReplicaState.CANCELLED), "leased": int(ReplicaState.LEASED), "ids": list(release)},
                )
            if not expired:
                conn.execute(
                    text(
                        "UPDATE leases SET state = 'closed' WHERE id = :lease AND NOT EXISTS "
                        "(SELECT 1 FROM replicas WHERE lease_id = :lease AND state = :leased)"
                    ),
                    {"lease": lease_id, "leased": int(ReplicaState.LEASED)},
                )
            for job_id, n in done.items():
                conn.execute(update(s.jobs).where(s.jobs.c.id == job_id).values(tasks_done=s.jobs.c.tasks_done + n))
            if credited:
                self._credit(conn, worker_id, credited)
            if failed or done:
                outcome.completed_jobs = self._completed(conn, {r.job_id for r in failed} | set(done))
            conn.execute(update(s.workers).where(s.workers.c.id == worker_id).values(last_seen=now))
        return outcome

    def _judge_lone(self, conn: Any, judge: LoneJudge, me: Any, worker_id: int, reps: list[Any],
                    now: float) -> _LoneRound:
        """Decide now what a validation round would decide for results that are their task's only one.

        Such a result is the answer to an open task with one normal replica issued (its own): no
        other opinion exists or is out, so the round would call the adaptive rule on it alone.
        The judge (validation's rule) says accept (provisional or final, perhaps audited) or issue
        more replicas; the task rows are changed only where still open with one replica issued, so
        a task another batch or round changed meanwhile falls back to the validation round."""
        out = _LoneRound()
        if not reps:
            return out
        rules = self._rules(conn, {r.job_id for r in reps})
        standing = {
            r.task_type: r for r in conn.execute(
                select(s.reputation.c.task_type, s.reputation.c.run, s.reputation.c.checks_passed)
                .where(s.reputation.c.worker_id == worker_id)
            )
        }
        # a worker whose owner, network or partners were quarantined earns trust more slowly (as in
        # tasks_to_validate)
        slow = 1 + me.prior_quarantines + me.partner_quarantines
        final: list[int] = []
        provisional: list[int] = []
        more: dict[int, list[int]] = {}
        verdicts: dict[int, tuple[Lone, int]] = {}
        by_job: dict[str, list[int]] = {}
        for r in reps:
            by_job.setdefault(r.job_id, []).append(r.task_id)
        for job_id, task_ids in by_job.items():
            task_type, policy, _ = rules[job_id]
            rep = standing.get(task_type)
            passed = rep.checks_passed if rep else 0
            for task_id, v in zip(task_ids, judge(job_id, policy, (rep.run if rep else 0) // slow,
                                                  bool(me.trusted), len(task_ids)), strict=True):
                verdicts[task_id] = (v, passed)
                if v.accept:
                    (final if v.final else provisional).append(task_id)
                elif v.more:
                    more.setdefault(v.more, []).append(task_id)
        ids = bindparam("ids", expanding=True)
        alone = "WHERE state = :open AND issued = 1 AND id IN :ids RETURNING id, job_id"
        won: list[Any] = []
        if final:
            won += conn.execute(
                text(f"UPDATE tasks SET state = :done, rooted = :rooted {alone}").bindparams(ids),
                {"done": TaskState.DONE.value, "open": TaskState.OPEN.value, "ids": sorted(final),
                 "rooted": bool(me.trusted)},
            ).all()
        if provisional:
            won += conn.execute(
                text(f"UPDATE tasks SET state = :prov {alone}").bindparams(ids),
                {"prov": TaskState.PROVISIONAL.value, "open": TaskState.OPEN.value, "ids": sorted(provisional)},
            ).all()
        replicas: list[dict[str, Any]] = []
        for t in won:
            v, passed = verdicts[t.id]
            out.won[t.id] = (v.final, None if v.final else passed + v.checks)
            out.outcomes["accepted" if v.final else "provisional"] += 1
            if v.audit:
                replicas.append({"task_id": t.id, "job_id": t.job_id, "kind": ReplicaKind.AUDIT.value})
        for n, task_ids in sorted(more.items()):
            for t in conn.execute(
                text(f"UPDATE tasks SET issued = issued + :n {alone}").bindparams(ids),
                {"n": n, "open": TaskState.OPEN.value, "ids": sorted(task_ids)},
            ).all():
                out.waiting.add(t.id)
                out.outcomes["more_replicas"] += n
                replicas += [{"task_id": t.id, "job_id": t.job_id, "kind": ReplicaKind.NORMAL.value}] * n
        if replicas:
            conn.execute(insert(s.replicas), [
                {**r, "state": int(ReplicaState.READY), "created_at": now} for r in replicas
            ])
            out.audits = sum(r["kind"] == ReplicaKind.AUDIT.value for r in replicas)
            out.more = len(replicas) - out.audits
        return out

    def _rules(self, conn: Any, job_ids: set[str]) -> dict[str, tuple[str, str, bool]]:
        """Each job's task type, trust policy (as stored) and whether it accepts a single result
        (quorum of one); they never change: cached."""
        unknown = sorted(j for j in job_ids if j not in self._job_rules)
        if unknown:
            for j in conn.execute(
                select(s.jobs.c.id, s.jobs.c.task_type, s.jobs.c.policy).where(s.jobs.c.id.in_(unknown))
            ):
                self._job_rules[j.id] = (j.task_type, j.policy, json.loads(j.policy).get("quorum", 2) == 1)
            while len(self._job_rules) > RULES_CACHED:  # the oldest first: a long-lived grid's past jobs
                del self._job_rules[next(iter(self._job_rules))]
        return {j: self._job_rules[j] for j in job_ids if j in self._job_rules}

    def _lock_judged_tasks(self, conn: Any, reps: list[Any]) -> None:
        """Lock the tasks whose results a validation round will judge, before writing those results.

        A round reads a task's results and its outstanding replicas in separate statements; were a batch
        for the task committed between the two (another process, another thread), the round would see a
        replica done without its result and issue one more. A round locks its tasks first
        (``locked_tasks``), so with this lock a batch lands wholly before the round or after it."""
        single = self._quorum_one(conn, {r.job_id for r in reps})
        judged = sorted({r.task_id for r in reps if r.job_id not in single or r.kind != ReplicaKind.NORMAL.value})
        if judged:
            conn.execute(
                text("SELECT id FROM tasks WHERE id IN :ids ORDER BY id FOR NO KEY UPDATE").bindparams(
                    bindparam("ids", expanding=True)
                ),
                {"ids": judged},
            )

    def _quorum_one(self, conn: Any, job_ids: set[str]) -> set[str]:
        """Those jobs whose trust policy accepts a single result."""
        return {j for j, (_, _, single) in self._rules(conn, job_ids).items() if single}

    def _completed(self, conn: Any, job_ids: set[str]) -> list[str]:
        """Those of ``job_ids`` still running whose every task is resolved."""
        if not job_ids:
            return []
        return list(
            conn.execute(
                select(s.jobs.c.id).where(
                    s.jobs.c.id.in_(sorted(job_ids)),
                    s.jobs.c.state == JobState.RUNNING.value,
                    s.jobs.c.tasks_done + s.jobs.c.tasks_failed + s.jobs.c.tasks_inconclusive >= s.jobs.c.n_tasks,
                )
            ).scalars()
        )

    def _fail_replicas(self, conn: Any, worker_id: int, reps: list[Any], now: float) -> None:
        """Mark replicas failed; reissue their tasks until MAX_TASK_ERRORS, then fail the task.

        The worker's lease quota shrinks: a worker that keeps failing gets less work.
        """
        conn.execute(
            text("UPDATE replicas SET state = :st WHERE id IN :ids").bindparams(bindparam("ids", expanding=True)),
            {"st": int(ReplicaState.FAILED), "ids": [r.id for r in reps]},
        )
        self._penalise(conn, worker_id, {r.job_id for r in reps}, "errors")
        for rep in reps:
            if rep.kind == ReplicaKind.GOLD.value:
                continue  # a gold test the worker could not run costs nothing but its quota
            errors = conn.execute(
                text("UPDATE tasks SET errors = errors + 1 WHERE id = :t AND state = :open RETURNING errors"),
                {"t": rep.task_id, "open": TaskState.OPEN.value},
            ).scalar()
            if errors is None:
                continue
            if errors >= MAX_TASK_ERRORS:
                conn.execute(
                    update(s.tasks).where(s.tasks.c.id == rep.task_id).values(state=TaskState.FAILED.value)
                )
                conn.execute(
                    update(s.jobs)
                    .where(s.jobs.c.id == rep.job_id)
                    .values(tasks_failed=s.jobs.c.tasks_failed + 1)
                )
            else:
                conn.execute(
                    insert(s.replicas).values(
                        task_id=rep.task_id, job_id=rep.job_id, state=int(ReplicaState.READY), created_at=now,
                        kind=rep.kind,
                    )
                )

    def reap_expired(self, now: float) -> int:
        with self._write() as conn:
            expired = conn.execute(
                self._locking(
                    select(s.leases.c.id, s.leases.c.worker_id).where(
                        s.written_out(s.leases.c.state, "open"), s.leases.c.expires_at < now  # ix_leases_open
                    ),
                    skip_locked=True,  # a lease whose results are being written now is left to that writer
                )
            ).all()
            if not expired:
                return 0
            lease_ids = [lease.id for lease in expired]
            params = {
                "ready": int(ReplicaState.READY),
                "leased": int(ReplicaState.LEASED),
                "open": TaskState.OPEN.value,
                "provisional": TaskState.PROVISIONAL.value,
                "now": now,
                "leases": lease_ids,
            }
            # a new ready replica for every expired one still needed (gold ones are simply dropped)
            reissued = conn.execute(
                text(
                    "INSERT INTO replicas (task_id, job_id, state, created_at, kind) "
                    "SELECT r.task_id, r.job_id, :ready, :now, r.kind FROM replicas r JOIN tasks t ON t.id = r.task_id "
                    "WHERE r.lease_id IN :leases AND r.state = :leased AND ("
                    "(r.kind = 'normal' AND t.state = :open) OR (r.kind = 'audit' AND t.state = :provisional"
                    # an audit of a result its worker's checks made final since is no longer needed
                    " AND NOT EXISTS (SELECT 1 FROM results a WHERE a.task_id = t.id AND a.status = 'accepted' AND a.final)))"
                ).bindparams(bindparam("leases", expanding=True)),
                params,
            ).rowcount
            conn.execute(
                text("UPDATE replicas SET state = :expired WHERE lease_id IN :leases AND state = :leased").bindparams(
                    bindparam("leases", expanding=True)
                ),
                {"expired": int(ReplicaState.EXPIRED), "leased": int(ReplicaState.LEASED), "leases": lease_ids},
            )
            conn.execute(update(s.leases).where(s.leases.c.id.in_(lease_ids)).values(state="expired"))
            for worker_id in {lease.worker_id for lease in expired}:
                jobs = conn.execute(
                    select(s.replicas.c.job_id).distinct().where(
                        s.replicas.c.lease_id.in_(lease_ids), s.replicas.c.worker_id == worker_id
                    )
                ).scalars()
                self._penalise(conn, worker_id, set(jobs), "timeouts")
        return reissued


class _LoneRound:
    """What :meth:`SqlStore._judge_lone` decided for a batch's lone results."""

    def __init__(self) -> None:
        self.won: dict[int, tuple[bool, int | None]] = {}  # task -> (final, checks_at) of its accepted result
        self.waiting: set[int] = set()  # tasks given more replicas: the result waits for them
        self.outcomes: dict[str, int] = {"accepted": 0, "provisional": 0, "more_replicas": 0}
        self.more = 0  # second opinions issued
        self.audits = 0  # audits issued

    def counts(self) -> dict[str, int]:
        return {k: n for k, n in self.outcomes.items() if n}


def _same_class(task_id: str, job_id: str) -> str:
    """Homogeneous redundancy, as a condition on a task of a job in ``:homogeneous``.

    A task whose replica is held or done by a (not quarantined) worker of another platform class
    than ``:platform_class`` is not for this worker (workers that reported no platform form a class
    of their own), and no task is for a worker alone in its class: nobody could give its results
    a second opinion. Where no class has two workers at all, the rule cannot be kept and is
    dropped (a grid of one worker, or of one worker per platform, still gets its work done).
    """
    return (
        f" AND ({job_id} NOT IN :homogeneous"
        " OR NOT EXISTS (SELECT 1 FROM workers hq WHERE hq.quarantined_at IS NULL"
        " GROUP BY coalesce(hq.platform_class, '') HAVING count(*) >= 2)"
        " OR (EXISTS (SELECT 1 FROM workers hp WHERE hp.id NOT IN :kin"
        " AND hp.quarantined_at IS NULL AND coalesce(hp.platform_class, '') = :platform_class)"
        " AND NOT EXISTS (SELECT 1 FROM replicas h JOIN workers hw"
        f" ON hw.id = h.worker_id WHERE h.task_id = {task_id} AND h.state IN (:h_leased, :h_done)"
        " AND hw.quarantined_at IS NULL AND coalesce(hw.platform_class, '') != :platform_class)))"
    )


def _check_lease(row: Any, lease_id: int, worker_id: int, now: float) -> None:
    if row is None or row.worker_id != worker_id:
        raise LeaseError(f"lease {lease_id} is unknown to this coordinator", lease_id=lease_id)
    if row.state == "expired" or row.expires_at < now:
        raise LeaseError(
            f"lease {lease_id} expired at {row.expires_at:.0f}; its replicas were reissued",
            lease_id=lease_id,
        )
    if row.state == "closed":
        raise LeaseError(f"lease {lease_id} is already closed: every replica in it was answered", lease_id=lease_id)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
