"""Evidence bundles: why a worker was slashed, checkable by anyone with the signatures alone.

A bundle (JSON, stored as a blob; its sha256 is the ``evidence`` of the
contract's ``Slashed`` event) holds one task and the signed result batches that
prove a worker lied about it:

* ``task``: job id, task index, input hash, model hash, and the task type;
* ``liar``: the slashed worker's batch (worker, lease, EIP-712 signature, every
  result it signed, in order) and the index of its result for the task, with
  that result's output bytes;
* ``agreeing``: the same for each result of other workers that agreed on the
  accepted answer (at least ``quorum`` of them, with distinct signers), the
  first one with its output bytes.

:func:`check` recomputes each batch's EIP-712 digest from the values, recovers
its signer, checks that every named result is for the same task (job, index,
input, model), that the agreeing ones have one output hash and the liar another,
and that the task type calls the two outputs provably different
(:meth:`coopgrid.tasks.base.TaskType.provably_different`): a disagreement
within a float tolerance, or a tie, is never evidence. Nothing in it needs the
coordinator: ``coopgrid verify --slash TX`` reads the event from the chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from coopgrid.errors import InvalidInput
from coopgrid.protocol import ResultRef

VERSION = 1


def provably_different(task_type: Any, liar: bytes, agreed: bytes) -> bool:
    """The task type's own rule on two outputs' bytes; an output that does not even decode (while
    the agreed one does) is provably not the answer."""
    a = task_type.decode(agreed)
    try:
        lied = task_type.decode(liar)
    except Exception:  # noqa: BLE001 - whatever the decoder raises, these bytes are no output of the type
        return True
    return bool(task_type.provably_different(lied, a))


def batch_json(worker: str, lease: int, signature: str, refs: list[ResultRef], index: int,
               output: bytes | None = None) -> dict[str, Any]:
    """One signed batch as a bundle holds it."""
    out: dict[str, Any] = {
        "worker": worker, "lease": lease, "signature": signature, "index": index,
        "results": [list(r) for r in refs],
    }
    if output is not None:
        out["output"] = base64.b64encode(output).decode()
    return out


def encode(bundle: dict[str, Any]) -> bytes:
    """The canonical bytes of a bundle (what is hashed and stored)."""
    return json.dumps(bundle, sort_keys=True, separators=(",", ":")).encode()


def digest(data: bytes) -> str:
    """The evidence hash the slash carries: sha256 of the bundle's bytes (0x + 64 hex)."""
    return "0x" + hashlib.sha256(data).hexdigest()


def check(data: bytes, chain_id: int, worker: str | None = None, job_id: str | None = None) -> dict[str, Any]:
    """Recheck a bundle; returns a summary, or raises InvalidInput saying what does not hold.

    ``worker``/``job_id``: what the chain says was slashed, which the bundle must name."""
    from coopgrid import tasks
    from coopgrid.identity import recover_batch_signer

    try:
        b = json.loads(data)
        task = b["task"]
        liar, agreeing = b["liar"], list(b["agreeing"])
        quorum = int(b["quorum"])
        key = (str(task["job_id"]), int(task["task_index"]), str(task["input_hash"]), str(task["model_hash"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"not an evidence bundle: {exc!r}") from None
    if b.get("version") != VERSION or int(b.get("chain_id", -1)) != chain_id:
        raise InvalidInput(f"the bundle is for chain {b.get('chain_id')} (version {b.get('version')}), not {chain_id}")

    def named(batch: dict[str, Any]) -> tuple[str, ResultRef]:
        try:
            refs = [ResultRef(str(j), int(i), str(ih), str(mh), str(oh)) for j, i, ih, mh, oh in batch["results"]]
            ref = refs[int(batch["index"])]
            signer = recover_batch_signer(chain_id, batch["worker"], int(batch["lease"]), refs, batch["signature"])
        except Exception as exc:  # noqa: BLE001 - any malformed part makes the bundle invalid
            raise InvalidInput(f"a batch of the bundle cannot be read: {exc!r}") from None
        if signer.lower() != str(batch["worker"]).lower():
            raise InvalidInput(f"the batch of lease {batch['lease']} is signed by {signer}, not by {batch['worker']}")
        if (ref.job_id, ref.task_index, ref.input_hash, ref.model_hash) != key:
            raise InvalidInput(f"{signer}'s result is not for the bundle's task (job, index, input, model)")
        return signer, ref

    def output(batch: dict[str, Any], ref: ResultRef) -> bytes:
        raw = base64.b64decode(batch.get("output") or "")
        if hashlib.sha256(raw).hexdigest() != ref.output_hash:
            raise InvalidInput(f"the output given for {batch['worker']} does not hash to the one it signed")
        return raw

    liar_addr, liar_ref = named(liar)
    if worker is not None and liar_addr.lower() != worker.lower():
        raise InvalidInput(f"the bundle's liar is {liar_addr}; the chain slashed {worker}")
    if job_id is not None and key[0] != job_id.removeprefix("0x").lower():
        raise InvalidInput(f"the bundle's task is of job {key[0]}; the slash credited job {job_id}")
    signers = set()
    agreed = None
    for batch in agreeing:
        signer, ref = named(batch)
        if agreed is not None and ref.output_hash != agreed[1].output_hash:
            raise InvalidInput("the agreeing results do not all have the same output")
        agreed = agreed or (batch, ref)
        signers.add(signer.lower())
    if quorum < 2 or len(signers) < quorum or liar_addr.lower() in signers or agreed is None:
        raise InvalidInput(
            f"a lie is shown by at least a quorum (>= 2) of other signers agreeing; this bundle has {len(signers)}"
        )
    if agreed[1].output_hash == liar_ref.output_hash:
        raise InvalidInput("the liar's output is the agreed one")
    task_type = tasks.get(str(task["task_type"]))
    if not provably_different(task_type, output(liar, liar_ref), output(agreed[0], agreed[1])):
        raise InvalidInput(f"{task['task_type']} does not call the two outputs provably different (a tolerance)")
    return {"worker": liar_addr, "job_id": key[0], "task_index": key[1], "agreeing": sorted(signers),
            "liar_output": liar_ref.output_hash, "agreed_output": agreed[1].output_hash}
