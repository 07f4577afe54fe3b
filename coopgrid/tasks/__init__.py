"""Task types, found through the ``coopgrid.tasks`` entry-point group."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from coopgrid.errors import InvalidInput
from coopgrid.tasks.base import TaskOutput, TaskType

GROUP = "coopgrid.tasks"


@cache
def available() -> dict[str, type[TaskType]]:
    """Every installed task type by name (built-ins are registered like plugins)."""
    found: dict[str, type[TaskType]] = {}
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep.load()
    return found


@cache
def get(name: str) -> TaskType:
    types = available()
    if name not in types:
        raise InvalidInput(
            f"unknown task type {name!r}; installed: {', '.join(sorted(types)) or 'none'}", task_type=name
        )
    return types[name]()


__all__ = ["TaskType", "TaskOutput", "available", "get"]
