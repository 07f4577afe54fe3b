"""How far this process's memory peaks while a call runs (for tests that a bomb is not decoded)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/self/status")


def peak_growth(call: Callable[[], Any]) -> tuple[Any, int]:
    """``call()``'s result (or the exception it raised) and how far resident memory peaked above where it was.

    The peak, not the end: a decoded bomb is freed again before the answer,
    so only the high-water mark (VmHWM, reset through /proc/self/clear_refs)
    shows it; it counts every allocator (numpy's, Arrow's pools). Where the
    mark cannot be reset, tracemalloc's peak (numpy reports its buffers to
    it, Arrow does not) stands in.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        tracemalloc.start()
        try:
            return _call(call), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    before = _status("VmRSS")
    result = _call(call)
    return result, _status("VmHWM") - before


def _call(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # the caller asserts on it
        return exc
