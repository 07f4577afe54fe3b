"""The task-type interface: what a kind of work unit must say about itself.

A task type is registered under the ``coopgrid.tasks`` entry-point group;
the built-ins register exactly as a third-party package would. The
coordinator calls :meth:`split` and :meth:`reduce` (or, for a type that
:attr:`~TaskType.streams`, :meth:`reduce_piece` and the hooks after it); workers call
:meth:`load_model`, :meth:`run` and :meth:`canonical`; validation calls
:meth:`agree`. docs/task-types.md shows how to write one.

Conventions the built-ins follow (a plugin may too):

* an item that cannot be decoded is reported in the task's output as
  ``errors: [[index in task, reason], ...]`` and the rest of the task still
  succeeds; reducers write the reason on the item's row of the job's output;
* a reducer may write extra files beside its output and name them in its
  figures under :data:`BLOB_FILES`; the coordinator stores them as blobs
  (:func:`store_blob_files`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from coopgrid.datasets import Dataset, pack

if TYPE_CHECKING:
    import pyarrow as pa


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemParams(BaseModel):
    """Params every item-wise built-in shares: how the dataset is cut into tasks.

    ``task_size`` (the job's field) caps the items per task; ``task_bytes``
    also caps each task's input bytes (a task always gets at least one item).
    """

    model_config = ConfigDict(extra="forbid")

    task_bytes: int | None = Field(
        None, ge=1, le=1 << 31, description="Split by bytes: at most this many input bytes per task."
    )


#: key of :meth:`TaskType.reduce`'s figures naming extra files it wrote beside ``out``
#: (``{"dataset": "dataset.npz"}``); see :func:`store_blob_files`
BLOB_FILES = "blob_files"


def store_blob_files(figures: dict[str, Any], out_dir: Path, put: Any) -> dict[str, Any]:
    """Store the extra files a reducer wrote as blobs; their hashes go in ``figures["blobs"]``.

    ``put`` is ``BlobStore.put`` (bytes -> sha256). A file named ``dataset.npz``
    is a :class:`~coopgrid.datasets.Dataset`, so its hash can be the next job's
    ``dataset``.
    """
    files = figures.pop(BLOB_FILES, None) or {}
    if files:
        figures["blobs"] = {key: put((out_dir / name).read_bytes()) for key, name in files.items()}
    return figures


def add_figures(total: dict[str, Any], more: dict[str, Any]) -> None:
    """Figures of consecutive pieces of one job: counts add up; anything else is the first piece's."""
    for key, value in more.items():
        if key in total and isinstance(value, int) and not isinstance(value, bool):
            total[key] += value
        else:
            total.setdefault(key, value)


def unify_pieces(pieces: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for the rows of every piece: the columns in the pieces' order (a column only some
    pieces have, such as an optional ``error``, between the columns around it, where the whole job's
    reduce puts it), each of the type the pieces' types promote to (permissive: ints widen, a null
    type takes the others'). A piece's rows are then filled with nulls where it lacks a column."""
    import pyarrow as pa

    names: list[str] = []
    for schema in pieces:
        at = 0
        for name in schema.names:
            if name in names:
                at = names.index(name) + 1
            else:
                names.insert(at, name)
                at += 1
    unified = pa.unify_schemas(list(pieces), promote_options="permissive")
    return pa.schema([unified.field(name) for name in names], metadata=unified.metadata)


def item_errors(errors: dict[int, str]) -> list[list[Any]]:
    """Per-item failures as they go in an output: ``[[index in task, reason], ...]`` by index."""
    return [[i, errors[i][:500]] for i in sorted(errors)]


def split_items(dataset: Dataset, task_size: int, params: BaseModel, meta: dict[str, Any] | None = None) -> Iterator[tuple[bytes, int]]:
    """A ``bytes`` dataset's items in bundles (:func:`coopgrid.datasets.pack`), by count and bytes."""
    max_bytes = getattr(params, "task_bytes", None)
    for start, stop in dataset.ranges(task_size, max_bytes):
        yield pack(dataset.items(start, stop), {"media": dataset.media, **(meta or {})}), stop - start


@dataclass(frozen=True)
class TaskOutput:
    """One accepted task result, as the reducer sees it."""

    task_index: int
    first_item: int
    n_items: int
    worker: str
    output: Any  # what :meth:`TaskType.decode` returned


class TaskType(abc.ABC):
    #: the name jobs use to ask for this type
    name: ClassVar[str]
    #: pydantic model of the job's ``params``; validated at submission
    Params: ClassVar[type[BaseModel]] = NoParams
    #: whether jobs of this type need a published model of the same task type
    needs_model: ClassVar[bool] = False
    #: whether the job may be reduced in pieces: :meth:`reduce_piece` on consecutive runs of its
    #: outputs within one shard (about REDUCE_CHUNK_ITEMS items, whole tasks), each piece's rows then
    #: written to the output as row groups under :meth:`job_schema` of the pieces' schemas, and its
    #: figures folded by :meth:`merge_figures` and :meth:`finish_figures`. What lets a sharded or
    #: million-task job reduce in bounded memory (coordinator/summary.py). The result must be what
    #: :meth:`reduce` of the whole job gives, so a type whose rows span items (ocr's documents) or
    #: that needs all outputs at once (stats, preprocess) does not stream
    streams: ClassVar[bool] = False
    #: dataset kinds the type takes (see :mod:`coopgrid.datasets`); informative
    accepts: ClassVar[tuple[str, ...]] = ("array",)
    #: whether honest outputs from different platforms may disagree beyond what :meth:`agree` accepts;
    #: then every replica of a task goes to workers of one platform class (homogeneous redundancy,
    #: :mod:`coopgrid.platforms`). bench/platform_variation.py measures the built-ins.
    homogeneous: ClassVar[bool] = False

    def validate_params(self, params: dict[str, Any]) -> BaseModel:
        return self.Params.model_validate(params)

    # -- coordinator side ----------------------------------------------------

    def check_input(self, dataset: Dataset, manifest: dict[str, Any]) -> None:
        """Refuse, at submission, a dataset the model cannot take (raise InvalidInput saying why).

        Without this, every task would fail on the workers and the reason stay in their logs."""

    @abc.abstractmethod
    def split(self, dataset: Dataset, task_size: int, params: BaseModel) -> Iterator[tuple[bytes, int]]:
        """Yield each task's input bytes and its number of items, in item order."""

    @abc.abstractmethod
    def reduce(self, outputs: Sequence[TaskOutput], dataset: Dataset, params: BaseModel, out: Path) -> dict[str, Any]:
        """Write the job's output file to ``out`` (Parquet) and return type-specific summary figures."""

    # -- coordinator side, a streaming reduction (``streams``) --------------------

    def reduce_piece(self, outputs: Sequence[TaskOutput], dataset: Dataset, params: BaseModel, out: Path) -> dict[str, Any]:
        """Reduce one piece of a job: consecutive outputs of the shard ``dataset``, rows to ``out``.

        Its figures are what :meth:`merge_figures` folds together. By default :meth:`reduce`'s,
        for a type whose figures are counts; a type with a ratio returns the counts behind it."""
        return self.reduce(outputs, dataset, params, out)

    def merge_figures(self, total: dict[str, Any], piece: dict[str, Any]) -> None:
        """Fold a piece's figures into the job's so far (pieces in item order): by default integer
        counts add up and anything else is the first piece's (:func:`add_figures`)."""
        add_figures(total, piece)

    def finish_figures(self, total: dict[str, Any], params: BaseModel) -> dict[str, Any]:
        """The job's figures from its merged pieces', the keys :meth:`reduce` of the whole job returns:
        e.g. a ratio from the counts behind it, which are then dropped. By default as merged."""
        return total

    def job_schema(self, pieces: Sequence[pa.Schema]) -> pa.Schema:
        """The output's schema from the pieces' (:func:`unify_pieces`). A type whose whole-job reduce
        picks a column's type from all its rows picks it here from all the pieces' types."""
        return unify_pieces(pieces)

    def gold_task(self, item: Any, output: Any, like: Dataset, params: BaseModel) -> tuple[bytes, int, bytes]:
        """A submitter's labelled item (a line of ``coopgrid submit --gold FILE``) as a task of a job
        on dataset ``like``: (input bytes, items, the answer as bytes :meth:`decode` reads).

        ``item`` is one item in JSON: for an array dataset a number or nested list shaped like one
        of its rows (of its dtype), for a bytes dataset a string (text, UTF-8) or ``{"base64": ...}``;
        ``output`` is :meth:`gold_output`'s. Raises ValueError saying what is wrong."""
        data, n = gold_input(self, item, like, params)
        return data, n, self.gold_output(output, like)

    def gold_output(self, output: Any, like: Dataset) -> bytes:
        """The known answer of a labelled one-item task, from the JSON a submitter wrote: by default
        the output as :meth:`decode` returns it (a plugin whose output is not JSON overrides this)."""
        return self.canonical(output)

    # -- worker side ----------------------------------------------------------

    def load_model(self, model_bytes: bytes, manifest: dict[str, Any]) -> Any:
        """Turn published model bytes into whatever :meth:`run` takes (called once per model)."""
        return None

    @abc.abstractmethod
    def run(self, task_input: bytes, model: Any, params: BaseModel) -> Any:
        """Compute one task's output. Must not depend on anything but its arguments."""

    @abc.abstractmethod
    def canonical(self, output: Any) -> bytes:
        """The bytes whose sha256 is the output hash a worker signs."""

    @abc.abstractmethod
    def decode(self, data: bytes) -> Any:
        """Inverse of :meth:`canonical`."""

    # -- validation -----------------------------------------------------------

    def agree(self, a: Any, b: Any) -> bool:
        """Whether two outputs of the same task count as the same answer.

        Decoded outputs (what :meth:`decode` returns). Exact by default; types
        whose results vary a little across hardware compare with a tolerance.
        """
        return self.canonical(a) == self.canonical(b)

    def fails_gold(self, known: Any, got: Any) -> bool:
        """Whether ``got`` fails a submitter's labelled item whose answer is ``known`` (both decoded).

        Judged as slashing judges a lie where the type says what honest hardware cannot explain
        (an override of :meth:`provably_different`), else by :meth:`agree` (exact, or within its
        tolerance): an honest worker must never fail it."""
        if type(self).provably_different is not TaskType.provably_different:
            return bool(self.provably_different(known, got))
        return not self.agree(known, got)

    def provably_different(self, a: Any, b: Any) -> bool:
        """Whether two outputs differ beyond any doubt: evidence that one of them is a lie (slashing).

        True only where the difference cannot come from honest hardware: any difference for
        a type that compares exactly (the default :meth:`agree`); a type that compares with a
        tolerance says False unless it overrides this for a part it compares exactly. A
        disagreement within a tolerance never slashes.
        """
        if type(self).agree is not TaskType.agree:
            return False
        return self.canonical(a) != self.canonical(b)


def gold_input(task: TaskType, item: Any, like: Dataset, params: BaseModel) -> tuple[bytes, int]:
    """One labelled item, in JSON, as the input of a one-item task of a job on dataset ``like``."""
    import base64
    import binascii

    import numpy as np

    if like.kind == "array":
        raw = np.asarray(item)
        if raw.dtype.kind not in "biuf":
            raise ValueError(f"input must be numbers (a row of the dataset), not {type(item).__name__}")
        row = like.x.shape[1:]
        if raw.shape != row:
            raise ValueError(f"input has shape {list(raw.shape)}; the dataset's items have shape {list(row)}")
        arr = raw.astype(like.x.dtype)
        if not np.array_equal(arr, raw):
            raise ValueError(f"input does not fit the dataset's type {like.x.dtype} (it would be rounded)")
        one = Dataset(arr.reshape((1, *row)), meta=dict(like.meta))
    elif like.kind == "bytes":
        if isinstance(item, str):
            data = item.encode()
        elif isinstance(item, dict) and set(item) == {"base64"} and isinstance(item["base64"], str):
            try:
                data = base64.b64decode(item["base64"], validate=True)
            except binascii.Error as exc:
                raise ValueError(f"input's base64 does not decode: {exc}") from None
        else:
            raise ValueError('input of a dataset of files is a string (text) or {"base64": "..."} (any bytes)')
        if not data:
            raise ValueError("input is empty")
        one = Dataset.from_items([data], like.media, meta=dict(like.meta))
    else:
        raise ValueError(f"labelled items are not supported for {like.kind} datasets (only arrays and files)")
    tasks = list(task.split(one, 1, params))
    if len(tasks) != 1:
        raise ValueError(f"input makes {len(tasks)} tasks, not one")
    return tasks[0]


def run_local(
    task: TaskType,
    dataset: Dataset,
    task_size: int,
    params: dict[str, Any] | BaseModel | None = None,
    model_bytes: bytes | None = None,
    manifest: dict[str, Any] | None = None,
    out: Path | None = None,
) -> tuple[dict[str, Any], list[TaskOutput]]:
    """A whole job in this process, as the grid would run it (split, run, canonical bytes, decode, reduce).

    For testing a task type (docs/task-types.md) and for benchmarks' direct
    runs. Returns the reducer's figures and the decoded outputs; ``out`` is
    where the reducer writes (default: a temporary file, removed).
    """
    import tempfile

    p = params if isinstance(params, BaseModel) else task.validate_params(params or {})
    model = task.load_model(model_bytes, manifest or {}) if model_bytes is not None else None
    outputs, first = [], 0
    for i, (data, n) in enumerate(task.split(dataset, task_size, p)):
        # the worker revalidates params from JSON, as they travel
        wp = task.validate_params(p.model_dump(mode="json"))
        outputs.append(TaskOutput(i, first, n, "local", task.decode(task.canonical(task.run(data, model, wp)))))
        first += n
    if out is not None:
        return task.reduce(outputs, dataset, p, out), outputs
    with tempfile.TemporaryDirectory() as tmp:
        return task.reduce(outputs, dataset, p, Path(tmp) / "output.parquet"), outputs
