"""Money as users drive it through the CLI: a submitter funds its job from its own keystore, workers stake,
a cheater is slashed with evidence anyone can check, honest workers claim, the submitter takes back what
was not spent, and every token minted is accounted for; on the embedded chain and on anvil."""

import json
import re

import httpx
import pytest

from coopgrid.app import coordinator_identity
from coopgrid.config import Settings
from coopgrid.datasets import sequence
from coopgrid.identity import Identity
from coopgrid.local import KEY_PASSWORD
from tests.acceptance.test_ledger_cli import cli
from tests.integration.conftest_ledger import anvil  # noqa: F401  (fixture)

pytestmark = pytest.mark.acceptance


@pytest.fixture(autouse=True)
def slash_at_once(monkeypatch):
    monkeypatch.setenv("COOPGRID_SLASH_DELAY_SECONDS", "0")  # the coordinator's (see Settings)

STAKE, REWARD, ITEMS, TASK_SIZE = 100, 10, 48, 4


def flat(text):
    """Console output with its line wrapping undone."""
    return " ".join(text.split())


def keys(grid, n):
    return [Identity.load_or_create(grid.data_dir / "workers" / str(i) / "key.json", KEY_PASSWORD) for i in range(n)]


def funded_job_with_a_cheater(grid):
    """Three staked workers (the third lies), a paid job funded by `submit --reward`; returns (job, submitter)."""
    submitter_key = grid.data_dir / "submitter" / "key.json"
    submitter = Identity.load_or_create(submitter_key, KEY_PASSWORD)
    budget = REWARD * ITEMS // TASK_SIZE
    cli(grid, "ledger", "mint", submitter.address, str(budget))
    workers = keys(grid, 3)
    for i, me in enumerate(workers):
        cli(grid, "ledger", "mint", me.address, str(STAKE))
        staked = cli(grid, "stake", str(STAKE), "--key-file", str(grid.data_dir / "workers" / str(i) / "key.json"))
        assert f"stake {STAKE} active" in flat(staked.stdout), staked.stdout
    # one honest worker is the operator's own: a quorum of fresh keys alone is only provisional (never paid)
    grid.start_worker(0, "--batch", "2", "--trusted", "--token", grid.token)
    grid.start_worker(1, "--batch", "2")
    grid.start_worker(2, "--batch", "2", "--dishonest", "random")
    out = cli(grid, "submit", "--task-type", "echo", "--dataset", f"sequence:{ITEMS}", "--task-size", str(TASK_SIZE),
              "--reward", str(REWARD), "--key-file", str(submitter_key), "--min-stake", str(STAKE),
              "--replicas", "3", "--quorum", "2", "--no-adaptive", "--gold-rate", "0")
    assert f"with {budget} from {submitter.address}" in flat(out.stdout), out.stdout
    job_id = out.stdout.split("job ", 1)[1].split(":", 1)[0]
    return job_id, submitter, workers, budget


def wait_for_slash(grid, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        slashes = httpx.get(f"{grid.url}/v1/ledger/slashes").json()
        if slashes and slashes[0]["tx_hash"]:
            return slashes[0]
        time.sleep(0.5)
    raise AssertionError(f"no slash in {timeout}s; coordinator log:\n{grid.log('coordinator')[-3000:]}")


def tokens(grid, address):
    return int(httpx.get(f"{grid.url}/v1/ledger/accounts/{address}").json()["tokens"])


def settle_and_check(grid, job_id, submitter, workers, budget, tmp_path):
    """Seal, slash, claim, refund through the CLI; every token minted is somewhere. Returns the slash."""
    cli(grid, "ledger", "seal")
    slash = wait_for_slash(grid)
    cheater = workers[2]
    assert slash["worker"] == cheater.address and slash["job_id"] == job_id and slash["amount"] == str(STAKE // 2)
    verified = cli(grid, "verify", "--slash", slash["tx_hash"])
    assert "verified" in verified.stdout and cheater.address in flat(verified.stdout), verified.stdout
    (tmp_path / "bundle.json").write_bytes(httpx.get(f"{grid.url}/v1/ledger/evidence/{slash['evidence']}").content)
    status = cli(grid, "ledger", "status")
    assert slash["tx_hash"] in flat(status.stdout)

    claimed = 0
    for i in (0, 1):
        out = cli(grid, "ledger", "claim", "--key-file", str(grid.data_dir / "workers" / str(i) / "key.json"))
        claimed += int(re.search(r"claimed (\d+) for", flat(out.stdout)).group(1))
    assert claimed == budget  # every task accepted: R per task, shared by its two agreeing results
    nothing = cli(grid, "ledger", "claim", "--key-file", str(grid.data_dir / "workers" / "2" / "key.json"), check=False)
    assert nothing.returncode == 1 and "nothing to claim" in nothing.stderr

    summary = cli(grid, "status", job_id)
    assert "escrow" in summary.stdout and "shared equally" in flat(summary.stdout)
    refund = cli(grid, "ledger", "refund", job_id, "--key-file", str(grid.data_dir / "submitter" / "key.json"))
    assert f"refunded {STAKE // 2} to {submitter.address}" in flat(refund.stdout), refund.stdout
    again = cli(grid, "ledger", "refund", job_id, "--key-file", str(grid.data_dir / "submitter" / "key.json"),
                check=False)
    assert again.returncode == 1 and "nothing to refund" in flat(again.stderr)

    escrow = httpx.get(f"{grid.url}/v1/jobs/{job_id}/escrow", headers={"authorization": f"Bearer {grid.token}"}).json()
    assert (escrow["budget"], escrow["spent"], escrow["unspent"]) == (str(budget), str(budget), "0")
    assert sum(int(w["paid"]) for w in escrow["workers"]) == budget

    minted = budget + 3 * STAKE
    contract = httpx.get(f"{grid.url}/v1/ledger").json()["contract"]
    held = sum(tokens(grid, a) for a in [submitter.address, *[w.address for w in workers]])
    assert held + tokens(grid, contract) == minted
    assert tokens(grid, submitter.address) == STAKE // 2  # the slash came back to the submitter
    assert tokens(grid, contract) == 2 * STAKE + STAKE // 2  # the stakes left; nothing unclaimed or unspent
    balance = cli(grid, "ledger", "balance", cheater.address)
    assert f"stake {STAKE // 2} active" in flat(balance.stdout)
    return slash


def test_a_funded_job_with_a_slashed_cheater_and_a_refund_on_the_embedded_chain(grid, tmp_path):
    grid.start_coordinator("--seal-every-seconds", "3600")
    job_id, submitter, workers, budget = funded_job_with_a_cheater(grid)
    settle_and_check(grid, job_id, submitter, workers, budget, tmp_path)

    # the evidence is the evidence: another bundle does not verify this slash
    forged = json.loads((tmp_path / "bundle.json").read_text())
    forged["agreeing"] = forged["agreeing"][:1]
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    slash = httpx.get(f"{grid.url}/v1/ledger/slashes").json()[0]
    bad = cli(grid, "verify", "--slash", slash["tx_hash"], "--bundle", str(tmp_path / "forged.json"), check=False)
    assert bad.returncode == 1 and "NOT verified" in flat(bad.stderr) and "Traceback" not in bad.stderr


def test_a_funded_job_with_a_slashed_cheater_and_a_refund_on_anvil(grid, anvil, tmp_path):  # noqa: F811
    coordinator_key = coordinator_identity(Settings(data_dir=grid.data_dir))
    key_password = (grid.data_dir / "coordinator-key.password").read_text().strip()
    anvil.fund(coordinator_key.address)
    deployed = cli(grid, "ledger", "deploy", "--rpc-url", anvil.url, "--key-file",
                   str(grid.data_dir / "coordinator-key.json"), key_password=key_password)
    contract = deployed.stdout.split("deployed at ", 1)[1].split()[0]
    grid.start_coordinator("--ledger", "rpc", "--rpc-url", anvil.url, "--contract", contract,
                           "--seal-every-seconds", "3600")
    job_id, submitter, workers, budget = funded_job_with_a_cheater(grid)
    slash = settle_and_check(grid, job_id, submitter, workers, budget, tmp_path)
    grid.stop()  # from here on, no coordinator: the chain and the bundle alone

    alone = cli(grid, "verify", "--slash", slash["tx_hash"], "--bundle", str(tmp_path / "bundle.json"),
                "--rpc-url", anvil.url, "--contract", contract)
    assert "verified" in alone.stdout and workers[2].address in flat(alone.stdout)


def test_a_coordinator_killed_between_funding_and_the_first_lease_loses_and_double_pays_nothing(grid):
    from coopgrid.client import ApiClient

    url = grid.start_coordinator("--seal-every-seconds", "3600")
    submitter = Identity.load_or_create(grid.data_dir / "submitter" / "key.json", KEY_PASSWORD)
    tasks_n = ITEMS // TASK_SIZE
    cli(grid, "ledger", "mint", submitter.address, str(REWARD * tasks_n))
    with ApiClient(grid.url, grid.token) as client:
        job = client.submit({"task_type": "echo", "dataset": client.put_blob(
            sequence(ITEMS).to_npz()), "task_size": TASK_SIZE,
            "reward_per_task": REWARD, "funder": submitter.address, "min_stake": 0,
            "trust": {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}})
        assert job["state"] == "unfunded"
        contract = client.account(submitter.address)["contract"]
        client.send_calls(submitter, [("approve", [contract, REWARD * tasks_n]),
                                      ("fund", [bytes.fromhex(job["id"]), REWARD * tasks_n, 2**34])])
    grid.kill_coordinator()  # funded on chain; the coordinator never heard of it, no task leased

    grid.start_coordinator("--seal-every-seconds", "3600", port=int(url.rsplit(":", 1)[1]))
    grid.start_worker(0, "--batch", "5")  # the sealer's loop sees the escrow funded and leases the job
    with ApiClient(grid.url, grid.token) as client:
        client.wait_for(job["id"], lambda j: j["state"] == "done", timeout=120)
    cli(grid, "ledger", "seal")
    worker_key = grid.data_dir / "workers" / "0" / "key.json"
    claimed = cli(grid, "ledger", "claim", "--key-file", str(worker_key))
    assert f"claimed {REWARD * tasks_n} for" in flat(claimed.stdout)
    escrow = httpx.get(f"{grid.url}/v1/jobs/{job['id']}/escrow", headers={"authorization": f"Bearer {grid.token}"}).json()
    assert (escrow["budget"], escrow["spent"], escrow["unspent"]) == (str(REWARD * tasks_n),) * 2 + ("0",)
    info = httpx.get(f"{grid.url}/v1/ledger").json()
    assert (info["spent"], info["claimed"]) == (str(REWARD * tasks_n),) * 2
