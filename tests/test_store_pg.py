"""The store on PostgreSQL (cluster mode): what only that backend has to show.

The store tests shared with SQLite are in tests/test_store.py (its `store`
fixture runs each on both). Run with AIGEN_REQUIRE_CLUSTER=1: then a
PostgreSQL that cannot start is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from aigen.errors import AigenError, BadInput
from aigen.store import Store, open_store

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def pg(pg_database):
    from aigen.store.pg import PgStore

    s = PgStore(pg_database)
    yield s
    s.close_all()


def _columns_sqlite(store: Store) -> dict[str, list[str]]:
    """Every table's columns, less the FTS5 search index of prompts (generations_fts, its shadow tables, its
    documents and their per-user count of keys out of order):
    PostgreSQL's form of that index is a GIN index on generations (migration 0014_prompt_search), no table."""
    db = store.db
    return {t: [c.name for c in db[t].columns] for t in db.table_names()
            if t != "_sqlite_migrations" and not t.startswith("generations_fts")}


def test_both_migration_lists_have_the_same_names_and_make_the_same_columns(tmp_path, pg):
    from aigen.store.migrations import migrations
    from aigen.store.pg_schema import PG_MIGRATIONS

    sqlite_names = [m.name for m in migrations._migrations]
    assert [name for name, _ in PG_MIGRATIONS] == sqlite_names
    assert pg.applied_migrations() == sqlite_names
    lite = Store(tmp_path / "aigen.db")
    pg_tables = {t: cols for t, cols in pg.tables().items() if t != "_aigen_migrations"}
    lite_tables = _columns_sqlite(lite)
    assert set(pg_tables) == set(lite_tables)
    for table, cols in lite_tables.items():
        assert sorted(pg_tables[table]) == sorted(cols), table
    # The same indexes, by name (a query may name one).
    pg_idx = {r["indexname"] for r in pg.query("SELECT indexname FROM pg_indexes WHERE schemaname = "
                                               "current_schema() AND indexname LIKE 'idx_%'")}
    lite_idx = {r["name"] for r in lite.query("SELECT name FROM sqlite_master WHERE type = 'index' "
                                              "AND name LIKE 'idx_%' AND name NOT LIKE 'idx__sqlite%'")}
    assert pg_idx == lite_idx
    # The prompt search has its index on both: FTS5 on SQLite, GIN on aigen_search_doc (the prompt's
    # to_tsvector and the user's tokens) on PostgreSQL; the index of 0014 is gone.
    assert lite.query_one("SELECT count(*) AS n FROM sqlite_master WHERE name = 'generations_fts'")["n"] == 1
    gin = pg.query_one("SELECT indexdef FROM pg_indexes WHERE indexname = 'generations_search'")
    assert gin and "gin" in gin["indexdef"].lower() and "aigen_search_doc" in gin["indexdef"]
    assert pg.query_one("SELECT indexdef FROM pg_indexes WHERE indexname = 'generations_prompt_fts'") is None
    # Reopening applies nothing.
    from aigen.store.pg import PgStore

    again = PgStore(pg.url)
    assert again.migrate() == []
    again.close_all()


def test_threads_complete_assets_of_one_generation_at_once_and_lose_no_path(pg):
    """complete_asset reads the done paths then writes the list: writers must not interleave (as on SQLite)."""
    assets = [{"kind": "image", "idx": i, "provider": "local"} for i in range(1, 13)]
    gid = pg.create_generation({"user_id": "alice", "prompt": "p"}, assets)
    ids = [a["id"] for a in pg.assets(gid)]
    errors = []
    barrier = threading.Barrier(len(ids))

    def worker(asset_id, i):
        try:
            barrier.wait(timeout=30)
            pg.start_asset(asset_id)
            pg.complete_asset(asset_id, {"path": f"p/image_{i}.png", "bytes": i})
            pg.log_event("asset_done", asset_id=asset_id, generation_id=gid)
        except Exception as e:  # pragma: no cover - the assertion reports it
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(a, i + 1)) for i, a in enumerate(ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert pg.get_generation(gid)["image_paths"] == [f"p/image_{i}.png" for i in range(1, 13)]
    assert pg.finalize_generation(gid) == "Completed"
    assert pg.query_one("SELECT count(*) AS n FROM events WHERE generation_id = ?", (gid,))["n"] == 12


_OPENER = """
import sys
from aigen.store.pg import PgStore
s = PgStore(sys.argv[1])
print(",".join(s.applied_migrations()))
s.close_all()
"""


def test_two_processes_open_a_fresh_database_at_once(pg_database):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, pg_database], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    from aigen.store.migrations import migrations

    names = ",".join(m.name for m in migrations._migrations)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == names
    from aigen.store.pg import PgStore

    s = PgStore(pg_database)
    rows = s.query("SELECT name, count(*) AS n FROM _aigen_migrations GROUP BY name")
    s.close_all()
    assert sorted(r["name"] for r in rows) == sorted(names.split(",")) and all(r["n"] == 1 for r in rows)


def test_database_url_sources_and_refusals(tmp_path):
    from aigen.config import database_url

    assert database_url({}, tmp_path) is None
    assert database_url({"AIGEN_DATABASE_URL": "postgres://u@h/db"}, tmp_path) == "postgres://u@h/db"
    (tmp_path / "config.toml").write_text('[cluster]\ndatabase_url = "postgresql://u:secret@h:5432/aigen"\n')
    assert database_url({}, tmp_path) == "postgresql://u:secret@h:5432/aigen"
    assert database_url({"AIGEN_DATABASE_URL": "postgresql://other@h/x"}, tmp_path) == "postgresql://other@h/x"
    for bad in ("mysql://u:secret@h/db", "sqlite:///tmp/x.db", "h/db", "postgresql://u:secret@h:notaport/db",
                "postgresql://u:secret@h"):
        with pytest.raises(BadInput) as e:
            database_url({"AIGEN_DATABASE_URL": bad}, tmp_path)
        assert "secret" not in e.value.message
    assert isinstance(open_store(tmp_path / "plain", env={}), Store)  # no URL: aigen.db in the home


def _run_cli(args, env, home):
    full = {**os.environ, **env, "AIGEN_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "aigen", *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=180)


def test_generate_on_a_cluster_store_without_workers_says_it_makes_the_assets_itself(pg_database, tmp_path):
    env = {"AIGEN_DATABASE_URL": pg_database}
    r = _run_cli(["generate", "a fox", "--user", "alice", "--images", "1", "--videos", "0", "--image-size",
                  "64x64"], env, tmp_path / "home")
    assert r.returncode == 0, r.stderr
    said = " ".join((r.stdout + r.stderr).split())
    assert "No live worker on the cluster" in said and "making the assets in this process" in said
    assert "Traceback" not in r.stdout + r.stderr


def test_generate_then_status_on_postgresql(pg_database, tmp_path):
    home = tmp_path / "home"
    env = {"AIGEN_DATABASE_URL": pg_database}
    r = _run_cli(["generate", "a fox", "--user", "alice", "--images", "2", "--videos", "1", "--image-size",
                  "64x64", "--video-size", "64x64", "--duration", "1", "--fps", "8", "--json"], env, home)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    gid = data["id"]
    assert data["status"] == "Completed"
    assert not (home / "aigen.db").exists()  # the store is on the server
    r = _run_cli(["status"], env, home)
    assert r.returncode == 0, r.stderr
    assert gid in r.stdout and "a fox" in r.stdout
    r = _run_cli(["status", gid, "--json"], env, home)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["id"] == gid and shown["status"] == "Completed" and shown["user_id"] == "alice"
    assert len(shown["images"]) == 2 and len(shown["videos"]) == 1
    from aigen.store.pg import PgStore

    s = PgStore(pg_database)
    assert [a["status"] for a in s.assets(gid)] == ["done"] * 3
    s.close_all()
    # A fresh home with no aigen.db reads the same store (a command that only reads).
    r = _run_cli(["status", gid, "--json"], env, tmp_path / "other-home")
    assert r.returncode == 0, r.stderr and json.loads(r.stdout)["id"] == gid
    r = _run_cli(["doctor"], env, home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PostgreSQL" in r.stdout and "quick_check" in r.stdout and "Skipped" in r.stdout


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["generate", "p", "--user", "a",
                                      "--images", "1", "--videos", "0", "--image-size", "64x64"]])
def test_unreachable_database_is_one_clear_line_with_the_password_hidden(tmp_path, command):
    url = f"postgresql://aigen:s3cretpw@127.0.0.1:{_closed_port()}/aigen?connect_timeout=3"
    r = _run_cli(command, {"AIGEN_DATABASE_URL": url}, tmp_path / "home")
    out = r.stdout + r.stderr
    assert r.returncode in (1, 2), out
    assert "Traceback" not in out
    assert "s3cretpw" not in out
    assert "PostgreSQL" in out and "127.0.0.1" in out
    if "--json" in command:
        assert json.loads(r.stdout)["error"] == "database_unavailable"


def test_missing_database_and_bad_url_are_bad_input(tmp_path, postgres_server):
    base = postgres_server.url.rpartition("/")[0]
    r = _run_cli(["status"], {"AIGEN_DATABASE_URL": base + "/no_such_db"}, tmp_path / "home")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "no_such_db" in r.stdout + r.stderr
    r = _run_cli(["status"], {"AIGEN_DATABASE_URL": "mysql://u:hunter22@h/db"}, tmp_path / "home")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "hunter22" not in r.stdout + r.stderr and "postgresql://" in r.stdout + r.stderr


def test_redact_url_hides_every_password():
    from aigen.errors import describe_pg_error, redact_url

    assert redact_url("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("postgresql://u@h/db?password=pw&sslmode=require") == \
        "postgresql://u@h/db?password=***&sslmode=require"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    import psycopg

    err = describe_pg_error(psycopg.OperationalError('password authentication failed for user "u" (pw=pw42)'),
                            "postgresql://u:pw42@h/db")
    assert err is not None and err.exit_code == 2 and "pw42" not in err.message


def test_a_connection_lost_mid_run_is_an_aigen_error_and_the_next_call_reconnects(pg, postgres_server):
    import psycopg

    gid = pg.create_generation({"user_id": "alice", "prompt": "p"}, [])
    pid = pg.query_one("SELECT pg_backend_pid() AS p")["p"]
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(AigenError) as e:
        pg.get_generation(gid)
    assert e.value.code == "database_unavailable" and "PostgreSQL" in e.value.message
    assert pg.get_generation(gid)["id"] == gid  # a new connection on the next call
    # In a write transaction too: rolled back, one error.
    pid = pg.query_one("SELECT pg_backend_pid() AS p")["p"]
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(AigenError):
        pg.set_generation_fields(gid, error="x")
    pg.set_generation_fields(gid, error="y")
    assert pg.get_generation(gid)["error"] == "y"


def _backend_pid(store) -> int:
    return store.query_one("SELECT pg_backend_pid() AS p")["p"]


def _in_thread(fn):
    import threading

    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(30)
    return out[0]


def test_a_released_connection_is_taken_by_the_next_thread_not_closed(pg, postgres_server):
    """A cluster worker's job gives its thread's connection back (release); the next job, on another of
    DBOS's threads, takes it instead of connecting again. Only an idle, open connection is kept, at most
    IDLE_MAX of them, and close_all closes those too."""
    import psycopg

    first = _in_thread(lambda: (_backend_pid(pg), pg.release())[0])
    assert _in_thread(lambda: (_backend_pid(pg), pg.release())[0]) == first  # the same session, reused

    # A connection left inside a transaction is closed, not handed on.
    def leave_a_transaction_open():
        pid = _backend_pid(pg)
        pg.db.conn.execute("BEGIN")
        pg.release()
        return pid

    assert _in_thread(leave_a_transaction_open) == first
    assert _in_thread(lambda: (_backend_pid(pg), pg.release())[0]) != first

    # A connection the server ended while idle is not handed on either: the taker connects anew.
    dead = _in_thread(lambda: (_backend_pid(pg), pg.release())[0])
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (dead,))
        import time

        deadline = time.monotonic() + 10
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (dead,)).fetchone()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    gid = _in_thread(lambda: pg.create_generation({"user_id": "alice", "prompt": "p"}, []))
    assert pg.get_generation(gid)["id"] == gid

    # At most IDLE_MAX kept: more threads releasing at once close the rest.
    import threading

    n = pg.IDLE_MAX + 3
    barrier = threading.Barrier(n)

    def hold_then_release():
        pid = _backend_pid(pg)
        barrier.wait(30)
        pg.release()
        return pid

    pids = set()
    threads = [threading.Thread(target=lambda: pids.add(hold_then_release())) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(pids) == n and len(pg._idle) == pg.IDLE_MAX
    kept = {db.conn.raw.info.backend_pid for db in pg._idle}
    pg.close_all()
    assert pg._idle == []
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        alive = {r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)",
                                             (list(kept),)).fetchall()}
        deadline = time.monotonic() + 10
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = {r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)",
                                                 (list(kept),)).fetchall()}
    assert not alive


def test_help_imports_no_psycopg_and_status_on_sqlite_neither(tmp_path):
    code = ("import sys, runpy; sys.argv = ['aigen'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('aigen', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('PSYCOPG' if 'psycopg' in sys.modules else 'CLEAN', file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k != "AIGEN_DATABASE_URL"}
    for args in (["--help"], ["status"]):
        r = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                           env={**env, "AIGEN_HOME": str(tmp_path / "h"), "PYTHONPATH": str(REPO)}, timeout=60)
        assert r.stderr.strip().endswith("CLEAN"), (args, r.stderr)


def test_the_server_gone_mid_run_ends_generate_with_one_clear_line(home, tmp_path):
    """A PostgreSQL of its own for this test, stopped while `aigen generate` works."""
    import time

    import psycopg
    from fakes.cluster_services import ServiceUnavailable, require_cluster, start_postgres

    try:
        server = start_postgres()
    except ServiceUnavailable as e:  # pragma: no cover - the session server started, so this one should too
        if require_cluster():
            raise
        pytest.skip(str(e))
    try:
        with psycopg.connect(server.url, autocommit=True) as c:
            c.execute("CREATE DATABASE gone")
        url = server.url.rpartition("/")[0] + "/gone"
        env = {**os.environ, "AIGEN_DATABASE_URL": url, "AIGEN_TEST_DELAY": "1.0",
               "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
        proc = subprocess.Popen([sys.executable, "-m", "aigen", "generate", "p", "--user", "alice", "--images", "4",
                                 "--videos", "0", "--image-provider", "slow", "--image-size", "64x64"],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        started = False
        while time.monotonic() < deadline and not started:
            try:
                with psycopg.connect(url, autocommit=True) as c:
                    started = bool(c.execute("SELECT 1 FROM assets WHERE status = 'running'").fetchone())
            except psycopg.Error:
                pass
            if not started:
                time.sleep(0.05)
        assert started, proc.communicate(timeout=5)
        server.stop()
        out, err = proc.communicate(timeout=120)
    finally:
        server.stop()
    text = out + err
    assert proc.returncode in (1, 2), text
    assert "Traceback" not in text, text
    assert "PostgreSQL" in text


def test_a_url_libpq_cannot_read_and_a_url_timeout_are_honoured(tmp_path):
    r = _run_cli(["status"], {"AIGEN_DATABASE_URL": "postgresql://u:pw9@127.0.0.1/db?nosuchoption=1"},
                 tmp_path / "home")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "pw9" not in r.stdout + r.stderr and "nosuchoption" in r.stdout + r.stderr
    # A server that accepts the connection and never answers: the URL's connect_timeout=1 is the one used
    # (not the default 10 s), and the wait ends in one line.
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        r = _run_cli(["status"], {"AIGEN_DATABASE_URL": f"postgresql://u@127.0.0.1:{port}/db?connect_timeout=1"},
                     tmp_path / "home")
        took = time.monotonic() - t0
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "timeout" in (r.stdout + r.stderr).lower()
    assert took < 8
