"""A grid across real networks: hosts built with network namespaces on this machine.

    coordinator host C ── 10.77.1.0/24 ── router R ─┬─ bridge 10.77.2.0/24 ─┬─ worker host A1
                                                     │                        └─ worker host A2
                                                     └─ bridge 10.77.3.0/24 ─── worker host B1

Every worker host's link to its bridge passes through a relay in the router
(tests/acceptance/netns_link.py) that copies Ethernet frames, and later delays
them 100 ms and drops 5% of them (``tc netem`` is missing from this kernel).
The coordinator runs with ``--separate-networks``; workers are real
``coopgrid worker`` processes inside their hosts, the job is submitted with
``coopgrid submit`` from the coordinator's host, and the test reads what
happened from the coordinator's SQLite file. Skipped where namespaces cannot
be made (not root, no ``ip``); every namespace is deleted at the end, also on
failure (a namespace takes its interfaces with it).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from coopgrid.local import KEY_PASSWORD

pytestmark = pytest.mark.acceptance

LINK = str(Path(__file__).with_name("netns_link.py"))
PORT = 8750
COORDINATOR = "10.77.1.2"
WORKERS = {"a1": ("A", "10.77.2.11"), "a2": ("A", "10.77.2.12"), "b1": ("B", "10.77.3.11")}
GATEWAY = {"A": "10.77.2.1", "B": "10.77.3.1"}
SLEEPY = '''"""TEST FACILITY: an echo task that sleeps as long as its process's SLEEPY_SECONDS file says."""
import os
import time
from pathlib import Path

from coopgrid.tasks.echo import EchoTask


class SleepyTask(EchoTask):
    name = "sleepy"

    def run(self, task_input, model, params):
        time.sleep(float(Path(os.environ["SLEEPY_SECONDS"]).read_text()))
        return task_input
'''


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _namespaces_or_skip(probe: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add); run the suite as root to include this test")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2) on this machine")
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot create a network namespace here: {err.decode().strip() or exc}")
    _ip("netns", "del", probe)


class Hosts:
    """Namespaces and the processes started in them; :meth:`close` undoes it all."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.made: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def ns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def add(self, name: str) -> str:
        ns = self.ns(name)
        _ip("netns", "add", ns)
        self.made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def run(self, ns: str, *argv: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(ns), *argv], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
        )
        if log:
            out.close()
        self.procs.append(proc)
        return proc

    def call(self, ns: str, *argv: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns(ns), *argv], capture_output=True, timeout=60,
            env={**os.environ, **(env or {})},
        )
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
        return done.stdout.decode()

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in self.made:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:  # anything left behind in the namespace (none expected)
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def build(h: Hosts) -> None:
    """The topology in the module docstring; the relay pairs are (router side of a host, bridge side)."""
    r = h.add("R")
    c = h.add("C")
    _ip("link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "rc", "netns", r)
    _ip("-n", c, "addr", "add", f"{COORDINATOR}/24", "dev", "c0")
    _ip("-n", r, "addr", "add", "10.77.1.1/24", "dev", "rc")
    for net, gw in GATEWAY.items():
        _ip("-n", r, "link", "add", f"br{net}", "type", "bridge")
        _ip("-n", r, "addr", "add", f"{gw}/24", "dev", f"br{net}")
        _ip("-n", r, "link", "set", f"br{net}", "up")
    for name, (net, addr) in WORKERS.items():
        host = h.add(name)
        _ip("link", "add", "h0", "netns", host, "type", "veth", "peer", "name", f"w{name}", "netns", r)
        _ip("-n", r, "link", "add", f"p{name}", "type", "veth", "peer", "name", f"q{name}")
        _ip("-n", r, "link", "set", f"q{name}", "master", f"br{net}")
        _ip("-n", host, "addr", "add", f"{addr}/24", "dev", "h0")
        _ip("-n", host, "link", "set", "h0", "up")
        _ip("-n", host, "route", "add", "default", "via", GATEWAY[net])
        h.call(name, sys.executable, LINK, "nocsum", "h0")
        for dev in (f"w{name}", f"p{name}", f"q{name}"):
            _ip("-n", r, "link", "set", dev, "up")
    _ip("-n", c, "link", "set", "c0", "up")
    _ip("-n", c, "route", "add", "default", "via", "10.77.1.1")
    _ip("-n", r, "link", "set", "rc", "up")
    h.call("C", sys.executable, LINK, "nocsum", "c0")
    h.call("R", sys.executable, LINK, "nocsum", "rc", *[f"{p}{n}" for n in WORKERS for p in "wpq"])
    h.call("R", "sysctl", "-qw", "net.ipv4.ip_forward=1")


def db_rows(db: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql, args).fetchall()


def wait_until(what: str, check, timeout: float, procs: list[subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        dead = [p.args for p in procs if p.poll() is not None]
        assert not dead, f"{dead} exited; logs in {logs}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s; logs in {logs}"
        time.sleep(0.05)


def test_a_job_crosses_networks_through_delay_loss_and_a_host_cut_off(tmp_path):
    tag = f"cg{os.getpid() % 100000}"
    _namespaces_or_skip(f"{tag}-probe")
    site = tmp_path / "site"  # the sleepy task type, an entry point as any plugin has
    (site / "coopgrid_sleepy-0.1.dist-info").mkdir(parents=True)
    (site / "coopgrid_sleepy.py").write_text(SLEEPY)
    (site / "coopgrid_sleepy-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: coopgrid-sleepy\nVersion: 0.1\n")
    (site / "coopgrid_sleepy-0.1.dist-info" / "entry_points.txt").write_text("[coopgrid.tasks]\nsleepy = coopgrid_sleepy:SleepyTask\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "COOPGRID_KEY_PASSWORD": KEY_PASSWORD}
    data, logs = tmp_path / "coordinator", tmp_path / "logs"
    logs.mkdir()
    db = data / "coopgrid.sqlite"
    url = f"http://{COORDINATOR}:{PORT}"
    h = Hosts(tag)
    try:
        build(h)
        relay = h.run("R", sys.executable, LINK, "relay", "0.1", "0.05",
                      *[dev for n in WORKERS for dev in (f"w{n}", f"p{n}")], log=logs / "relay.log")
        wait_until("relay ready", lambda: "ready" in (logs / "relay.log").read_text(), 30, [relay], logs)
        coord = h.run("C", sys.executable, "-m", "coopgrid", "coordinator", "--host", COORDINATOR, "--port", str(PORT),
                      "--data-dir", str(data), "--operator-token-file", str(tmp_path / "token"),
                      "--separate-networks", "--ledger", "none", "--lease-seconds", "5",
                      env=env, log=logs / "coordinator.log")
        wait_until("coordinator up", lambda: (data / "coordinator.json").exists(), 60, [coord], logs)
        token = (tmp_path / "token").read_text().strip()
        for name in WORKERS:
            (tmp_path / f"{name}.sleep").write_text("0.25")
        workers = {
            name: h.run(name, sys.executable, "-m", "coopgrid", "worker", "--coordinator", url,
                        "--key-file", str(tmp_path / name / "key.json"), "--cache-dir", str(tmp_path / name / "cache"),
                        "--name", name, "--owner", f"owner-{name}", "--batch", "2",
                        env=env | {"SLEEPY_SECONDS": str(tmp_path / f"{name}.sleep")}, log=logs / f"{name}.log")
            for name in WORKERS
        }
        running = [relay, coord, *workers.values()]
        wait_until("workers registered", lambda: db.exists() and len(db_rows(db, "SELECT id FROM workers")) == 3,
                   60, running, logs)
        # the edge saw each worker's own address: its network is the host's, not a proxy's
        network = dict(db_rows(db, "SELECT name, network FROM workers"))
        assert network == {"a1": "10.77.2.0/24", "a2": "10.77.2.0/24", "b1": "10.77.3.0/24"}

        def submit(name: str, tasks: int) -> str:
            h.call("C", sys.executable, "-m", "coopgrid", "submit", "--coordinator", url, "--token", token,
                   "--dataset", f"sequence:{tasks}", "--task-type", "sleepy", "--task-size", "1", "--replicas", "2",
                   "--quorum", "2", "--no-adaptive", "--gold-rate", "0", "--no-wait", "--name", name, env=env)
            return db_rows(db, "SELECT id FROM jobs WHERE name = ?", name)[0][0]

        def done(job: str) -> bool:
            return db_rows(db, "SELECT state FROM jobs WHERE id = ?", job)[0][0] != "running"

        clean = submit("clean network", 6)
        wait_until("the job on a clean network done", lambda: done(clean), 60, running, logs)

        relay.send_signal(signal.SIGUSR1)  # from now on: 100 ms each way, 5% of frames lost
        (tmp_path / "a1.sleep").write_text("4")  # a1's leases now last long enough to be cut off in the middle
        rough = submit("delay, loss and a host cut off", 12)
        a1 = db_rows(db, "SELECT id FROM workers WHERE name = 'a1'")[0][0]
        wait_until("a1 holding a lease of the job", lambda: bool(db_rows(
            db, "SELECT 1 FROM replicas WHERE job_id = ? AND worker_id = ? AND state = 1", rough, a1)), 60, running, logs)
        h.call("R", "ip", "link", "set", "wa1", "down")  # a1's host is cut off mid-lease
        wait_until("the job through delay, loss and a cut done", lambda: done(rough), 90, running[:2] + [workers["a2"], workers["b1"]], logs)

        for job, n in ((clean, 6), (rough, 12)):
            state, n_tasks, tasks_done = db_rows(db, "SELECT state, n_tasks, tasks_done FROM jobs WHERE id = ?", job)[0]
            assert (state, n_tasks, tasks_done) == ("done", n, n)
            by_task: dict[int, list[tuple[str, str]]] = defaultdict(list)
            for task, status, name in db_rows(
                db, "SELECT r.task_id, r.status, w.name FROM results r JOIN workers w ON w.id = r.worker_id "
                "WHERE r.job_id = ? AND r.status IN ('accepted', 'valid')", job,
            ):
                by_task[task].append((status, name))
            assert len(by_task) == n  # nothing lost
            for task, agreeing in by_task.items():
                assert [s for s, _ in agreeing].count("accepted") == 1, (task, agreeing)  # nothing counted twice
                # the quorum's two replicas ran on two networks
                assert len({network[w] for _, w in agreeing}) == 2, (task, agreeing)
        # a1's lease ran out while it was cut off, and its replicas were run by others (a1 takes 4 s a task:
        # it was cut off before it could have finished the one it held)
        expired = db_rows(db, "SELECT count(*) FROM replicas WHERE job_id = ? AND worker_id = ? AND state = 3", rough, a1)
        assert expired[0][0] >= 1
    finally:
        h.close()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert tag not in left
