"""``embed``: sentence embeddings from an ONNX encoder plus a ``tokenizers`` tokenizer.

No PyTorch on workers: ONNX Runtime runs the encoder and the Rust
``tokenizers`` library tokenizes. The model is one ONNX file with its
tokenizer inside it (the ``tokenizer.json`` text in the model's metadata
under ``coopgrid.tokenizer``), so the model's sha256 covers the tokenizer
too. ``coopgrid.registry.embed`` exports all-MiniLM-L6-v2 this way.

The encoder takes ``input_ids`` and ``attention_mask`` (int64, batch x
tokens; ``token_type_ids`` too if it declares it) and returns either the
sentence embeddings (batch x dim; mean-pooled and normalized in the graph)
or token states (batch x tokens x dim), which are mean-pooled over the mask
and L2-normalized here.

Manifest ``input``: ``max_length`` (tokens per text, default 256), ``dim``.

Input: text items (text files, lines, a CSV or Parquet column:
``params.column``). Output: float32 embeddings, one row per item; an item
that is not UTF-8 (or a bad CSV row) gets the reason instead. ``agree``: the
same items failed and every other row's cosine similarity is at least
0.999. The reducer writes Parquet: ``item_id``, ``embedding`` (fixed-size
list of float32), ``error``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from coopgrid.datasets import Dataset, pack, unpack
from coopgrid.errors import InvalidInput
from coopgrid.tasks.base import ItemParams, TaskOutput, TaskType, item_errors
from coopgrid.tasks.common import input_texts, onnx_session, split_texts

TOKENIZER_KEY = "coopgrid.tokenizer"


class EmbedParams(ItemParams):
    column: str | None = Field(None, description="The text column, for CSV or Parquet datasets.")
    batch_size: int = Field(32, ge=1, le=4096, description="Texts per encoder call on a worker.")
    max_length: int | None = Field(
        None, ge=4, le=8192, description="Tokens per text (truncated); default: the model's max_length."
    )


@dataclass
class Encoder:
    session: Any
    tokenizer: Any
    max_length: int
    input_names: list[str]
    pad_id: int

    def encode(self, texts: Sequence[str], batch_size: int, max_length: int | None = None) -> np.ndarray:
        """L2-normalized float32 embeddings, one row per text (in order)."""
        limit = min(max_length or self.max_length, self.max_length)
        self.tokenizer.enable_truncation(limit)
        self.tokenizer.no_padding()
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = [e.ids for e in encodings]
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))  # similar lengths share a batch
        out: np.ndarray | None = None
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(1, max(len(ids[i]) for i in batch))
            input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for r, i in enumerate(batch):
                input_ids[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
            result = np.asarray(self.session.run(None, {k: feed[k] for k in self.input_names})[0], dtype=np.float32)
            if result.ndim == 3:  # token states: mean over the real tokens
                m = mask[:, :, None].astype(np.float32)
                result = (result * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            norms = np.linalg.norm(result, axis=1, keepdims=True)
            result = result / np.maximum(norms, 1e-12)
            if out is None:
                out = np.zeros((len(ids), result.shape[1]), dtype=np.float32)
            out[batch] = result
        assert out is not None
        return out


def load_encoder(
    model_bytes: bytes, manifest: dict[str, Any] | None = None, threads: int = 1, optimization: str = "all",
    config: dict[str, str] | None = None,
) -> Encoder:
    """An :class:`Encoder` from ONNX bytes with the tokenizer in their metadata (or ``manifest.input.tokenizer``)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core per worker process
    from tokenizers import Tokenizer

    session = onnx_session(model_bytes, threads, optimization, config)
    inp = (manifest or {}).get("input", {})
    tok_json = session.get_modelmeta().custom_metadata_map.get(TOKENIZER_KEY) or inp.get("tokenizer")
    if not tok_json:
        raise InvalidInput(f"the embed model has no tokenizer: put tokenizer.json's text in its metadata as {TOKENIZER_KEY!r}")
    tokenizer = Tokenizer.from_str(tok_json)
    names = [i.name for i in session.get_inputs()]
    unknown = set(names) - {"input_ids", "attention_mask", "token_type_ids"}
    if unknown or "input_ids" not in names:
        raise InvalidInput(f"the embed model's inputs must be input_ids, attention_mask[, token_type_ids], not {names}")
    pad_id = 0
    for token in ("[PAD]", "<pad>", "<PAD>"):
        found = tokenizer.token_to_id(token)
        if found is not None:
            pad_id = found
            break
    return Encoder(session, tokenizer, int(inp.get("max_length", 256)), names, pad_id)


class EmbedTask(TaskType):
    name = "embed"
    Params = EmbedParams
    needs_model = True
    accepts = ("bytes", "table")
    #: least cosine similarity between two replicas' embeddings of one item
    MIN_COSINE: ClassVar[float] = 0.999
    # reduced in pieces: a piece's dim is its widest output's, the job's the widest piece's
    # (merge_figures, job_schema), as the whole-job reduce takes the widest of all outputs
    streams = True

    def split(self, dataset: Dataset, task_size: int, params: BaseModel) -> Iterator[tuple[bytes, int]]:
        assert isinstance(params, EmbedParams)
        return split_texts(dataset, task_size, params, params.column, "embed")

    def load_model(self, model_bytes: bytes, manifest: dict[str, Any]) -> Encoder:
        return load_encoder(model_bytes, manifest)

    def run(self, task_input: bytes, model: Encoder, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, EmbedParams)
        texts = input_texts(task_input)
        errors = {i: str(t) for i, t in enumerate(texts) if isinstance(t, ValueError)}
        good = [i for i, t in enumerate(texts) if not isinstance(t, ValueError)]
        emb = model.encode([texts[i] for i in good], params.batch_size, params.max_length) if good else None  # type: ignore[misc]
        dim = emb.shape[1] if emb is not None else 0
        full = np.zeros((len(texts), dim), dtype=np.float32)
        if emb is not None:
            full[good] = emb
        return {"emb": full, "errors": item_errors(errors)}

    def canonical(self, output: dict[str, Any]) -> bytes:
        emb = np.ascontiguousarray(output["emb"], dtype="<f4")
        return pack([emb.tobytes()], {"n": emb.shape[0], "dim": emb.shape[1], "errors": output["errors"]})

    def decode(self, data: bytes) -> dict[str, Any]:
        meta, (raw,) = unpack(data)
        emb = np.frombuffer(raw, dtype="<f4").reshape(meta["n"], meta["dim"])
        return {"emb": emb, "errors": meta["errors"]}

    def agree(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        ea, eb = np.asarray(a["emb"], np.float64), np.asarray(b["emb"], np.float64)
        if ea.shape != eb.shape or [e[0] for e in a["errors"]] != [e[0] for e in b["errors"]]:
            return False
        rows = np.ones(len(ea), dtype=bool)
        rows[[e[0] for e in a["errors"]]] = False
        if not rows.any():
            return True
        x, y = ea[rows], eb[rows]
        cos = (x * y).sum(axis=1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-30)
        return bool((cos >= self.MIN_COSINE).all())

    def reduce(self, outputs: Sequence[TaskOutput], dataset: Dataset, params: BaseModel, out: Path) -> dict[str, Any]:
        dim = max((o.output["emb"].shape[1] for o in outputs), default=0)
        item_ids, rows, errors, task_index, workers = [], [], [], [], []
        for o in sorted(outputs, key=lambda o: o.first_item):
            reasons = dict((i, r) for i, r in o.output["errors"])
            item_ids += dataset.item_ids(o.first_item, o.first_item + o.n_items)  # not the shard's every id, per piece
            for k in range(o.n_items):
                rows.append(None if k in reasons else o.output["emb"][k])
                errors.append(reasons.get(k))
            task_index += [o.task_index] * o.n_items
            workers += [o.worker] * o.n_items
        if dim:
            flat = np.stack([r if r is not None else np.zeros(dim, np.float32) for r in rows]).astype(np.float32).reshape(-1)
            mask = np.array([r is None for r in rows])
            embedding = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim, mask=pa.array(mask))
        else:  # nothing embedded (every item failed, or no output): Arrow makes no list of size 0 from values
            embedding = pa.nulls(len(rows), pa.list_(pa.float32(), 0))
        table = pa.table(
            {
                "item_id": pa.array(item_ids, pa.string()),
                "embedding": embedding,
                "error": pa.array(errors, pa.string()),
                "task_index": pa.array(task_index, pa.int32()),
                "worker": pa.array(workers, pa.string()),
            }
        )
        pq.write_table(table, out)
        return {"dim": int(dim), "items_embedded": sum(r is not None for r in rows), "item_errors": sum(e is not None for e in errors)}

    def merge_figures(self, total: dict[str, Any], piece: dict[str, Any]) -> None:
        dim = max(total.get("dim", 0), piece["dim"])  # the widest output's, as in the whole job
        super().merge_figures(total, piece)
        total["dim"] = dim

    def job_schema(self, pieces: Sequence[pa.Schema]) -> pa.Schema:
        # the whole job's embeddings are as wide as its widest output: a piece where every item
        # failed wrote dim 0 (only nulls, which take the job's type)
        widest = max((s.field("embedding") for s in pieces), key=lambda f: f.type.list_size)
        return super().job_schema([s.set(s.get_field_index("embedding"), widest) for s in pieces])
