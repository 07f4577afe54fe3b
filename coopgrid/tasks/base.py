"""The task-type interface: what a kind of work unit must say about itself.

A task type is registered under the ``coopgrid.tasks`` entry-point group;
the built-ins register exactly as a third-party package would. The
coordinator calls :meth:`split` and :meth:`reduce`; workers call
:meth:`load_model`, :meth:`run` and :meth:`canonical`; validation calls
:meth:`agree`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from coopgrid.datasets import Dataset


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


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

    def validate_params(self, params: dict[str, Any]) -> BaseModel:
        return self.Params.model_validate(params)

    # -- coordinator side ----------------------------------------------------

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
        """Whether two outputs of the same task count as the same answer."""
        return self.canonical(a) == self.canonical(b)
