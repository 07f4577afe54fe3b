"""The worker loop: lease a batch, run it, sign it, submit it, heartbeat meanwhile.

Submission runs on its own thread so the next batch is leased and computed
while the last one is on the wire. On stop (SIGINT/SIGTERM) the worker
leases nothing more, finishes the replica in hand, gives the rest of its
batch back (``release``), submits, and returns.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from coopgrid import errors, tasks
from coopgrid.identity import Identity
from coopgrid.platforms import describe
from coopgrid.protocol import ZERO_HASH, ResultRef, b64decode, b64encode, sha256_hex
from coopgrid.worker.client import Stopped, WorkerClient
from coopgrid.worker.dishonest import Behaviour
from coopgrid.worker.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class WorkerOptions:
    name: str = ""
    owner: str = ""
    trusted: bool = False  # ask to be registered as vouched for (the client carries an operator token)
    batch_size: int = 256
    task_types: list[str] = field(default_factory=list)
    max_idle_sleep: float = 0.25  # idle polls are cheap (no write); a new job starts sooner
    #: while idle, seconds a lease request waits at the coordinator for work (0: sleep between polls instead)
    long_poll: float = 20.0
    #: TEST FACILITY: a dishonest behaviour (see coopgrid.worker.dishonest); honest by default
    behaviour: Behaviour = field(default_factory=Behaviour)
    #: stop after this many replicas (None: run until told to stop); for tests and benchmarks
    max_replicas: int | None = None
    #: stop once no work has come for this many seconds (None: wait forever)
    exit_when_idle: float | None = None


@dataclass
class Stats:
    leases: int = 0
    replicas: int = 0
    errors: int = 0
    released: int = 0
    rejected_batches: int = 0
    refused: str | None = None  # why the coordinator stopped giving this worker work
    unreachable: str | None = None  # the coordinator stopped answering for longer than the worker waits


class Worker:
    def __init__(self, client: WorkerClient, identity: Identity, runtime: Runtime, options: WorkerOptions) -> None:
        self.client = client
        self.identity = identity
        self.runtime = runtime
        self.options = options
        self.stop = client.stop
        self.stats = Stats()
        self._outbox: queue.Queue[tuple[int, dict[str, Any]] | None] = queue.Queue(maxsize=1)
        self._active: dict[int, float] = {}  # lease id -> deadline
        self._active_lock = threading.Lock()
        self._lease_seconds = 60.0

    # -- public ---------------------------------------------------------------------

    def register(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.options.name, "owner": self.options.owner,
                                "platform": describe().model_dump()}
        if self.options.trusted:
            body["trusted"] = True
            return self.client.post_json("/v1/workers", body, authorized=True).json()
        return self.client.post_json("/v1/workers", body).json()

    def run(self) -> Stats:
        """Work until stopped; returns what was done."""
        try:
            info = self.register()
        except Stopped:
            return self.stats
        except errors.CoordinatorUnavailable as exc:
            self.stats.unreachable = exc.message
            return self.stats
        except (errors.Forbidden, errors.AuthError) as exc:
            self.stats.refused = exc.message
            return self.stats
        log.info("worker %s registered as #%s", self.identity.address, info["id"])
        submitter = threading.Thread(target=self._submit_forever, name="submit", daemon=True)
        beater = threading.Thread(target=self._heartbeat_forever, name="heartbeat", daemon=True)
        submitter.start()
        beater.start()
        try:
            self._lease_forever()
        except Stopped:
            pass
        except errors.CoordinatorUnavailable as exc:
            self.stats.unreachable = exc.message
        except (errors.Forbidden, errors.AuthError) as exc:  # quarantined, or unknown to the coordinator
            # the caller reports it (the CLI prints it once); here only for a debug log
            self.stats.refused = exc.message
            log.info("the coordinator refuses this worker: %s", exc.message)
        finally:
            self._outbox.put(None)
            submitter.join()
            self.stop.set()
            beater.join(timeout=5)
        return self.stats

    # -- leasing and running ----------------------------------------------------------

    def _lease_forever(self) -> None:
        idle = 0.0
        idle_since: float | None = None
        while not self.stop.is_set():
            if self.options.max_replicas is not None and self.stats.replicas >= self.options.max_replicas:
                return
            want = self.options.batch_size
            if self.options.max_replicas is not None:
                want = min(want, self.options.max_replicas - self.stats.replicas)
            body: dict[str, Any] = {"max_replicas": want, "task_types": self.options.task_types}
            wait = self._poll_wait(idle_since)
            asked = time.monotonic()
            if wait:
                body["wait"] = wait
                response = self._long_poll(body, wait)
            else:
                response = self.client.post_json("/v1/leases", body)
            if response.status_code == 204:
                first = idle_since is None
                idle_since = idle_since or asked
                if self.options.exit_when_idle is not None and time.monotonic() - idle_since > self.options.exit_when_idle:
                    return
                if first and self._poll_wait(idle_since):
                    continue  # straight into a long poll
                if wait and time.monotonic() - asked >= wait / 2:
                    continue  # held, and nothing came: ask again at once
                # not held (an older coordinator, one with no room for more held requests): sleep, backing off
                idle = min(self.options.max_idle_sleep, max(0.02, idle * 2))
                self.stop.wait(random.uniform(idle / 2, idle))
                continue
            idle, idle_since = 0.0, None
            lease = response.json()
            self.stats.leases += 1
            self._lease_seconds = lease["lease_seconds"]
            with self._active_lock:
                self._active[lease["lease_id"]] = lease["expires_at"]
            self._outbox.put((lease["lease_id"], self._run_lease(lease)))

    def _poll_wait(self, idle_since: float | None) -> float:
        """How long the next lease request may wait for work: 0 until idle, or without long polls."""
        if idle_since is None or not self.options.long_poll:
            return 0.0
        wait = min(self.options.long_poll, self.client.long_poll_seconds)
        if self.options.exit_when_idle is not None:
            wait = min(wait, self.options.exit_when_idle - (time.monotonic() - idle_since))
        return round(wait, 3) if wait >= 0.05 else 0.0

    def _long_poll(self, body: dict[str, Any], wait: float) -> Any:
        """POST /v1/leases held up to ``wait`` seconds, on a thread: a stop must not wait for the answer.

        Stopped meanwhile, the request is abandoned: this process exits, and the
        coordinator leases nothing to a request whose client has gone."""
        box: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=1)

        def ask() -> None:
            try:
                box.put((self.client.request("POST", "/v1/leases", body, timeout=wait + 15), None))
            except BaseException as exc:  # handed to the loop, which raises it
                box.put((None, exc))

        threading.Thread(target=ask, name="long-poll", daemon=True).start()
        while True:
            try:
                response, exc = box.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    raise Stopped() from None
                continue
            if exc is not None:
                raise exc
            return response

    def _run_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        results, refs, release = [], [], []
        jobs = lease["jobs"]
        for replica in lease["replicas"]:
            if self.stop.is_set():
                release.append(replica["id"])
                continue
            job = jobs[replica["job"]]
            output_hash, output, error = self._run_replica(job, replica)
            item: dict[str, Any] = {"replica_id": replica["id"], "output_hash": output_hash}
            if error is None:
                item["output"] = b64encode(output)
            else:
                item["error"] = error
                self.stats.errors += 1
            results.append(item)
            refs.append(
                ResultRef(
                    replica["job"], replica["task_index"], replica["input_hash"], job["model_hash"] or ZERO_HASH, output_hash
                )
            )
        self.stats.replicas += len(results)
        self.stats.released += len(release)
        return {"chain_id": lease["chain_id"], "results": results, "refs": refs, "release": release}

    def _batches(self, lease_id: int, done: dict[str, Any]) -> list[dict[str, Any]]:
        """The signed result batches of one lease, each under the coordinator's body limit."""
        limit = self.client.max_results_bytes * 3 // 4  # room for JSON around the outputs
        batches, start, size = [], 0, 0
        items = done["results"]
        for i, item in enumerate(items):
            cost = len(item.get("output") or "") + len(item.get("error") or "") + 200
            if i > start and size + cost > limit:
                batches.append((start, i))
                start, size = i, 0
            size += cost
        if items:
            batches.append((start, len(items)))
        out = []
        for n, (a, b) in enumerate(batches):
            refs = done["refs"][a:b]
            out.append({
                "signature": self.identity.sign_batch(done["chain_id"], lease_id, refs),
                "results": items[a:b],
                "release": done["release"] if n == len(batches) - 1 else [],
            })
        return out

    def _run_replica(self, job: dict[str, Any], replica: dict[str, Any]) -> tuple[str, bytes, str | None]:
        """Returns (output hash, canonical output, error message or None)."""
        try:
            task_type = tasks.get(job["task_type"])
            params = task_type.validate_params(job["params"])
            model = self.runtime.model(job["task_type"], job["model_hash"])
            inline = b64decode(replica["input"]) if replica["input"] is not None else None
            data = self.runtime.task_input(replica["input_hash"], inline, replica.get("input_url"))
            result = self.options.behaviour.output(replica["input_hash"], lambda: task_type.run(data, model, params))
            output = task_type.canonical(result)
            return sha256_hex(output), output, None
        except Stopped:
            raise
        except errors.IntegrityError as exc:
            log.error("%s", exc.message)
            return ZERO_HASH, b"", exc.message
        except Exception as exc:  # a task that fails is reported, never fatal to the worker
            log.warning("replica %s of job %s failed: %s", replica["id"], replica["job"], exc)
            return ZERO_HASH, b"", f"{type(exc).__name__}: {exc}"[:2000]

    # -- submitting -----------------------------------------------------------------

    def _submit_forever(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            lease_id, payload = item
            try:
                for batch in self._batches(lease_id, payload):
                    self.client.post_json(f"/v1/leases/{lease_id}/results", batch)
            except Stopped:
                log.warning("stopped before lease %s's results could be submitted", lease_id)
            except errors.CoopgridError as exc:
                self.stats.rejected_batches += 1
                log.warning("lease %s: results refused: %s", lease_id, exc.message)
            finally:
                with self._active_lock:
                    self._active.pop(lease_id, None)

    def _heartbeat_forever(self) -> None:
        """Extend every lease in hand once less than a third of it is left."""
        while not self.stop.wait(0.5):
            now = time.time()
            with self._active_lock:
                due = [lid for lid, exp in self._active.items() if exp - now < self._lease_seconds / 3]
            for lease_id in due:
                try:
                    r = self.client.request("POST", f"/v1/leases/{lease_id}/heartbeat", {}, retry=False)
                except errors.CoopgridError as exc:
                    log.debug("heartbeat for lease %s: %s", lease_id, exc.message)
                    continue
                with self._active_lock:
                    if lease_id in self._active:
                        self._active[lease_id] = r.json()["expires_at"]
