"""Giving memory back after a job-sized piece of work (a reduction, an archive, a submission).

Both allocators the coordinator leans on keep what was freed for later: pyarrow's pool
(mimalloc) holds its pages, and glibc's malloc keeps free chunks in its arenas. After a
million-task job's reduction or archive that is tens of MB that no later request needs, and
the coordinator's resident memory only ever grew. Each call here costs a few milliseconds, so
it is made once per such piece of work, never per request.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None on another C library."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_unused() -> None:
    """Return the memory pyarrow's pool and malloc hold unused to the operating system."""
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except Exception:  # an allocator that cannot: nothing lost but the memory
        log.debug("pyarrow's pool did not release memory", exc_info=True)
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
