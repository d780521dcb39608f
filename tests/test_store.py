import sqlite3
import threading

import pytest
import sqlite_utils

from aigen.errors import BadInput, NotFound
from aigen.store import Store
from aigen.store.migrations import migrations

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    """The same store tests on both backends: aigen.db in a folder, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        s = Store(tmp_path / "aigen.db")
        yield s
        s.close()
        return
    from aigen.store.pg import PgStore

    s = PgStore(request.getfixturevalue("pg_database"))
    yield s
    s.close_all()


def make_gen(store, user="alice", images=2, videos=1, **extra):
    assets = [{"kind": "image", "idx": i, "provider": "local"} for i in range(1, images + 1)]
    assets += [{"kind": "video", "idx": i, "provider": "local"} for i in range(1, videos + 1)]
    row = {"user_id": user, "prompt": "a red fox", "image_count": images, "video_count": videos, **extra}
    return store.create_generation(row, assets)


def test_blank_database_gets_every_table_index_and_wal(tmp_path):
    store = Store(tmp_path / "aigen.db")
    db = store.db
    assert {"users", "generations", "assets", "events"} <= set(db.table_names())
    assert store.applied_migrations()[:2] == ["0001_initial", "0002_run_tracking"]
    assert store.applied_migrations() == [m.name for m in migrations._migrations]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 10000
    cols = db["generations"].columns_dict
    for c in ("user_id", "prompt", "video_paths", "image_paths", "status", "generated_at", "log_path"):
        assert c in cols
    index_cols = {tuple(i.columns) for i in db["generations"].indexes}
    assert ("user_id", "created_at") in index_cols
    assert ("generation_id", "kind", "idx") in {tuple(i.columns) for i in db["assets"].indexes}
    # Opening again applies nothing new.
    assert Store(tmp_path / "aigen.db").migrate() == []


def test_older_schema_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "aigen.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="0002_run_tracking")
    old["generations"].insert({"id": "abcdef123456", "user_id": "bob", "prompt": "old one",
                               "status": "Completed", "created_at": "2026-01-01T00:00:00.000+00:00",
                               "image_paths": '["generated_content/bob/abcdef123456/image_1.png"]'})
    assert "log_path" not in old["generations"].columns_dict
    old.close()

    store = Store(path)
    assert store.applied_migrations() == [m.name for m in migrations._migrations]
    assert "log_path" in store.db["generations"].columns_dict
    assert "progress" in store.db["assets"].columns_dict
    gen = store.get_generation("abcdef123456")
    assert gen["prompt"] == "old one"
    assert gen["image_paths"] == ["generated_content/bob/abcdef123456/image_1.png"]


def test_create_generation_writes_rows_in_one_go(store):
    gid = make_gen(store, images=3, videos=2, options={"duration": 4})
    gen = store.get_generation(gid)
    assert gen["status"] == "Processing"
    assert gen["video_paths"] == [] and gen["image_paths"] == []
    assert gen["options"] == {"duration": 4}
    assets = store.assets(gid)
    assert [(a["kind"], a["idx"], a["status"]) for a in assets] == [
        ("image", 1, "queued"), ("image", 2, "queued"), ("image", 3, "queued"),
        ("video", 1, "queued"), ("video", 2, "queued"),
    ]
    assert store.get_user("alice")["created_at"]


def test_paths_listed_in_index_order_and_final_status(store):
    gid = make_gen(store, images=2, videos=1)
    a = {(x["kind"], x["idx"]): x["id"] for x in store.assets(gid)}
    store.complete_asset(a[("image", 2)], {"path": "p/image_2.png", "bytes": 1, "sha256": "x"})
    assert store.finalize_generation(gid) == "Processing"
    store.complete_asset(a[("image", 1)], {"path": "p/image_1.png", "bytes": 1, "sha256": "y"})
    store.fail_asset(a[("video", 1)], "refused by runway: flagged", code="SAFETY.INPUT.TEXT")
    assert store.finalize_generation(gid) == "Failed"
    gen = store.get_generation(gid)
    assert gen["image_paths"] == ["p/image_1.png", "p/image_2.png"]
    assert gen["video_paths"] == []
    assert gen["generated_at"]
    assert "video 1: refused by runway: flagged" in gen["error"]
    assert "1 of 3 assets failed" in gen["error"]

    # A retry reopens only what is missing.
    todo = store.reopen_generation(gid)
    assert [(t["kind"], t["idx"]) for t in todo] == [("video", 1)]
    assert store.get_generation(gid)["status"] == "Processing"
    store.complete_asset(a[("video", 1)], {"path": "p/video_1.mp4", "bytes": 1, "sha256": "z"})
    assert store.finalize_generation(gid) == "Completed"
    assert store.get_generation(gid)["error"] is None


def test_generation_id_prefixes(store):
    store.create_generation({"id": "aaaa11112222", "user_id": "u", "prompt": "p"}, [])
    store.create_generation({"id": "aaaa33334444", "user_id": "v", "prompt": "p"}, [])
    assert store.resolve_generation_id("aaaa1111") == "aaaa11112222"
    assert store.resolve_generation_id("AAAA11112222") == "aaaa11112222"
    with pytest.raises(BadInput, match="ambiguous"):
        store.resolve_generation_id("aaaa")
    with pytest.raises(BadInput, match="too short"):
        store.resolve_generation_id("aa")
    with pytest.raises(NotFound):
        store.resolve_generation_id("bbbb0000")
    with pytest.raises(NotFound):
        store.resolve_generation_id("../../etc")
    with pytest.raises(NotFound):  # owned by someone else
        store.resolve_generation_id("aaaa3333", user_id="u")


def test_threads_write_concurrently_without_locking_errors(store):
    errors = []

    def worker(n):
        try:
            for i in range(100):
                store.log_event("gallery_view", user_id=f"user{n}", ok=True, detail=str(i))
        except Exception as e:  # pragma: no cover - the assertion reports it
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.query_one("SELECT count(*) AS n FROM events")["n"] == 800
    assert len(store.list_events(user_id="user3", limit=1000)) == 100


def test_status_queries_use_indexes(tmp_path):
    store = Store(tmp_path / "aigen.db")
    plan = store.db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM generations WHERE user_id = ? ORDER BY created_at DESC LIMIT 20",
        ("alice",),
    ).fetchall()
    text = " ".join(str(tuple(r)) for r in plan)
    assert "USING INDEX" in text and "TEMP B-TREE" not in text
    plan = store.db.execute(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM assets WHERE generation_id = ? AND kind = 'image'", ("x",)
    ).fetchall()
    assert "USING COVERING INDEX" in " ".join(str(tuple(r)) for r in plan) or "USING INDEX" in str(plan)


def test_foreign_key_protects_assets(store):
    if store.backend == "sqlite":
        expected = sqlite3.IntegrityError
    else:
        import psycopg

        expected = psycopg.IntegrityError
    with pytest.raises(expected):
        with store.transaction() as db:
            db.conn.execute(
                "INSERT INTO assets (generation_id, kind, idx, status) VALUES ('nope', 'image', 1, 'queued')"
            )


# -- the same behaviour on both backends --------------------------------------------------------------------------

def test_backend_is_named(store):
    assert store.backend in BACKENDS


def test_events_users_and_listing(store):
    first = store.log_event("login", user_id="alice", ok=True, address="127.0.0.1")
    second = store.log_event("login", user_id="alice", ok=False, reason="bad code")
    assert isinstance(first, int) and second > first
    rows = store.list_events(user_id="alice")
    assert [r["id"] for r in rows] == [second, first]
    assert rows[0]["ok"] == 0 and rows[1]["ok"] == 1 and rows[0]["reason"] == "bad code"
    store.ensure_user("bob", email="bob@example.com")
    store.ensure_user("bob")  # a second time changes nothing
    assert store.get_user("bob")["email"] == "bob@example.com"
    g1 = make_gen(store, user="bob", images=1, videos=0)
    g2 = make_gen(store, user="carol", images=1, videos=1)
    a = store.assets(g1)[0]
    store.start_asset(a["id"])
    store.save_job_id(a["id"], "job-42")
    store.set_progress(a["id"], 0.5)
    got = store.get_asset(a["id"])
    assert (got["status"], got["attempts"], got["provider_job_id"], got["progress"]) == ("running", 1, "job-42", 0.5)
    store.complete_asset(a["id"], {"path": "p/image_1.png", "bytes": 12, "sha256": "s", "width": 64, "height": 64,
                                   "cost": 0.04, "note": "asked 128x128, got 64x64"})
    assert store.finalize_generation(g1) == "Completed"
    listed = store.list_generations()
    assert [g["id"] for g in listed] == [g2, g1] or {g["id"] for g in listed} == {g1, g2}
    bob = store.list_generations(user_id="bob")[0]
    assert (bob["images_done"], bob["videos_done"], bob["assets_failed"]) == (1, 0, 0)
    assert store.count_generations() == {"Completed": 1, "Processing": 1}
    assert store.count_generations(user_id="carol") == {"Processing": 1}
    store.set_generation_fields(g2, log_path="/tmp/x.log", worker_pid=123)
    assert store.get_generation(g2)["worker_pid"] == 123
    # Rows read like sqlite3.Row: by name, by position, and as a dict.
    row = store.db.conn.execute("SELECT id, user_id FROM generations WHERE id = ?", (g1,)).fetchone()
    assert row["id"] == row[0] == g1 and dict(row) == {"id": g1, "user_id": "bob"}
    # A literal % and named parameters pass through the SQL of both.
    assert store.query_one("SELECT '100%' AS p, count(*) AS n FROM generations WHERE user_id = :u",
                           {"u": "bob"}) == {"p": "100%", "n": 1}


def test_transaction_rolls_back_and_nests(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as db:
            db.conn.execute("INSERT INTO users (user_id, created_at) VALUES (?, ?)", ("x", "t"))
            raise RuntimeError("stop")
    assert store.get_user("x") is None
    with store.transaction() as db:
        db.conn.execute("INSERT INTO users (user_id, created_at) VALUES (?, ?)", ("y", "t"))
        assert db.conn.in_transaction
        with pytest.raises(RuntimeError):
            with store.transaction() as inner:  # a savepoint: only the inner part is undone
                inner.conn.execute("INSERT INTO users (user_id, created_at) VALUES (?, ?)", ("z", "t"))
                raise RuntimeError("inner")
    assert not store.db.conn.in_transaction
    assert store.get_user("y") is not None and store.get_user("z") is None


def test_notify_queue_plans_claims_and_records(store):
    from datetime import timedelta

    from aigen.notify import queue
    from aigen.store.core import utcnow

    gid = make_gen(store, images=1, videos=0, notify_via='["console", "email"]', notify_email="a@example.com")
    a = store.assets(gid)[0]
    store.complete_asset(a["id"], {"path": "p/image_1.png", "bytes": 1})
    store.finalize_generation(gid)
    now = utcnow() + timedelta(seconds=5)
    assert queue.next_due(store, now) is not None
    assert queue.plan(store, now) == 1
    assert queue.plan(store, now) == 0
    claim = queue.claim(store, now, "host:1:x")
    assert claim is not None and sorted(r["channel"] for r in claim.rows) == ["console", "email"]
    assert queue.claim(store, now, "host:2:y") is None  # held by the first claim's lease
    for r in claim.rows:
        assert queue.record(store, r, queue.Outcome("sent", via=r["channel"]), now)
    assert store.get_generation(gid)["notify_status"] == "sent"
    assert queue.pending_count(store) == 0
