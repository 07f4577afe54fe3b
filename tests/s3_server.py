"""A real S3-protocol server on loopback for the tests: moto's standalone server, in a process of its own.

``s3_server`` (session-wide: one server process, started on a free port and stopped at the end)
gives each test a fresh bucket through :meth:`S3Server.new_bucket`, so tests never see each other's
objects. Without moto installed (``pip install 'moto[server]'``, part of the test extra) the tests
that need it are skipped and say so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

#: moto accepts any credentials; these are what the tests' clients and processes sign with
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "coopgrid-test", "AWS_SECRET_ACCESS_KEY": "coopgrid-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    endpoint: str
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this server as boto3 users configure it."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def new_bucket(self) -> str:
        name = f"coopgrid-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def requests(self) -> list[str]:
        """The request lines the server logged so far (werkzeug's access log)."""
        return [line for line in self.log.read_text(errors="replace").splitlines() if '"GET ' in line
                or '"PUT ' in line or '"POST ' in line or '"HEAD ' in line or '"DELETE ' in line]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[S3Server]:
    """moto's standalone S3 server in a process of its own on a free loopback port, stopped on the way out."""
    for _ in range(3):  # the free port may be taken between our probe and moto's bind
        port = _free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **CREDENTIALS},
            )
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        if proc.poll() is None and time.monotonic() < deadline:
            break
        proc.kill()
        proc.wait()
    else:
        raise RuntimeError(f"moto's server did not start; its log:\n{log.read_text(errors='replace')[-2000:]}")
    try:
        yield S3Server(endpoint, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def missing_modules() -> list[str]:
    return [m for m in ("moto", "boto3", "flask") if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if missing := missing_modules():
        pytest.skip(f"the S3 tests need moto's standalone server and boto3: pip install 'moto[server]' boto3 "
                    f"(no module {', '.join(missing)})")
    try:
        with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))
