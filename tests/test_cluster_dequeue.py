"""The worker's dequeue lock, the generations' wait for their assets, and asset jobs under a failing store.

The dequeue lock makes the claims of one queue take turns across workers (so DBOS's
REPEATABLE READ claims stop conflicting), waits a bounded time, and never holds the
cap itself. wait_assets returns as soon as the asset jobs are recorded as ended, woken
by asset_done, and falls back to its safety poll when no wake-up comes.
"""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("psycopg")

from aigen.cluster.worker import DequeueLock  # noqa: E402


def test_claims_of_one_queue_take_turns_and_other_queues_do_not_wait(pg_database):
    a, b = DequeueLock(pg_database), DequeueLock(pg_database)
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def slow_claim():
        order.append("a-in")
        inside.set()
        release.wait(5)
        order.append("a-out")
        return "a"

    t = threading.Thread(target=lambda: a("aigen-paced", slow_claim))
    t.start()
    assert inside.wait(5)
    # Another queue is not held up by a claim on this one.
    assert b("aigen-other", lambda: "other") == "other"
    got = []
    tb = threading.Thread(target=lambda: got.append(b("aigen-paced", lambda: order.append("b") or "b")))
    tb.start()
    time.sleep(0.3)
    assert order == ["a-in"], "the second claim of the same queue must wait for the first"
    release.set()
    t.join(5)
    tb.join(5)
    assert order == ["a-in", "a-out", "b"] and got == ["b"]
    assert b.waited == 1 and b.skipped == 0


def test_a_claim_waits_at_most_wait_s_then_goes_ahead_without_the_lock(pg_database):
    import psycopg

    holder = psycopg.connect(pg_database, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (DequeueLock.CLASS_ID, DequeueLock.key("aigen-paced")))
        lock = DequeueLock(pg_database, wait_s=0.3)
        t0 = time.monotonic()
        assert lock("aigen-paced", lambda: "claimed") == "claimed"
        assert 0.25 <= time.monotonic() - t0 < 3
        assert lock.skipped == 1
    finally:
        holder.close()
    # With the holder gone (its session ended), the lock is taken again at once.
    assert lock("aigen-paced", lambda: "again") == "again" and lock.skipped == 1


def test_a_database_that_cannot_be_reached_only_costs_the_lock():
    lock = DequeueLock("postgresql://nobody@127.0.0.1:1/none", wait_s=0.2)
    assert lock("aigen-paced", lambda: "claimed") == "claimed"
    assert lock.skipped == 1


def test_an_exception_in_the_claim_releases_the_lock(pg_database):
    lock, other = DequeueLock(pg_database), DequeueLock(pg_database, wait_s=0.5)

    def boom():
        raise RuntimeError("claim failed")

    with pytest.raises(RuntimeError):
        lock("aigen-paced", boom)
    assert other("aigen-paced", lambda: "ok") == "ok" and other.waited == 0 and other.skipped == 0


def _worker_for_wait(monkeypatch, statuses: dict, poll_s: float):
    from aigen.cluster import engine, worker

    w = worker.Worker.__new__(worker.Worker)
    w._waiting = {}
    w._waiting_lock = threading.Lock()
    w.result_poll_s = poll_s
    reads = []

    def fake_statuses(_engine, ids):
        reads.append(time.monotonic())
        return {i: statuses[i] for i in ids if i in statuses}

    monkeypatch.setattr(engine, "workflow_statuses", fake_statuses)
    monkeypatch.setattr(engine, "_dbos_engine", lambda: None)
    return w, reads


def test_wait_assets_returns_when_woken_not_at_the_next_poll(monkeypatch):
    statuses = {"g.a1": "SUCCESS", "g.a2": "PENDING"}
    w, reads = _worker_for_wait(monkeypatch, statuses, poll_s=30.0)
    out = []
    t = threading.Thread(target=lambda: out.append(w.wait_assets("g", ["g.a1", "g.a2"])))
    t.start()
    time.sleep(0.2)
    assert not out and "g" in w._waiting
    statuses["g.a2"] = "ERROR"
    t0 = time.monotonic()
    w.asset_done("g")
    t.join(5)
    assert out == [{"g.a1": "SUCCESS", "g.a2": "ERROR"}]
    assert time.monotonic() - t0 < 2, "the wake-up, not the 30 s poll, ended the wait"
    assert "g" not in w._waiting
    # A wake-up for another generation wakes nothing and costs nothing.
    w.asset_done("other")


def test_wait_assets_sees_a_cancelled_job_by_its_safety_poll(monkeypatch):
    statuses = {"g.a1": "PENDING"}
    w, reads = _worker_for_wait(monkeypatch, statuses, poll_s=0.1)
    out = []
    t = threading.Thread(target=lambda: out.append(w.wait_assets("g", ["g.a1"])))
    t.start()
    time.sleep(0.25)
    statuses["g.a1"] = "CANCELLED"  # `aigen cancel`: no asset job ended, so no wake-up comes
    t.join(5)
    assert out == [{"g.a1": "CANCELLED"}] and len(reads) >= 2


# -- a store that fails under an asset job ---------------------------------------------------------------------

def _bare_worker(store=None, retries=3):
    from aigen.cluster import worker

    w = worker.Worker.__new__(worker.Worker)
    w.store = store
    w.store_retries = retries
    w.store_retry_delay_s = 0.01
    w.stop_jobs = threading.Event()
    w.exiting = threading.Event()
    return w


class _FlakyRunner:
    def __init__(self, failures, error):
        self.failures, self.error, self.calls = failures, error, 0

    def run_asset(self, gen_id, asset_id):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_an_asset_job_runs_again_while_the_store_is_unreachable():
    from aigen.errors import DatabaseUnavailable

    w = _bare_worker(retries=3)
    r = _FlakyRunner(2, DatabaseUnavailable("lost the connection to PostgreSQL at db: server closed"))
    assert w._run_with_store_retries(r, "g", 1) == "done" and r.calls == 3
    # Past the retries the error stands (the job ends in error; finalize marks the asset).
    r = _FlakyRunner(9, DatabaseUnavailable("cannot reach PostgreSQL"))
    with pytest.raises(DatabaseUnavailable):
        w._run_with_store_retries(r, "g", 1)
    assert r.calls == 4


def test_other_errors_are_not_retried_and_a_draining_worker_does_not_wait():
    from aigen.errors import DatabaseUnavailable

    w = _bare_worker(retries=3)
    r = _FlakyRunner(1, ValueError("a bug"))
    with pytest.raises(ValueError):
        w._run_with_store_retries(r, "g", 1)
    assert r.calls == 1
    w.stop_jobs.set()
    r = _FlakyRunner(1, DatabaseUnavailable("cannot reach PostgreSQL"))
    with pytest.raises(DatabaseUnavailable):
        w._run_with_store_retries(r, "g", 1)
    assert r.calls == 1


def test_finalize_fails_what_an_errored_job_left_instead_of_leaving_it_processing(tmp_path):
    from aigen.config import resolve_home
    from aigen.pipeline.plan import RequestSpec, prepare
    from aigen.store import Store

    home = resolve_home(tmp_path / "h")
    home.ensure()
    store = Store(home.db_path)
    gen, assets = prepare(RequestSpec(user_id="alice", prompt="a fox", images=2, videos=0), home=home.path)
    gid = store.create_generation(gen, assets)
    w = _bare_worker(store)
    w._on_pool = lambda fn, *a: fn(*a)
    # A job that succeeded leaves nothing to mark: the generation stays as its rows say.
    assert w.finalize(gid, {"x.a1": "SUCCESS"}) == "Processing"
    assert w.finalize(gid, {"x.a1": "SUCCESS", "x.a2": "ERROR"}) == "Failed"
    for left in store.assets(gid):
        assert left["status"] == "failed" and "ended with an error before recording a result" in left["error"]
        assert f"aigen retry {gid}" in left["error"]
    store.close()


def test_generate_and_the_workers_read_the_dead_after_setting_the_same_way(monkeypatch):
    from aigen.errors import BadInput
    from aigen.pipeline.background import use_workers

    class Rows:
        def query_one(self, sql, args):
            self.cutoff = args[0]
            return {"n": 1}

    monkeypatch.setenv("AIGEN_WORKER_DEAD_AFTER", "soon")
    with pytest.raises(BadInput, match="AIGEN_WORKER_DEAD_AFTER must be a number of seconds"):
        use_workers(Rows(), "postgresql://db/x")
    monkeypatch.setenv("AIGEN_WORKER_DEAD_AFTER", "30")
    assert use_workers(Rows(), "postgresql://db/x") is True
    # Embedded (no cluster database): the setting is not even read.
    monkeypatch.setenv("AIGEN_WORKER_DEAD_AFTER", "soon")
    assert use_workers(Rows(), None) is False


def test_the_first_phase_is_enqueued_with_the_generation_under_the_workflows_own_ids(pg_database, tmp_path):
    """enqueue_generation(first_assets=...) queues the asset jobs at once, each under the id the generation's
    workflow will use for it (so its own enqueue finds them: each asset is still made once, see
    test_cluster_workers.py); --video-from-images queues only the images first."""
    import psycopg

    from aigen.cluster.engine import ASSET_WORKFLOW, SCHEMA, Client, asset_phases, first_phase, queue_name
    from aigen.config import resolve_home
    from aigen.pipeline.plan import RequestSpec, prepare
    from aigen.store import open_store

    home = resolve_home(tmp_path / "h")
    store = open_store(home, env={"AIGEN_DATABASE_URL": pg_database})
    gen, assets = prepare(RequestSpec(user_id="alice", prompt="a fox", images=2, videos=1), home=home.path)
    gid = store.create_generation(gen, assets)
    first = first_phase(store, gid)
    assert [(a["kind"], a["idx"]) for a in first] == [("video", 1), ("image", 1), ("image", 2)]
    client = Client(pg_database)
    try:
        wf = client.enqueue_generation(gid, first_assets=first)
    finally:
        client.close()
    with psycopg.connect(pg_database) as c:
        rows = c.execute(f"SELECT workflow_uuid, name, queue_name, status FROM {SCHEMA}.workflow_status "
                         "ORDER BY created_at").fetchall()
    assert rows[0][0] == wf and rows[0][3] == "ENQUEUED"
    assert sorted(r[0] for r in rows[1:]) == sorted(f"{wf}.a{a['id']}" for a in first)
    assert all(r[1] == ASSET_WORKFLOW and r[2] == queue_name("local") and r[3] == "ENQUEUED" for r in rows[1:])
    # With --video-from-images, the videos wait for the images: only the images go first.
    phases = asset_phases({"options": {"video_from_images": True}}, store.assets(gid))
    assert [[a["kind"] for a in p] for p in phases] == [["image", "image"], ["video"]]
    store.close()


def test_the_workers_result_poll_and_store_retries_are_read_with_the_other_settings(tmp_path):
    from aigen.cluster.worker import settings_from
    from aigen.config import resolve_home
    from aigen.errors import BadInput

    home = resolve_home(tmp_path / "h")
    s = settings_from(home, {"AIGEN_WORKER_RESULT_POLL": "0.5", "AIGEN_WORKER_STORE_RETRIES": "2"},
                      executor_id="w1", providers="local", concurrency=None)
    assert (s.result_poll_s, s.store_retries) == (0.5, 2)
    with pytest.raises(BadInput, match="AIGEN_WORKER_STORE_RETRIES must be a number of tries"):
        settings_from(home, {"AIGEN_WORKER_STORE_RETRIES": "many"}, executor_id="w1", providers="local",
                      concurrency=None)
