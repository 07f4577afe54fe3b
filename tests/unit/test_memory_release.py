"""coopgrid.memory.release_unused: what a job-sized piece of work freed goes back to the OS."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# in a process of its own: this one's allocators hold whatever other tests left in them
SCRIPT = textwrap.dedent(
    """
    import gc, io
    import pyarrow as pa, pyarrow.parquet as pq
    from coopgrid.memory import release_unused

    def rss():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024

    rows = [{"id": i, "v": b"x" * 100, "s": str(i) * 3} for i in range(5000)]
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, pa.Table.from_pylist(rows).schema) as w:
        for _ in range(200):  # an archive's worth of row batches
            w.write_table(pa.Table.from_pylist(rows))
    del rows, w
    gc.collect()
    before = rss()
    release_unused()
    print(before, rss(), pa.default_memory_pool().bytes_allocated())
    """
)


def test_memory_freed_by_an_archive_sized_piece_of_work_is_given_back():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    before, after, live = map(int, run.stdout.split())
    assert live == 0  # nothing of pyarrow's is still in use: what RSS drops by was held, not used
    assert after <= before - 8 * 2**20, f"RSS {before / 2**20:.0f} MB -> {after / 2**20:.0f} MB"



ARENAS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from coopgrid.memory import limit_malloc_arenas

    if sys.argv[1] == "limit":
        assert limit_malloc_arenas(1)
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    go, held = threading.Barrier(8), []

    def allocate():
        go.wait()  # all at once: glibc gives a thread its own arena when the others' are busy
        held.extend(libc.malloc(4096) for _ in range(2000))

    threads = [threading.Thread(target=allocate) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    libc.malloc_stats()  # glibc writes one "Arena N:" block per arena to stderr
    """
)


def test_request_threads_share_the_malloc_arenas_they_are_limited_to():
    import os

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    counts = {}
    for mode in ("limit", "default"):
        run = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, timeout=60, env=env)
        assert run.returncode == 0, run.stderr
        counts[mode] = run.stderr.count("Arena ")
    assert counts["limit"] == 1 and counts["default"] > 1, counts


def test_settle_collector_freezes_start_up_out_of_later_collections() -> None:
    import gc

    from coopgrid.memory import YOUNG_COLLECTION_AFTER, settle_collector

    before = gc.get_threshold()
    try:
        settle_collector()
        assert gc.get_freeze_count() > 10_000  # this process's modules, functions and types
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_AFTER
        assert gc.get_threshold()[1:] == before[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
