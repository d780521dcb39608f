"""Cluster mode: `aigen worker` processes over DBOS on a real PostgreSQL.

Every worker is a separate process (`python -m aigen --home H worker`), the
"machines" of the cluster. Once the PostgreSQL store is there
(aigen.store.open_store), each worker has its own empty home and the rows live in
the cluster database; before that, the aigen rows are in one shared SQLite home
(DBOS's own tables are in PostgreSQL either way).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("dbos")

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.timeout(180) if hasattr(pytest.mark, "timeout") else []


def has_pg_store() -> bool:
    import aigen.store

    return hasattr(aigen.store, "open_store")


class Cluster:
    """Worker processes, the commands run against the cluster, and its store."""

    def __init__(self, tmp_path: Path, url: str, **env):
        from fakes.testproviders import PLUGINS

        self.tmp = tmp_path
        self.url = url
        self.shared_home = tmp_path / "client-home"
        self.inflight = tmp_path / "inflight.txt"
        self.env = {
            **os.environ,
            "AIGEN_DATABASE_URL": url,
            "AIGEN_PROVIDER_PLUGINS": PLUGINS,
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]),
            "AIGEN_WORKER_HEARTBEAT": "0.2",
            "AIGEN_WORKER_DEAD_AFTER": "2",
            "AIGEN_TEST_INFLIGHT": str(self.inflight),
            "AIGEN_TEST_DELAY": "0.3",
            **env,
        }
        for var in ("AIGEN_HOME", "AIGEN_TEST_FAIL", "AIGEN_TEST_REFUSE", "AIGEN_STORAGE_URL"):
            self.env.pop(var, None)
        self.procs: dict[str, subprocess.Popen] = {}
        self._store = None

    # -- processes ---------------------------------------------------------------
    def worker_home(self, name: str) -> Path:
        return self.tmp / f"worker-{name}" if has_pg_store() else self.shared_home

    def start_worker(self, name: str, *args: str, wait: bool = True, **env) -> subprocess.Popen:
        home = self.worker_home(name)
        log = open(self.tmp / f"worker-{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "aigen", "--home", str(home), "worker", "--id", name, *args],
            cwd=REPO, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        if wait:
            self.wait_for(lambda: proc.poll() is not None or "serving" in self.log(name), 60, f"worker {name} up")
            assert proc.poll() is None, self.log(name)
        return proc

    def log(self, name: str) -> str:
        p = self.tmp / f"worker-{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def aigen(self, *args: str, timeout: float = 120, **env) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "aigen", "--home", str(self.shared_home), *args],
                              cwd=REPO, env={**self.env, **env}, capture_output=True, text=True, timeout=timeout)

    def generate(self, *args: str, images: int = 2, provider: str = "paced", **env) -> str:
        out = self.aigen("generate", "-u", "ann", "a fox", "--images", str(images), "--videos", "0",
                         "--image-provider", provider, "--image-size", "64x64", "--notify-via", "none",
                         "--detach", "--json", *args, **env)
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)["id"]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    # -- the store -----------------------------------------------------------------
    @property
    def store(self):
        if self._store is None:
            from aigen.cluster.worker import open_store
            from aigen.config import Home

            self._store = open_store(Home(self.shared_home, "--home"), self.env)
        return self._store

    def gen(self, gen_id: str) -> dict:
        return self.store.get_generation(gen_id)

    def assets(self, gen_id: str) -> list[dict]:
        return self.store.assets(gen_id)

    def wait_final(self, gen_id: str, timeout: float = 90) -> dict:
        self.wait_for(lambda: self.gen(gen_id)["status"] != "Processing", timeout, f"generation {gen_id} final")
        return self.gen(gen_id)

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        logs = "\n".join(f"--- {n}\n{self.log(n)[-3000:]}" for n in self.procs)
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    # -- what the paced provider recorded ----------------------------------------------
    def calls(self) -> list[tuple[str, float, int, str, int]]:
        if not self.inflight.exists():
            return []
        out = []
        for line in self.inflight.read_text().splitlines():
            what, t, pid, gen, idx = line.split()
            out.append((what, float(t), int(pid), gen, int(idx)))
        return out

    def most_in_flight(self) -> int:
        n = best = 0
        # At one instant, an end comes before a begin: a slot freed then reused is not an overlap.
        for what, *_ in sorted(self.calls(), key=lambda c: (c[1], c[0] == "begin")):
            n += 1 if what == "begin" else -1
            best = max(best, n)
        return best


@pytest.fixture
def cluster(tmp_path, pg_database):
    c = Cluster(tmp_path, pg_database)
    yield c
    c.stop_all()


def test_three_workers_never_exceed_a_cap_of_two_and_make_every_asset_once(cluster):
    cluster.env["AIGEN_PACED_CONCURRENCY"] = "2"
    for name in ("w1", "w2", "w3"):
        cluster.start_worker(name)
    gens = [cluster.generate(images=4) for _ in range(3)]
    for g in gens:
        assert cluster.wait_final(g)["status"] == "Completed", cluster.assets(g)
    begins = [(gen, idx) for what, _, _, gen, idx in cluster.calls() if what == "begin"]
    assert sorted(begins) == sorted((g, i) for g in gens for i in range(1, 5))  # each asset made exactly once
    assert cluster.most_in_flight() == 2  # the cap was reached, never passed, across three processes
    for g in gens:
        assert all(a["status"] == "done" and a["attempts"] == 1 for a in cluster.assets(g))
    status = cluster.aigen("cluster", "status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert {w["executor_id"] for w in data["workers"]} == {"w1", "w2", "w3"}
    assert all(w["state"] == "alive" for w in data["workers"])
    paced = next(q for q in data["queues"] if q["provider"] == "paced")
    assert (paced["cap"], paced["queued"], paced["running"]) == (2, 0, 0)
    text = cluster.aigen("cluster", "status")
    assert text.returncode == 0 and "w2" in text.stdout and "paced" in text.stdout, text.stdout


def test_kill_9_mid_job_another_worker_takes_over_and_polls_the_saved_runway_job(cluster):
    from fakes.runway_fake import KEY, Outcome, RunwayFake

    with RunwayFake() as fake:
        # A long task: 300 polls of PENDING at 0.05 s (15 s), so the kill lands while it runs.
        fake.default_outcome = Outcome(steps=("PENDING",) * 300 + ("RUNNING", "SUCCEEDED"))
        cluster.env.update(RUNWAYML_API_SECRET=KEY, RUNWAYML_BASE_URL=fake.url, AIGEN_POLL_INTERVAL="0.05",
                           AIGEN_TEST_DELAY="60")
        a = cluster.start_worker("a")
        out = cluster.aigen("generate", "-u", "ann", "a fox", "--images", "0", "--videos", "1",
                            "--video-provider", "runway", "--duration", "5", "--notify-via", "none",
                            "--detach", "--json")
        assert out.returncode == 0, out.stderr
        video_gen = json.loads(out.stdout)["id"]
        paid_gen = cluster.generate(images=1)  # a sync paid call, running when its worker dies
        cluster.wait_for(lambda: cluster.assets(video_gen)[0]["provider_job_id"]
                         and cluster.assets(paid_gen)[0]["status"] == "running", 30, "both jobs running")
        job_id = cluster.assets(video_gen)[0]["provider_job_id"]
        assert fake.creations == 1
        cluster.start_worker("b")
        assert cluster.assets(video_gen)[0]["status"] == "running"  # still at Runway when a dies
        os.kill(a.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        a.wait(10)
        gen = cluster.wait_final(video_gen, timeout=60)
        took = time.monotonic() - killed_at
        assert gen["status"] == "Completed", cluster.assets(video_gen)
        asset = cluster.assets(video_gen)[0]
        assert asset["provider_job_id"] == job_id
        assert fake.creations == 1  # polled, not created again
        assert fake.retrieves(job_id) >= 300
        assert took < 2 + 30, took  # the dead-after window plus the rest of the job
        assert "took over 4 job(s) of dead worker(s) a" in cluster.log("b"), cluster.log("b")
        if has_pg_store():  # b made the file, in its own home: a's folder is not used
            assert (cluster.worker_home("b") / asset["path"]).is_file()
        print(f"takeover: generation completed {took:.1f} s after the kill (dead after 2 s)")
        # The sync paid call may have been billed: failed with the hardening wording, not sent again.
        paid = cluster.wait_final(paid_gen, timeout=30)
        pa = cluster.assets(paid_gen)[0]
        assert paid["status"] == "Failed" and pa["error_code"] == "worker_lost", pa
        assert "may have made and billed it; not retried" in pa["error"] and f"aigen retry {paid_gen}" in pa["error"]
        assert [c for c in cluster.calls() if c[0] == "begin" and c[3] == paid_gen][0][2] == a.pid
        assert len([c for c in cluster.calls() if c[0] == "begin" and c[3] == paid_gen]) == 1
        rows = {w["executor_id"]: w for w in cluster.store.query("SELECT * FROM workers")}
        assert rows["a"]["state"] == "dead" and rows["a"]["recovered_by"] == "b"


def test_sigterm_drains_the_running_job_starts_no_new_one_and_exits_0(cluster):
    cluster.env.update(AIGEN_PACED_CONCURRENCY="1", AIGEN_TEST_DELAY="1.5")
    a = cluster.start_worker("a")
    g = cluster.generate(images=2)
    cluster.wait_for(lambda: any(c[0] == "begin" for c in cluster.calls()), 30, "first call")
    os.kill(a.pid, signal.SIGTERM)
    assert a.wait(30) == 0, cluster.log("a")
    assert "draining" in cluster.log("a")
    made = [x for x in cluster.assets(g) if x["status"] == "done"]
    assert len(made) == 1  # the running one finished
    assert [c[4] for c in cluster.calls() if c[0] == "begin"] == [made[0]["idx"]]  # no new job after SIGTERM
    assert cluster.store.query_one("SELECT state FROM workers WHERE executor_id = 'a'")["state"] == "stopped"
    b = cluster.start_worker("b")
    assert cluster.wait_final(g)["status"] == "Completed"
    assert {c[2] for c in cluster.calls() if c[0] == "begin" and c[4] != made[0]["idx"]} == {b.pid}


def test_sigterm_after_the_drain_timeout_hands_the_running_job_back(cluster):
    cluster.env.update(AIGEN_PACED_CONCURRENCY="1", AIGEN_TEST_DELAY="20")
    a = cluster.start_worker("a", AIGEN_WORKER_DRAIN_TIMEOUT="0")
    g = cluster.generate(images=1)
    cluster.wait_for(lambda: any(c[0] == "begin" for c in cluster.calls()), 30, "first call")
    os.kill(a.pid, signal.SIGTERM)
    assert a.wait(30) == 0, cluster.log("a")
    assert "handing back 1 job" in cluster.log("a")
    asset = cluster.assets(g)[0]
    assert asset["status"] == "queued", asset  # handed back, not failed
    cluster.env["AIGEN_TEST_DELAY"] = "0.2"
    b = cluster.start_worker("b")
    assert cluster.wait_final(g)["status"] == "Completed", cluster.assets(g)
    assert [c[2] for c in cluster.calls() if c[0] == "begin"] == [a.pid, b.pid]


def test_cancel_stops_a_running_generation_everywhere(cluster):
    cluster.env.update(AIGEN_PACED_CONCURRENCY="1", AIGEN_TEST_DELAY="30")
    cluster.start_worker("a")
    g = cluster.generate(images=3)
    cluster.wait_for(lambda: any(c[0] == "begin" for c in cluster.calls()), 30, "first call")
    t0 = time.monotonic()
    out = cluster.aigen("cancel", g[:6], "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    res = json.loads(out.stdout)
    assert res["id"] == g and res["workflows"] >= 2
    # The queued assets are cancelled by the command; the running one by its worker, at its next check.
    assert res["cancelled_assets"] + res["running"] >= 2
    gen = cluster.wait_final(g, timeout=20)
    assert time.monotonic() - t0 < 10  # the running call stopped at its next check, not after 30 s
    assert gen["status"] == "Failed"
    assert all(a["status"] == "failed" and a["error_code"] == "cancelled" for a in cluster.assets(g))
    assert "cancelled with `aigen cancel`" in gen["error"]
    time.sleep(0.5)
    assert len([c for c in cluster.calls() if c[0] == "begin"]) == 1  # nothing else was started
    again = cluster.aigen("cancel", g)
    assert again.returncode == 0 and "already Failed" in again.stdout


def test_generate_detach_returns_at_once_and_the_queue_waits_for_a_worker(cluster):
    cluster.start_worker("p", "--providers", "paced")  # a live worker, that does not serve `local`
    t0 = time.monotonic()
    g = cluster.generate(images=3, provider="local")
    assert time.monotonic() - t0 < 30
    assert cluster.gen(g)["status"] == "Processing"
    status = json.loads(cluster.aigen("cluster", "status", "--json").stdout)
    assert [w["executor_id"] for w in status["workers"]] == ["p"]
    local = next(q for q in status["queues"] if q["provider"] == "local")
    assert local["queued"] == 3 and local["served"] is False
    # A retry of a generation still queued is refused: it would be made twice.
    busy = cluster.aigen("retry", g)
    assert busy.returncode != 0 and "queued or running on the cluster" in busy.stdout + busy.stderr
    os.kill(cluster.procs["p"].pid, signal.SIGTERM)  # no live worker at all: still refused (it is queued)
    assert cluster.procs["p"].wait(30) == 0
    busy = cluster.aigen("retry", g)
    assert busy.returncode != 0 and "no worker is running now" in busy.stdout + busy.stderr
    cluster.start_worker("w", "--providers", "local")
    assert cluster.wait_final(g)["status"] == "Completed"
    # A follow in the foreground (no --detach) shows the result like an embedded run.
    out = cluster.aigen("generate", "-u", "ann", "a hen", "--images", "1", "--videos", "0", "--image-size",
                        "64x64", "--notify-via", "none", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["status"] == "Completed"


def test_retry_in_cluster_mode_reenqueues_only_the_missing_assets(cluster):
    w = cluster.start_worker("w", AIGEN_TEST_FAIL="2")  # this worker's provider fails image 2
    g = cluster.generate(images=2, provider="flaky")
    gen = cluster.wait_final(g)
    assert gen["status"] == "Failed" and "image 2" in gen["error"]
    os.kill(w.pid, signal.SIGTERM)
    assert w.wait(30) == 0
    cluster.start_worker("w2")
    out = cluster.aigen("retry", g, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["status"] == "Completed"
    by_idx = {a["idx"]: a for a in cluster.assets(g)}
    assert by_idx[1]["attempts"] == 1 and by_idx[2]["attempts"] == 2  # image 1 was not made again
    again = cluster.aigen("retry", g)
    assert again.returncode == 0 and "already Completed" in again.stdout


def test_worker_errors_are_one_clear_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("AIGEN_DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-m", "aigen", "--home", str(tmp_path / "h"), "worker"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "not in cluster mode" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    from fakes.cluster_services import free_port

    env["AIGEN_DATABASE_URL"] = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/none"
    out = subprocess.run([sys.executable, "-m", "aigen", "--home", str(tmp_path / "h"), "worker"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "cannot reach the cluster database" in text, text
    assert "secret" not in text and "Traceback" not in text
    bad = subprocess.run([sys.executable, "-m", "aigen", "--home", str(tmp_path / "h"), "worker", "--providers",
                          "nope"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown provider nope" in bad.stdout + bad.stderr


def test_help_and_a_local_generate_import_no_dbos(tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from aigen.cli import app\n"
        "r = CliRunner()\n"
        "for args in (['--help'], ['worker', '--help'], ['generate', '-u', 'ann', 'x', '--images', '1', '--videos',"
        " '0', '--image-size', '64x64', '--notify-via', 'none', '-q']):\n"
        "    res = r.invoke(app, args)\n"
        "    assert res.exit_code == 0, (args, res.output)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dbos', 'psycopg', 'sqlalchemy') "
        "or m.startswith('aigen.cluster.'))\n"
        "print('LOADED', bad)\n"
    )
    env = {**os.environ, "AIGEN_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    env.pop("AIGEN_DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
