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
import gc
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


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Have glibc's malloc share ``arenas`` arenas between every thread created from now on.

    By default it makes up to eight per core, one for each thread that allocates while another
    holds one; the coordinator's request threads each fragmented their own, and its resident
    memory at the end of a million-task job was ~20 MB higher for it (bench/scale.py, one run
    each way). An operator's ``MALLOC_ARENA_MAX`` is left as it is. False where there is no
    glibc ``mallopt``."""
    import os

    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


#: objects allocated (less those freed) between two collections of the youngest generation: a
#: 1,000-result batch makes tens of thousands of short-lived objects, and at CPython's 700 most of
#: them were still alive at each collection, promoted and scanned again in the older generations
YOUNG_COLLECTION_AFTER = 50_000


def settle_collector() -> None:
    """Make the cyclic garbage collector cheap for a long-running server, once it has started.

    Every full collection scanned all of start-up's ~200,000 objects (modules, functions, the
    ORM's tables): 0.35-0.4 s of a coordinator's CPU per 20,000-task job, ~12%. Start-up's
    objects live as long as the process, so they are frozen out of every later collection
    (``gc.freeze``, as CPython's documentation suggests for servers), and young collections run
    less often. Reference counting frees almost everything anyway; this only times the search
    for cycles."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, older, oldest)
