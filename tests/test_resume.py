"""Who works on a generation (aigen.pipeline.resume.decide, a function of facts and `now`), and the checks
`aigen retry` and the gallery's Resume/Retry share (plan_retry)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fakes.web import open_home, seed_generation

from aigen.errors import Busy
from aigen.pipeline import resume
from aigen.pipeline.resume import (
    FINAL,
    NO_WORKER,
    RUNNING,
    STALLED,
    STARTING,
    AllRefused,
    Facts,
    decide,
    plan_retry,
)
from aigen.pipeline.run import run_lock
from aigen.store.core import iso

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


def ago(seconds: float) -> str:
    return iso(NOW - timedelta(seconds=seconds))


@pytest.mark.parametrize("facts, grace, expected", [
    # Embedded shape: the run lock says it.
    (Facts("Processing", ago(3600), lock_held=True), 20, RUNNING),
    (Facts("Processing", ago(3600)), 20, STALLED),
    (Facts("Processing", ago(3600)), 0, STALLED),
    # Just (re)started: its detached process has not taken the lock yet.
    (Facts("Processing", ago(5)), 20, STARTING),
    (Facts("Processing", ago(19.9)), 20, STARTING),
    (Facts("Processing", ago(20)), 20, STALLED),
    (Facts("Processing", ago(5)), 0, STALLED),  # `aigen retry` uses no grace
    # A clock a little behind the writer's is still "recent"; far behind is not.
    (Facts("Processing", ago(-5)), 20, STARTING),
    (Facts("Processing", ago(-86400)), 20, STALLED),
    (Facts("Processing", None), 20, STALLED),
    (Facts("Processing", "not a time"), 20, STALLED),
    # Final ones are final, unless a process holds the lock (a retry that has not reopened it yet).
    (Facts("Completed", ago(1)), 20, FINAL),
    (Facts("Failed", ago(3600)), 20, FINAL),
    (Facts("Failed", ago(3600), lock_held=True), 20, RUNNING),
    # Cluster shape: a live worker and an active workflow.
    (Facts("Processing", ago(3600), workers_live=True, active_workflows=1), 20, RUNNING),
    (Facts("Processing", ago(3600), workers_live=True, active_workflows=0), 20, STALLED),
    (Facts("Processing", ago(3600), workers_live=True, active_workflows=None), 20, STALLED),
    # Queued where no worker is alive: nobody works on it, and a retry cannot help.
    (Facts("Processing", ago(3600), workers_live=False, active_workflows=2), 20, NO_WORKER),
    (Facts("Processing", ago(3600), workers_live=False, active_workflows=0), 20, STALLED),
])
def test_decide(facts, grace, expected):
    assert decide(facts, now=NOW, grace_s=grace) == expected


def test_the_grace_is_measured_from_now_not_the_wall_clock():
    f = Facts("Processing", ago(10))
    assert decide(f, now=NOW, grace_s=20) == STARTING
    assert decide(f, now=NOW + timedelta(seconds=10), grace_s=20) == STALLED


def test_observe_sees_the_run_lock_of_a_process(home):
    h, store = open_home(home)
    gid = seed_generation(store, h, "alice", finish=False)
    gen = store.get_generation(gid)
    cluster = resume.cluster_view(h.path, store, now=NOW)
    assert cluster.url is None and not cluster.workers_live
    assert resume.observe(h.path, gen, cluster).lock_held is False
    with run_lock(h, gid):
        facts = resume.observe(h.path, gen, cluster)
        assert facts.lock_held is True and decide(facts, now=NOW) == RUNNING
    assert resume.observe(h.path, gen, cluster).lock_held is False


def test_plan_retry_refuses_a_running_or_just_started_generation_and_plans_a_stalled_one(home):
    h, store = open_home(home)
    gid = seed_generation(store, h, "alice", images=2, videos=0, finish=False)
    with run_lock(h, gid):
        with pytest.raises(Busy, match="being processed by another aigen process"):
            plan_retry(h.path, store, gid)
    changed = datetime.fromisoformat(store.get_generation(gid)["updated_at"])
    with pytest.raises(Busy, match="started moments ago"):
        plan_retry(h.path, store, gid, now=changed + timedelta(seconds=1), grace_s=20)
    plan = plan_retry(h.path, store, gid, now=changed + timedelta(seconds=21), grace_s=20)
    assert not plan.nothing_to_do and plan.url is None
    assert [(a["kind"], a["idx"]) for a in plan.missing] == [("image", 1), ("image", 2)]


def test_plan_retry_skips_refused_assets_unless_asked_and_says_when_nothing_is_left(home):
    h, store = open_home(home)
    gid = seed_generation(store, h, "alice", images=2, videos=0, fail=(("image", 1), ("image", 2)))
    [a1, a2] = store.assets(gid)
    store.fail_asset(a1["id"], "refused: flagged", code="moderation", refused=True)
    plan = plan_retry(h.path, store, gid)
    assert [a["idx"] for a in plan.missing] == [2] and [a["idx"] for a in plan.refused] == [1]
    store.fail_asset(a2["id"], "refused: flagged", code="moderation", refused=True)
    with pytest.raises(AllRefused) as e:
        plan_retry(h.path, store, gid)
    assert [a["idx"] for a in e.value.refused] == [1, 2] and "--include-refused" in e.value.hint
    plan = plan_retry(h.path, store, gid, include_refused=True)
    assert [a["idx"] for a in plan.missing] == [1, 2] and plan.refused == []


def test_plan_retry_of_a_completed_generation_has_nothing_to_do(home):
    h, store = open_home(home)
    gid = seed_generation(store, h, "alice", images=1, videos=0)
    assert plan_retry(h.path, store, gid).nothing_to_do


def test_plan_retry_checks_the_providers_before_anything_is_written(home, monkeypatch):
    h, store = open_home(home)
    gid = seed_generation(store, h, "alice", images=1, videos=0, finish=False)
    with store.transaction() as db:
        db.conn.execute("UPDATE assets SET provider = 'openai' WHERE generation_id = ?", (gid,))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    before = store.get_generation(gid)
    from aigen.errors import AigenError

    with pytest.raises(AigenError) as e:
        plan_retry(h.path, store, gid)
    assert "OPENAI_API_KEY" in e.value.message + (e.value.hint or "")
    assert store.get_generation(gid) == before


def test_cluster_view_counts_live_workers_at_now_and_asks_for_workflows_only_where_workers_ran(
        home, pg_database, monkeypatch):
    from aigen.config import resolve_home
    from aigen.store.pg import PgStore

    monkeypatch.setenv("AIGEN_DATABASE_URL", pg_database)
    h = resolve_home(home)
    h.ensure()
    store = PgStore(pg_database)
    gid = seed_generation(store, h, "alice", images=1, videos=0, finish=False, now=NOW - timedelta(hours=1))
    gen = store.get_generation(gid)
    asked = []

    def workflows(n):
        def count(gen_id):
            asked.append(gen_id)
            return n
        return count

    # A cluster database where no worker ever ran: `generate` made the assets in its own process, so the run
    # lock says it, and DBOS is not asked.
    c = resume.cluster_view(h.path, store, now=NOW, count_workflows=workflows(1))
    assert c.url == pg_database and not c.workers_ever and not c.workers_live
    assert decide(resume.observe(h.path, gen, c), now=NOW, grace_s=20) == STALLED and asked == []

    with store.transaction() as db:
        db.conn.execute("INSERT INTO workers (executor_id, host, pid, started_at, heartbeat_at, state, providers, "
                        "jobs) VALUES ('w1', 'h', 1, ?, ?, 'alive', '', 0)",
                        (iso(NOW - timedelta(minutes=5)), iso(NOW - timedelta(seconds=10))))
    # A live worker (its heartbeat is 10 s old at NOW) and an active workflow: running.
    c = resume.cluster_view(h.path, store, now=NOW, count_workflows=workflows(1))
    assert c.workers_live and decide(resume.observe(h.path, gen, c), now=NOW, grace_s=20) == RUNNING
    assert asked == [gid]
    # No active workflow left for it (its worker died and nothing took it over): stalled, Resume enqueues it.
    c = resume.cluster_view(h.path, store, now=NOW, count_workflows=workflows(0))
    assert decide(resume.observe(h.path, gen, c), now=NOW, grace_s=20) == STALLED
    # Two minutes later the heartbeat is too old (AIGEN_WORKER_DEAD_AFTER, 60 s): queued where nobody works.
    later = NOW + timedelta(minutes=2)
    c = resume.cluster_view(h.path, store, now=later, count_workflows=workflows(1))
    assert not c.workers_live and decide(resume.observe(h.path, gen, c), now=later, grace_s=20) == NO_WORKER
    with pytest.raises(Busy, match="no worker is running"):
        plan_retry(h.path, store, gid, now=later, count_workflows=workflows(1))
