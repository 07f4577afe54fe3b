"""The task-type interface: what a kind of work unit must say about itself.

A task type is registered under the ``coopgrid.tasks`` entry-point group;
the built-ins register exactly as a third-party package would. The
coordinator calls :meth:`split` and :meth:`reduce`; workers call
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
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from coopgrid.datasets import Dataset, pack


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
    #: whether :meth:`reduce` may be called on consecutive runs of a job's outputs (a shard's, or a
    #: chunk of tasks) whose output files are then concatenated and whose int figures are added:
    #: what lets a sharded or million-task job reduce in bounded memory (coordinator/summary.py)
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
