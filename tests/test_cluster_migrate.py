"""`aigen cluster migrate --from HOME`: an embedded home made by `aigen generate` copied into the cluster
(the configured store, and S3 on a real S3 server), run twice, interrupted, damaged; the target then works.

The migration runs as its own process, like a user runs it, with the cluster configuration in its
environment; the source home is checked to be byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aigen.store import Store

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
TABLES = ("users", "generations", "assets", "notifications", "events", "spent_links")


def _env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIGEN_", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO)])
    env.update(extra)
    return env


def aigen(home: Path, *args, extra: dict | None = None, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "aigen", "--home", str(home), *map(str, args)],
                          cwd=REPO, env=_env(extra or {}), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def made_home(tmp_path_factory):
    """A home with 3 generations made by `aigen generate` on `local` (images, a video and its poster),
    plus gallery-like events pointing at its assets, a used magic link and a session."""
    home = tmp_path_factory.mktemp("source") / "home"
    ids = []
    for i, (user, images, videos) in enumerate([("alice", 2, 0), ("bob", 1, 1), ("alice", 1, 0)]):
        r = aigen(home, "generate", f"prompt number {i}", "--user", user, "--images", images, "--videos", videos,
                  "--image-size", "96x64", "--video-size", "96x64", "--duration", "1", "--fps", "6",
                  "--notify-via", "console", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        ids.append(json.loads(r.stdout)["id"])
    store = Store(home / "aigen.db")
    for a in store.query("SELECT id, generation_id FROM assets ORDER BY id"):
        store.log_event("media_view", user_id="alice", generation_id=a["generation_id"], asset_id=a["id"],
                        session_id="s" * 64, ok=True)
    store.log_event("login", user_id="bob", ok=False, reason="bad code")
    with store.transaction() as db:
        db.conn.execute("INSERT INTO spent_links (token_hash, user_id, spent_at, expires_at) VALUES (?, ?, ?, ?)",
                        ("t" * 64, "alice", "2026-01-01T00:00:00.000+00:00", "2026-02-01T00:00:00.000+00:00"))
        db.conn.execute("INSERT INTO sessions (id, user_id, kind, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                        ("x" * 64, "alice", "code", "2026-01-01T00:00:00.000+00:00", "2026-02-01T00:00:00.000+00:00"))
    store.close()
    return home, ids


def fingerprint(home: Path) -> dict:
    """Every file of the home (database included) and its SHA-256: the source must never change.

    SQLite's read-only open of a WAL database may create its shared-memory index (-shm) and an
    empty -wal beside it, as any reader does; the write-ahead log must stay empty.
    """
    out = {}
    for p in sorted(home.rglob("*")):
        if p.name.endswith("-wal"):
            assert p.stat().st_size == 0, "something was written to the source's database"
        elif p.is_file() and p.suffix != ".lock" and not p.name.endswith("-shm"):
            out[p.relative_to(home).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def cluster(tmp_path, s3_env, pg_database):
    """The cluster configuration (environment: PostgreSQL + S3) and a home of its own for the command to run in."""
    return tmp_path / "cluster-home", {**s3_env, "AIGEN_DATABASE_URL": pg_database}


@pytest.fixture
def embedded_target(tmp_path, s3_env):
    """No database URL: the target store is the SQLite aigen.db of the home the command runs in (files to S3)."""
    return tmp_path / "other-home", dict(s3_env)


def open_target(cluster):
    home, env = cluster
    from aigen.config import Home
    from aigen.store import open_store

    return open_store(Home(home, "--home"), env=env)


def close(store):
    getattr(store, "close_all", store.close)()


def s3(cluster):
    from aigen.storage import from_config

    return from_config(cluster[0], cluster[1])


def migrate(cluster, source: Path, *extra_args, extra_env=None):
    home, env = cluster
    r = aigen(home, "cluster", "migrate", "--from", source, "--json", *extra_args, extra={**env, **(extra_env or {})})
    data = json.loads(r.stdout) if r.stdout.strip().startswith("{") else None
    return r, data


def source_counts(home: Path) -> dict:
    s = Store(home / "aigen.db", readonly=True)
    try:
        return {t: s.query_one(f"SELECT count(*) AS n FROM {t}")["n"] for t in TABLES}
    finally:
        s.close()


def test_migrate_twice_gives_the_same_counts_and_the_target_works(made_home, cluster):
    src, ids = made_home
    before = fingerprint(src)
    counts = source_counts(src)
    assert counts["generations"] == 3 and counts["assets"] == 5 and counts["events"] == 6

    r, first = migrate(cluster, src)
    assert r.returncode == 0, r.stdout + r.stderr
    assert first["ok"] is True
    assert {t: v["source"] for t, v in first["tables"].items()} == counts
    assert {t: v["target"] for t, v in first["tables"].items()} == counts
    assert {t: v["copied_now"] for t, v in first["tables"].items()} == counts
    # 4 images + 1 video + its poster, and the 2 gallery previews of each of the 5
    assert first["files"] == {"source": 16, "target": 16, "uploaded_now": 16,
                              "bytes_uploaded_now": first["files"]["bytes_uploaded_now"]}
    assert first["not_copied"]["sessions"]["rows"] == 1

    r, second = migrate(cluster, src)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {t: v["target"] for t, v in second["tables"].items()} == counts
    assert all(v["copied_now"] == 0 for v in second["tables"].values()), second
    assert second["files"]["target"] == 16 and second["files"]["uploaded_now"] == 0
    assert fingerprint(src) == before, "the source home was modified"

    # The target: rows with their ids and links, files in S3 that are real media.
    target = open_target(cluster)
    try:
        src_store = Store(src / "aigen.db", readonly=True)
        for t, key in (("generations", "id"), ("assets", "id"), ("events", "id"), ("notifications", "id")):
            cols = "id, generation_id" if t != "generations" else "id, user_id"
            if t == "events":
                cols = "id, generation_id, asset_id, kind"
            want = src_store.query(f"SELECT {cols} FROM {t} ORDER BY id")
            assert target.query(f"SELECT {cols} FROM {t} ORDER BY id") == want, t
        assert sorted(target.query_one("SELECT count(*) AS n FROM sessions").values()) == [0]
        storage = s3(cluster)
        from aigen.media.probe import probe_image, probe_video

        for a in target.query("SELECT * FROM assets ORDER BY id"):
            data = storage.read_bytes(a["path"])
            assert len(data) == a["bytes"] and hashlib.sha256(data).hexdigest() == a["sha256"]
            local = cluster[0].parent / f"probe-{a['id']}{Path(a['path']).suffix}"
            local.write_bytes(data)
            if a["kind"] == "image":
                info = probe_image(local)
                assert (info.width, info.height) == (96, 64)
            else:
                info = probe_video(local)
                assert (info.width, info.height) == (96, 64)
                assert storage.exists(a["poster_path"])
        if "AIGEN_DATABASE_URL" in cluster[1]:
            # A new row after the migration gets a fresh id, not one of the copied ones.
            new_id = target.log_event("after_migration")
            assert new_id > max(r["id"] for r in src_store.query("SELECT id FROM events"))
        src_store.close()
    finally:
        close(target)
    r = aigen(cluster[0], "status", "--json", extra=cluster[1])
    assert r.returncode == 0, r.stdout + r.stderr
    listed = json.loads(r.stdout)["generations"]
    assert sorted(g["id"] for g in listed) == sorted(ids)
    assert {g["status"] for g in listed} == {"Completed"}


def test_a_migration_killed_after_2_files_completes_when_run_again(made_home, cluster):
    src, _ = made_home
    counts = source_counts(src)
    r, _ = migrate(cluster, src, extra_env={"AIGEN_TEST_MIGRATE_KILL_AFTER_FILES": "2"})
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    storage = s3(cluster)
    assert len(storage.list("generated_content/")) == 2
    target = open_target(cluster)
    try:
        # The oldest generation (copied first) has 2 images: both uploaded, its rows not yet written when killed.
        assert target.query_one("SELECT count(*) AS n FROM generations")["n"] == 0
    finally:
        close(target)
    r, again = migrate(cluster, src)
    assert r.returncode == 0, r.stdout + r.stderr
    assert again["ok"] and {t: v["target"] for t, v in again["tables"].items()} == counts
    assert again["files"]["target"] == 16
    assert again["files"]["uploaded_now"] == 14, "the 2 files already there were verified, not sent again"


def test_a_damaged_file_holds_back_its_generation_and_exits_1_then_a_rerun_completes(made_home, cluster, tmp_path):
    import shutil

    src, _ = made_home
    copy = tmp_path / "damaged-home"
    shutil.copytree(src, copy)
    s = Store(copy / "aigen.db", readonly=True)
    victim = s.query_one("SELECT generation_id, path FROM assets WHERE kind = 'image' ORDER BY id DESC LIMIT 1")
    s.close()
    good = (copy / victim["path"]).read_bytes()
    (copy / victim["path"]).write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    r, data = migrate(cluster, copy)
    assert r.returncode == 1, r.stdout + r.stderr
    assert not data["ok"]
    assert any(victim["path"] in p and "does not match" in p for p in data["problems"]), data["problems"]
    assert data["tables"]["generations"] == {"source": 3, "target": 2, "copied_now": 2}
    target = open_target(cluster)
    try:
        assert target.query_one("SELECT count(*) AS n FROM generations WHERE id = ?",
                                (victim["generation_id"],))["n"] == 0
    finally:
        close(target)
    (copy / victim["path"]).write_bytes(good)
    r, data = migrate(cluster, copy)
    assert r.returncode == 0, r.stdout + r.stderr
    assert data["ok"] and data["tables"]["generations"]["copied_now"] == 1


def test_clashing_ids_stop_the_copy_before_anything_is_written(made_home, cluster):
    src, _ = made_home
    target = open_target(cluster)
    try:
        target.create_generation({"user_id": "zoe", "prompt": "already in the cluster", "image_count": 1,
                                  "video_count": 0}, [{"kind": "image", "idx": 1, "provider": "local"}])
    finally:
        close(target)
    r, data = migrate(cluster, src)
    assert r.returncode != 0 and data["error"] == "id_clash", r.stdout + r.stderr
    assert "assets row 1" in data["message"] and "empty cluster" in data["hint"]
    target = open_target(cluster)
    try:
        assert target.query_one("SELECT count(*) AS n FROM users WHERE user_id = 'alice'")["n"] == 0
    finally:
        close(target)


def test_bad_sources_are_clear_errors(tmp_path, cluster):
    r, data = migrate(cluster, tmp_path / "nowhere")
    assert r.returncode == 2 and "is not a directory" in data["message"]
    (tmp_path / "empty").mkdir()
    r, data = migrate(cluster, tmp_path / "empty")
    assert r.returncode == 2 and "not an aigen home" in data["message"]
    assert "Traceback" not in r.stderr


def test_a_home_made_by_an_older_aigen_is_read_as_it_is_not_upgraded(made_home, cluster, tmp_path):
    """Upgrading the source's schema would write it: a home whose database lacks newer migrations is
    copied as it stands (the target's defaults fill what it lacks)."""
    import shutil
    import sqlite3

    src, _ = made_home
    old = tmp_path / "old-home"
    shutil.copytree(src, old)
    c = sqlite3.connect(old / "aigen.db")
    c.execute("DROP TABLE notify_daemons")
    c.execute("DELETE FROM _sqlite_migrations WHERE name = '0013_notify_daemons'")
    c.commit()
    c.close()
    with pytest.raises(Exception, match="older aigen"):
        Store(old / "aigen.db", readonly=True)
    before = fingerprint(old)
    r, data = migrate(cluster, old)
    assert r.returncode == 0, r.stdout + r.stderr
    assert data["ok"] and data["tables"]["generations"]["target"] == 3
    assert fingerprint(old) == before


def test_migrate_into_another_embedded_home_twice(made_home, embedded_target):
    """Without AIGEN_DATABASE_URL the target is the home's own SQLite store: the same copy, the same counts."""
    src, _ = made_home
    counts = source_counts(src)
    for run in (1, 2):
        r, data = migrate(embedded_target, src)
        assert r.returncode == 0, r.stdout + r.stderr
        assert {t: v["target"] for t, v in data["tables"].items()} == counts
        assert data["files"]["uploaded_now"] == (16 if run == 1 else 0)
    assert (embedded_target[0] / "aigen.db").is_file()


def test_a_home_in_use_is_refused(made_home, cluster, tmp_path):
    import fcntl
    import shutil

    src, _ = made_home
    busy = tmp_path / "busy-home"
    shutil.copytree(src, busy)
    (busy / "locks").mkdir(exist_ok=True)
    with open(busy / "locks" / "notify-daemon.4242.lock", "w") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # a notify daemon running on that home
        r, data = migrate(cluster, busy)
    assert r.returncode == 2 and "is in use" in data["message"], r.stdout + r.stderr
    target = open_target(cluster)
    try:
        assert target.query_one("SELECT count(*) AS n FROM generations")["n"] == 0
    finally:
        close(target)
