"""Datasets the coordinator reads from URLs (POST /v1/datasets, coopgrid submit --dataset-url): only
under the prefixes its operator allows, never past them, through the upload limits; once per store."""

from __future__ import annotations

import functools
import gzip
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coopgrid.dataset_files import load_items
from coopgrid.datasets import Dataset
from test_api import NO_REPLICATION, Grid, Worker, error_of, make_grid  # noqa: F401 (make_grid is a fixture)

CSV = "city,temp\n" + "".join(f"c{i},{i * 1.5}\n" for i in range(20))
MORE = "city,temp\n" + "".join(f"d{i},{100 + i}\n" for i in range(10))


class Files(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; /moved/... redirects into /open/; /open/packed.csv comes gzip-encoded
    (nested twice: a bomb to whoever unpacks it); /open/slow.csv waits for the test's word."""

    release = threading.Event()
    asked = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.path.startswith("/moved/"):
            self.send_response(302)
            self.send_header("Location", "/open/" + self.path.removeprefix("/moved/"))
            self.end_headers()
            return
        if self.path == "/open/packed.csv":
            body = gzip.compress(gzip.compress(b"x\n" + b"0\n" * 5_000_000))
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip, gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/open/slow.csv":
            Files.asked.set()
            Files.release.wait(30)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A web server on loopback: /open/ (allowed), /secret/ (not), /moved/ (a redirect into /open/)."""
    root = tmp_path / "www"
    for d in ("open", "secret"):
        (root / d).mkdir(parents=True)
    (root / "open" / "a.csv").write_text(CSV)
    (root / "open" / "b.csv").write_text(MORE)
    (root / "open" / "big.csv").write_text(CSV * 200)
    (root / "open" / "photo.png").write_bytes(b"\x89PNG\r\n")
    (root / "open" / "slow.csv").write_text(CSV)
    (root / "secret" / "keys.csv").write_text("key\nsecret\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Files, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def fetch(grid: Grid, url: str, token: str | None = None):
    return grid.client.post("/v1/datasets", json={"url": url}, headers=grid.headers(token))


def test_a_job_runs_on_shards_the_coordinator_read_from_allowed_urls(make_grid, site) -> None:
    base, root = site
    grid = make_grid(dataset_urls=f"{base}/open/", max_upload_bytes=8_000)
    alice = grid.new_token("alice")
    answers = [fetch(grid, f"{base}/open/{name}", alice) for name in ("a.csv", "b.csv")]
    assert [r.status_code for r in answers] == [201, 201], [r.text for r in answers]
    first, second = (r.json() for r in answers)
    assert (first["items"], second["items"], first["kind"]) == (20, 10, "bytes")
    # the same dataset the submitter's own machine would have read from the file
    stored = Dataset.from_npz(grid.app.blobs.get(first["sha256"]), limits=None)
    local = load_items(root / "open" / "a.csv")
    assert stored.item_ids() == local.item_ids() and stored.to_npz() == local.to_npz()

    r = grid.client.post(
        "/v1/jobs", headers=grid.headers(alice),
        json={"task_type": "stats", "dataset": first["sha256"], "shards": [second["sha256"]], "task_size": 8,
              "trust": NO_REPLICATION},
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["items"] == 30
    w = Worker(grid).register()
    while (lease := w.post("/v1/leases", {"max_replicas": 10})).status_code == 201:
        assert w.submit(lease.json()["lease_id"], w.batch(lease.json())).status_code == 200
    done = grid.wait_until_done(job["id"], alice)
    temp = done["summary"]["columns"]["temp"]
    assert (temp["count"], temp["min"], temp["max"]) == (30, 0.0, 109.0)

    # another submitter learns nothing from the hash: the blob is alice's, as an upload would be
    bob = grid.new_token("bob")
    assert grid.client.get(f"/v1/blobs/{first['sha256']}", headers=grid.headers(bob)).status_code == 404


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/secret/keys.csv", 403, "only under the prefixes its operator allowed"),
        ("/open/../secret/keys.csv", 422, "'..' segments"),
        ("/open/%2e%2e/secret/keys.csv", 422, "'..' segments"),
        ("/open/%252e%252e/secret/keys.csv", 422, "'..' segments"),
        ("/open/..;/secret/keys.csv", 422, "'..' segments"),
        ("/open%2f..%2fsecret/keys.csv", 422, "encoded slash"),
        ("/openx/a.csv", 403, "only under the prefixes"),
        ("/moved/a.csv", 422, "does not follow redirects"),
        ("/open/missing.csv", 422, "answered HTTP 404"),
        ("/open/big.csv", 413, "split it into files below"),
        ("/open/photo.png", 422, "decoded on the submitter's machine"),
        ("/open/packed.csv", 422, "Content-Encoding"),
    ],
)
def test_a_url_outside_what_the_operator_allowed_or_over_the_limits_is_refused_saying_why(
    make_grid, site, path, status, says
) -> None:
    base, _ = site
    grid = make_grid(dataset_urls=f"{base}/open/,{base}/moved/", max_upload_bytes=8_000)
    before = sorted(grid.app.blobs.names())
    r = fetch(grid, base + path)
    assert r.status_code == status, r.text
    assert says in error_of(r)["detail"]
    assert sorted(grid.app.blobs.names()) == before  # nothing kept of what was refused


def test_other_hosts_schemes_and_credentials_are_refused(
    make_grid, site, tmp_path
) -> None:
    base, _ = site
    port = base.rsplit(":", 1)[1]
    grid = make_grid(dataset_urls=f"{base}/open/")
    for url, status in [
        (f"http://localhost:{port}/open/a.csv", 403),  # another name for the host is another host
        (f"http://127.0.0.1:{int(port) + 1}/open/a.csv", 403),
        (f"http://user:pw@127.0.0.1:{port}/open/a.csv", 422),
        (f"ftp://127.0.0.1:{port}/open/a.csv", 422),
        (f"file://{tmp_path}/www/open/a.csv", 403),
        ("http://169.254.169.254/latest/meta-data.csv", 403),
    ]:
        r = fetch(grid, url)
        assert r.status_code == status, (url, r.text)
    r = grid.client.post("/v1/datasets", json={"url": f"{base}/open/a.csv", "follow": True}, headers=grid.headers())
    assert r.status_code == 422  # unknown fields are refused, not ignored
    assert grid.client.post("/v1/datasets", json={"url": f"{base}/open/a.csv"}).status_code == 401


def test_a_coordinator_reads_no_urls_unless_its_operator_allows_some(make_grid, site) -> None:
    base, _ = site
    grid = make_grid()
    r = fetch(grid, f"{base}/open/a.csv")
    assert r.status_code == 403 and "reads no dataset URLs" in error_of(r)["detail"]


def test_a_file_url_reads_only_inside_its_allowed_directory_not_through_a_symlink_out(make_grid, site, tmp_path) -> None:
    _, root = site
    (root / "open" / "escape.csv").symlink_to(root / "secret" / "keys.csv")
    grid = make_grid(dataset_urls=f"file://{root}/open/")
    r = fetch(grid, f"file://{root}/open/a.csv")
    assert r.status_code == 201 and r.json()["items"] == 20, r.text
    r = fetch(grid, f"file://{root}/open/escape.csv")
    assert r.status_code == 403 and "symlink" in error_of(r)["detail"]
    assert fetch(grid, f"file://{root}/secret/keys.csv").status_code == 403


def test_a_token_has_one_url_read_at_a_time_and_a_slot_is_freed_when_it_ends(make_grid, site) -> None:
    base, _ = site
    grid = make_grid(dataset_urls=f"{base}/open/")
    alice, bob = grid.new_token("alice"), grid.new_token("bob")
    Files.asked.clear()
    Files.release.clear()
    first: list = []
    reading = threading.Thread(target=lambda: first.append(fetch(grid, f"{base}/open/slow.csv", alice)))
    reading.start()
    try:
        assert Files.asked.wait(10)
        r = fetch(grid, f"{base}/open/a.csv", alice)
        assert r.status_code == 429 and "one at a time" in error_of(r)["detail"]
        assert fetch(grid, f"{base}/open/a.csv", bob).status_code == 201  # another token is served meanwhile
    finally:
        Files.release.set()
        reading.join(30)
    assert first[0].status_code == 201, first[0].text
    assert fetch(grid, f"{base}/open/a.csv", alice).status_code == 201  # alice's slot is hers again
