"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

A coordinator and worker processes started through the CLI (one worker lies
at random, as in the demo); a person logs in with the operator token, watches
a job finish without reloading, downloads its output, sees the liar
quarantined, follows an epoch to its transaction on the embedded chain, and
finds the model's on-chain anchor. A submitter sees none of it but its own
jobs. The page and the API docs load nothing from outside the coordinator.

Screenshots go to the test's tmp dir and to ``test-artifacts/dashboard/``.
The browser is Debian's ``chromium`` (``make test`` installs it where it can):
Playwright never downloads one here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from coopgrid import datasets
from coopgrid.client import ApiClient
from coopgrid.protocol import sha256_hex

pytestmark = pytest.mark.acceptance

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: pip install -e '.[test]'")
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: Debian's chromium package (`apt-get install chromium`, which `make test` runs as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


class Shots:
    """Screenshots kept in the test's tmp dir and copied where a person can find them."""

    def __init__(self, page, tmp_path: Path) -> None:
        self.page = page
        self.dir = tmp_path / "screenshots"
        self.dir.mkdir()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        path = self.dir / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, ARTIFACTS / path.name)


def outside_requests(page, base: str) -> list[str]:
    """Refuse, and list, every request the page makes to anywhere but the coordinator."""
    outside: list[str] = []

    def check(route):
        url = route.request.url
        if url.startswith(base) or url.startswith("data:") or url.startswith("blob:"):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", check)
    return outside


def test_watch_a_job_a_cheater_and_an_epoch_in_the_browser(grid, digits_onnx, browser, tmp_path):
    grid.start_coordinator("--seal-every-seconds", "1")
    with ApiClient(grid.url, grid.token) as client:
        model = client.publish_model(digits_onnx.onnx, digits_onnx.spec(sha256_hex(digits_onnx.onnx)))
        # worker 0 is the operator's own (--trusted): among fresh keys only a root of trust makes a lie evidence
        grid.start_worker(0, "--batch", "2", "--trusted", env={"COOPGRID_TOKEN": grid.token})
        for i in range(1, 3):
            grid.start_worker(i, "--batch", "2")
        grid.start_worker(3, "--batch", "2", "--dishonest", "random")
        grid.wait_for_workers(client, 4)

        page = browser.new_page(viewport={"width": 1360, "height": 900}, accept_downloads=True)
        outside = outside_requests(page, grid.url)
        shot = Shots(page, tmp_path)
        page.goto(grid.url + "/")
        page.wait_for_selector("#login:not([hidden])")
        shot("01-login")
        page.fill("#token", "cgt_not-a-token")
        page.click("#login button[type=submit]")
        page.wait_for_selector("#login-error:has-text('not accepted')")
        page.fill("#token", grid.token)
        page.click("#login button[type=submit]")
        page.wait_for_selector("#tabs:not([hidden])")
        assert page.evaluate("sessionStorage.getItem('coopgrid-token')") == grid.token

        job = client.submit({"name": "label 3,000 digits", "task_type": "classify", "model": model["hash"],
                             "dataset": client.put_blob(datasets.digits(3000).to_npz()), "task_size": 50})
        page.goto(f"{grid.url}/#/jobs/{job['id']}")
        page.evaluate("window.__sameDocument = true")  # gone if the page were reloaded
        page.wait_for_selector(f".card[data-job='{job['id']}']")
        shot("02-job-running")
        page.wait_for_selector(f".card[data-job='{job['id']}'][data-state='done']", timeout=180_000)
        assert page.evaluate("window.__sameDocument") is True  # it updated itself while the job ran
        done = client.job(job["id"])
        assert page.inner_text(".progress .pct") == f"{done['tasks_done']:,} / {done['tasks']:,}"
        assert "No worker reported an error" in page.inner_text("#failures")
        assert "replicas per task" in page.inner_text("main")
        shot("03-job-done")

        with page.expect_download() as download:
            page.click("#download")
        saved = tmp_path / "download.parquet"
        download.value.save_as(saved)
        assert pq.read_table(saved).num_rows == 3000

        page.click("nav a[data-tab=jobs]")
        page.wait_for_selector(f"tr[data-job='{job['id']}'][data-state='done']")
        shot("04-jobs")

        page.click("nav a[data-tab=workers]")
        cheater = page.wait_for_selector("tr[data-worker='local-3'][data-state='quarantined']", timeout=60_000)
        reason = next(w for w in client.workers() if w["name"] == "local-3")["quarantine_reason"]
        assert reason and reason in cheater.inner_text()
        for i in range(3):
            assert page.get_attribute(f"tr[data-worker='local-{i}']", "data-state") in ("active", "idle")
        shot("05-workers")

        page.click("nav a[data-tab=epochs]")
        row = page.wait_for_selector("tr[data-epoch][data-state='committed']", timeout=60_000)
        number = int(row.get_attribute("data-epoch"))
        shot("06-epochs")
        row.click()
        page.wait_for_selector(f".card[data-epoch='{number}']")
        page.wait_for_selector("#on-chain:has-text('same roots')")
        epoch = next(e for e in client.ledger()["epochs"] if e["number"] == number)
        assert page.inner_text("#tx-hash") == epoch["tx_hash"]
        assert f"{epoch['block_number']:,}" in page.inner_text("#transaction")
        assert "mined" in page.inner_text("#transaction")
        shot("07-epoch")

        page.click("nav a[data-tab=models]")
        anchored = page.wait_for_selector(f"tr[data-model='{model['hash']}']:has-text('anchored')", timeout=30_000)
        assert "digits" in anchored.inner_text()
        shot("08-models")

        # a submitter sees only its own jobs, and logs in on the same page
        submitter = client.create_token("alice", "submitter")["token"]
        page.click("#logout")
        page.wait_for_selector("#login:not([hidden])")
        assert page.evaluate("sessionStorage.getItem('coopgrid-token')") is None
        page.fill("#token", submitter)
        page.click("#login button[type=submit]")
        page.click("nav a[data-tab=jobs]")
        page.wait_for_selector("text=your jobs")
        page.wait_for_selector("td.empty")
        assert page.query_selector(f"tr[data-job='{job['id']}']") is None
        shot("09-submitter")

        page.goto(grid.url + "/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        shot("10-docs")
        assert outside == []  # nothing loaded from anywhere but the coordinator

        metrics = httpx.get(grid.url + "/metrics", headers={"Authorization": f"Bearer {grid.token}"}).text
    assert 'coopgrid_workers{state="quarantined"} 1.0' in metrics
    assert "coopgrid_quarantines_total 1.0" in metrics
    assert 'coopgrid_results_total{status="pending"}' in metrics
    assert "coopgrid_last_commit_age_seconds" in metrics
    log = grid.log("coordinator")
    assert f"job {job['id']} submitted" in log and f"job {job['id']} finished" in log
    assert "(local-3) quarantined" in log and "registered" in log and f"epoch {number} committed" in log
