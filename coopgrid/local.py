"""A grid on this machine: coordinator and worker processes on loopback.

Used by ``coopgrid demo``, the acceptance tests and the benchmarks, so all
three start processes exactly as a user would, through the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from coopgrid.errors import CoopgridError, CoordinatorUnavailable

KEY_PASSWORD = "coopgrid-local"  # the local grid's worker keystores; not for real deployments


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "coopgrid", *args]


@dataclass
class LocalGrid:
    data_dir: Path
    coordinator: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    url: str = ""
    token: str = ""
    log_dir: Path | None = None

    def __post_init__(self) -> None:
        self.log_dir = self.log_dir or self.data_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _log(self, name: str) -> int:
        assert self.log_dir is not None
        return os.open(self.log_dir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def start_coordinator(
        self, *extra: str, port: int = 0, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> str:
        """Start ``coopgrid coordinator`` on this data dir; ``env`` is added to this process's environment."""
        info = self.data_dir / "coordinator.json"
        info.unlink(missing_ok=True)
        token_file = self.data_dir / "operator.token"
        log = self._log("coordinator")
        self.coordinator = subprocess.Popen(
            _cli("coordinator", "--data-dir", str(self.data_dir), "--port", str(port),
                 "--operator-token-file", str(token_file), *extra),
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
        )
        os.close(log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.coordinator.poll() is not None:
                raise CoordinatorUnavailable(
                    f"the coordinator exited with {self.coordinator.returncode}; see {self.log_dir}/coordinator.log"
                )
            if info.exists():
                try:  # the coordinator may be writing it right now
                    url = json.loads(info.read_text())["url"]
                except (ValueError, KeyError):
                    time.sleep(0.05)
                    continue
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        self.url = url
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        else:
            raise CoordinatorUnavailable(f"the coordinator did not come up in {timeout:.0f}s")
        if token_file.exists():
            self.token = token_file.read_text().strip()
        return self.url

    def start_worker(self, index: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``coopgrid worker`` number ``index``; ``env`` is added to this process's environment."""
        home = self.data_dir / "workers" / str(index)
        log = self._log(f"worker-{index}")
        proc = subprocess.Popen(
            _cli("worker", "--coordinator", self.url, "--key-file", str(home / "key.json"),
                 "--cache-dir", str(home / "cache"), "--name", f"local-{index}", *extra),
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            env={**os.environ, "COOPGRID_KEY_PASSWORD": KEY_PASSWORD, **(env or {})},
        )
        os.close(log)
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, client: Any, n: int, timeout: float = 60.0) -> None:
        """Wait until ``n`` workers have registered with the coordinator."""
        deadline = time.monotonic() + timeout
        while len(client.workers()) < n:
            self.check_workers()
            if time.monotonic() > deadline:
                raise CoopgridError(f"fewer than {n} workers registered in {timeout:.0f}s; see {self.log_dir}")
            time.sleep(0.05)

    def check_workers(self) -> None:
        """Raise if every worker has exited (a job would never finish)."""
        if self.workers and all(p.poll() is not None for p in self.workers):
            raise CoopgridError(
                f"every worker exited (codes {[p.returncode for p in self.workers]}); see {self.log_dir}/worker-*.log"
            )

    def kill_coordinator(self) -> None:
        if self.coordinator and self.coordinator.poll() is None:
            self.coordinator.send_signal(signal.SIGKILL)
            self.coordinator.wait()

    def stop(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM the workers, then the coordinator; SIGKILL what does not exit in time.

        Returns each process's exit code.
        """
        codes: dict[str, int | None] = {}
        for p in self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        named = [(f"worker-{i}", p) for i, p in enumerate(self.workers)]
        if self.coordinator:
            named.append(("coordinator", self.coordinator))
        for name, p in named:
            if name == "coordinator" and p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                codes[name] = p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = p.wait()
        return codes

    def log(self, name: str) -> str:
        assert self.log_dir is not None
        path = self.log_dir / f"{name}.log"
        return path.read_text() if path.exists() else ""
