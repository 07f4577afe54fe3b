"""Blob store backends side by side, in one run: the data dir, a shared directory, and an S3 store
(moto's standalone server on loopback, a Python process: slower than a real object store, so
its figures are a floor, not what S3 or MinIO would give).

    .venv/bin/python bench/blob_stores.py [--mib 64] [--tasks 300] [--row-kib 64] [--workers 2]

1. The store alone, in this process: a --mib MiB blob streamed in (BlobStore.writer) and out
   (BlobStore.open), MiB/s, with the peak growth of this process's resident memory beside it
   (it must stay far below the blob's size: nothing holds a blob whole).
2. A job end to end through a real coordinator and --workers worker processes (LocalGrid, the CLI):
   an `echo` job of --tasks tasks whose inputs are blobs (rows of --row-kib KiB, over the
   16 KiB inline limit), on the data dir; on S3 with presigned URLs (workers fetch inputs from the
   store); on S3 with --blob-url-seconds 0 (every input through the coordinator). Per run: tasks/s
   from POST /v1/jobs to `done`, the coordinator's CPU seconds over that time, and the input blobs
   the coordinator served (GET /v1/blobs/{hash}, from its /metrics). What presigned URLs are for:
   the coordinator's CPU and bandwidth per task, not loopback speed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coopgrid.blobs import BlobStore, DirectoryBlobStore  # noqa: E402
from coopgrid.blobs.s3 import S3BlobStore  # noqa: E402
from coopgrid.client import ApiClient  # noqa: E402
from coopgrid.datasets import Dataset  # noqa: E402
from coopgrid.local import LocalGrid  # noqa: E402
from tests.memory_peak import peak_growth  # noqa: E402
from tests.s3_server import S3Server, missing_modules, moto_server  # noqa: E402
from dispatch import cpu_seconds  # noqa: E402  bench/dispatch.py (this script's directory)

MiB = 1 << 20
NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}


def store_figures(name: str, store: BlobStore, mib: int) -> tuple[str, float, float, float, float]:
    piece = os.urandom(MiB)

    def write() -> str:
        with store.writer() as w:
            for _ in range(mib):
                w.write(piece)
            return w.commit()

    def read(digest: str) -> int:
        with store.open(digest) as fh:
            return sum(len(c) for c in iter(lambda: fh.read(MiB), b""))

    t0 = time.perf_counter()
    digest, grew_in = peak_growth(write)
    t1 = time.perf_counter()
    size, grew_out = peak_growth(lambda: read(digest))
    t2 = time.perf_counter()
    assert size == mib * MiB
    return name, mib / (t1 - t0), grew_in / MiB, mib / (t2 - t1), grew_out / MiB


def job_figures(name: str, root: Path, args: argparse.Namespace, extra: tuple[str, ...], env: dict[str, str]):
    grid = LocalGrid(root / name)
    try:
        grid.start_coordinator("--ledger", "none", *extra, env=env)
        for i in range(args.workers):
            grid.start_worker(i, "--batch", "8")
        cols = args.row_kib * 1024 // 4
        data = Dataset(x=np.arange(args.tasks * cols, dtype=np.float32).reshape(args.tasks, cols))
        with ApiClient(grid.url, grid.token) as client:
            grid.wait_for_workers(client, args.workers)
            dataset = client.put_blob(data.to_npz())
            assert grid.coordinator is not None
            cpu0, t0 = cpu_seconds(grid.coordinator.pid), time.perf_counter()
            job = client.submit({"task_type": "echo", "dataset": dataset, "task_size": 1, "trust": NO_REPLICATION})
            done = client.wait_for(job["id"], lambda j: j["state"] != "running", timeout=args.timeout, poll=0.05)
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds(grid.coordinator.pid) - cpu0
            assert done["state"] == "done" and done["summary"]["echo_mismatches"] == 0, done
            metrics = httpx.get(f"{grid.url}/metrics", headers={"Authorization": f"Bearer {grid.token}"}).text
        served = sum(float(m.group(1)) for m in re.finditer(
            r'coopgrid_http_request_duration_seconds_count\{method="GET",route="/v1/blobs/\{digest\}"[^}]*\} (\S+)',
            metrics))
        urls = re.search(r"^coopgrid_blob_urls_total (\S+)$", metrics, re.M)
        return name, args.tasks / elapsed, cpu, cpu / args.tasks * 1e3, int(served), int(float(urls.group(1)) if urls else 0)
    finally:
        grid.stop(timeout=15)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--tasks", type=int, default=300)
    p.add_argument("--row-kib", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args()
    if missing := missing_modules():
        sys.exit(f"needs moto's server and boto3: pip install 'moto[server]' boto3 (no {', '.join(missing)})")
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="coopgrid-bench-blobs-") as tmp:
        root = Path(tmp)
        with moto_server(root / "moto.log") as s3:
            for k, v in s3.env.items():
                os.environ[k] = v  # boto3 in this process reads them, as an operator's would
            stores = [
                ("data dir", DirectoryBlobStore(root / "datadir")),
                ("shared dir", DirectoryBlobStore(root / "shared", shared=True)),
                ("s3 (moto)", S3BlobStore(s3.new_bucket(), "bench/", spool_dir=root / "spool")),
            ]
            rows = [store_figures(name, store, args.mib) for name, store in stores]
            print(f"\n1. one {args.mib} MiB blob streamed in and out (this process)")
            print(f"{'backend':<12} {'in MiB/s':>9} {'RSS +MiB':>9} {'out MiB/s':>10} {'RSS +MiB':>9}")
            for name, win, gin, wout, gout in rows:
                print(f"{name:<12} {win:>9.0f} {gin:>9.1f} {wout:>10.0f} {gout:>9.1f}")

            runs = [
                ("data dir", (), {}),
                ("s3 + URLs", ("--blob-store", f"s3://{s3.new_bucket()}/grid"), s3.env),
                ("s3, no URLs", ("--blob-store", f"s3://{s3.new_bucket()}/grid", "--blob-url-seconds", "0"), s3.env),
            ]
            jobs = [job_figures(name, root, args, extra, env) for name, extra, env in runs]
    print(f"\n2. echo job, {args.tasks} tasks of one {args.row_kib} KiB blob input, {args.workers} workers")
    print(f"{'store':<12} {'tasks/s':>8} {'coord CPU s':>12} {'CPU ms/task':>12} {'inputs via coord':>17} {'URLs given':>11}")
    for name, rate, cpu, per, served, urls in jobs:
        print(f"{name:<12} {rate:>8.0f} {cpu:>12.2f} {per:>12.2f} {served:>17} {urls:>11}")
    print(f"\nload average (1 min): {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
          f"on {os.cpu_count()} cores" + ("; a busy machine lowers every figure" if load0 > 0.5 else ""))


if __name__ == "__main__":
    main()
