import sqlite3
import threading

import pytest
import sqlite_utils

from aigen.errors import BadInput, NotFound
from aigen.store import Store
from aigen.store.migrations import migrations


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


def test_create_generation_writes_rows_in_one_go(tmp_path):
    store = Store(tmp_path / "aigen.db")
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


def test_paths_listed_in_index_order_and_final_status(tmp_path):
    store = Store(tmp_path / "aigen.db")
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


def test_generation_id_prefixes(tmp_path):
    store = Store(tmp_path / "aigen.db")
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


def test_threads_write_concurrently_without_locking_errors(tmp_path):
    store = Store(tmp_path / "aigen.db")
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
    assert store.db["events"].count == 800
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


def test_foreign_key_protects_assets(tmp_path):
    store = Store(tmp_path / "aigen.db")
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as db:
            db.conn.execute(
                "INSERT INTO assets (generation_id, kind, idx, status) VALUES ('nope', 'image', 1, 'queued')"
            )
