"""Prompt search (FTS5 on SQLite, to_tsvector/GIN on PostgreSQL) and deleting a generation, on both stores and
both file stores (the home, S3), and `aigen delete`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from fakes.web import seed_generation

from aigen.config import resolve_home
from aigen.store import Store
from aigen.store.search import Filters, fts5_query, words_of
from aigen.web import views

BACKENDS = ["sqlite", "postgresql"]
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(tmp_path / "aigen.db")
        yield s
        s.close()
        return
    from aigen.store.pg import PgStore

    s = PgStore(request.getfixturevalue("pg_database"))
    yield s
    s.close_all()


def gen(store, prompt, user="alice", *, minutes=0, status=None, image_provider="local", video_provider="local"):
    gid = store.create_generation(
        {"user_id": user, "prompt": prompt, "image_count": 1, "video_count": 1, "image_provider": image_provider,
         "video_provider": video_provider},
        [{"kind": "image", "idx": 1, "provider": image_provider}, {"kind": "video", "idx": 1, "provider": video_provider}],
        now=T0 + timedelta(minutes=minutes))
    if status:
        store.set_generation_fields(gid, status=status)
    return gid


def find(store, user="alice", page=1, size=20, **q):
    f = Filters.from_query(lambda k: q.get(k))
    pg = views.load_page(store, user, page, size, filters=f)
    return [g["prompt"] for g in pg.generations], pg


PROMPTS = ["a red fox at dawn", "blue ocean waves at night", "The FOX and the hound", "mountain lake under a red sky",
           "Café crème on a table", "red-tailed hawk", "fox_trot dance"]


@pytest.fixture
def filled(store):
    for i, p in enumerate(PROMPTS):
        gen(store, p, minutes=i, status="Failed" if "ocean" in p else None,
            image_provider="openai" if "hawk" in p else "local")
    gen(store, "bob's red fox", user="bob", minutes=99)
    return store


def test_words_are_taken_from_any_input_and_never_read_as_fts_syntax():
    assert words_of('"fox" AND NEAR(red*, 2) -dawn ^x {y}: z_w') == ["fox", "and", "near", "red", "2", "dawn", "x",
                                                                     "y", "z", "w"]
    assert words_of('" * ( ) : ^ - + \\ \' % _') == []
    assert words_of("FOX fox Fox") == ["fox"]
    assert len(words_of(" ".join(f"w{i}" for i in range(100)))) == 16
    assert fts5_query(["fox", "red"]) == '"fox" AND "red"'


def test_search_finds_by_word_any_case_all_words_and_only_the_users_own(filled):
    assert find(filled, q="fox")[0] == ["fox_trot dance", "The FOX and the hound", "a red fox at dawn"]
    assert find(filled, q="Fox RED")[0] == ["a red fox at dawn"]
    assert find(filled, q="red")[0] == ["red-tailed hawk", "mountain lake under a red sky", "a red fox at dawn"]
    assert find(filled, q="tailed")[0] == ["red-tailed hawk"]
    assert find(filled, q="trot")[0] == ["fox_trot dance"]  # the underscore separates words
    assert find(filled, q="zebra")[0] == []
    assert find(filled, user="bob", q="fox")[0] == ["bob's red fox"]
    assert find(filled, q="crème")[0] == ["Café crème on a table"]


def test_search_filters_order_and_pages(filled):
    assert find(filled, status="Failed")[0] == ["blue ocean waves at night"]
    assert find(filled, provider="openai")[0] == ["red-tailed hawk"]
    assert find(filled, provider="local", q="hawk")[0] == ["red-tailed hawk"]  # its videos were local
    assert find(filled, q="red", sort="oldest")[0] == ["a red fox at dawn", "mountain lake under a red sky",
                                                      "red-tailed hawk"]
    names, pg = find(filled, size=3, q="a")  # "a" is a word of 4 prompts
    assert (pg.matched, pg.pages, pg.total) == (3, 1, 7)
    assert sorted(names) == ["Café crème on a table", "a red fox at dawn", "mountain lake under a red sky"]
    names, pg = find(filled, size=2, page=2, sort="oldest")
    assert names == [PROMPTS[2], PROMPTS[3]] and pg.pages == 4 and pg.matched == 7
    assert pg.url(3) == "/?sort=oldest&page=3" and pg.url(1) == "/?sort=oldest"
    names, pg = find(filled, size=2, page=99, q="red")
    assert pg.page == 2 and names == ["a red fox at dawn"]
    assert pg.url(1) == "/?q=red"
    # Unknown values are dropped, not errors.
    names, pg = find(filled, status="Bogus", provider="../x", sort="sideways")
    assert len(names) == 7 and not pg.filters.active


@pytest.mark.parametrize("q", ['"', '*', 'NEAR(', 'fox*', '"fox', 'AND', 'OR', 'NOT fox', '-fox', 'fox:', '^fox',
                               '(', ')', "'", '%', '_', '\\', 'NEAR(fox red, 2)', '{fox}', 'prompt:fox', 'gen_id:x',
                               'x' * 5000, '🦊', '\u202e', '\x00', 'a' * 300 + ' fox'])
def test_hostile_queries_are_words_never_errors(filled, q):
    names, _ = find(filled, q=q)
    words = words_of(q)
    if not words:
        assert len(names) == 7  # nothing to search for: everything
    for p in names:
        assert all(w in p.lower().replace("-", " ").replace("_", " ").split() or w in p.lower() for w in words)
    if q in ('fox*', '"fox', '^fox', '{fox}', 'fox:', '-fox'):
        assert names == ["fox_trot dance", "The FOX and the hound", "a red fox at dawn"]


def test_deleting_a_generation_takes_it_out_of_the_search(filled):
    gid = filled.query_one("SELECT id FROM generations WHERE prompt = 'a red fox at dawn'")["id"]
    with filled.transaction() as db:
        db.conn.execute("DELETE FROM assets WHERE generation_id = ?", (gid,))
        db.conn.execute("DELETE FROM generations WHERE id = ?", (gid,))
    assert find(filled, q="dawn")[0] == []
    assert find(filled, q="fox")[0] == ["fox_trot dance", "The FOX and the hound"]
    if filled.backend == "sqlite":
        assert filled.query_one("SELECT count(*) AS n FROM generations_fts WHERE gen_id = ?", (gid,))["n"] == 0


def test_the_fts_migration_backfills_existing_generations_and_keeps_in_sync(tmp_path):
    s = Store(tmp_path / "aigen.db")
    old = gen(s, "an old prompt about a lighthouse")
    # As a database made before 0014: no FTS table, no triggers, the migration not recorded.
    with s.transaction() as db:
        for t in ("generations_fts_insert", "generations_fts_delete", "generations_fts_update"):
            db.conn.execute(f"DROP TRIGGER {t}")
        db.conn.execute("DROP TABLE generations_fts")
        db.conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0014_prompt_search'")
    s.close()
    s = Store(tmp_path / "aigen.db")  # opening applies it
    assert "0014_prompt_search" in s.applied_migrations()
    assert find(s, q="lighthouse")[0] == ["an old prompt about a lighthouse"]
    new = gen(s, "a new prompt about a lighthouse", minutes=5)
    assert find(s, q="lighthouse new")[0] == ["a new prompt about a lighthouse"]
    s.set_generation_fields(new, prompt="a changed prompt about a windmill")
    assert find(s, q="windmill")[0] == ["a changed prompt about a windmill"]
    assert find(s, q="lighthouse")[0] == ["an old prompt about a lighthouse"]
    assert s.query_one("SELECT count(*) AS n FROM generations_fts")["n"] == 2
    assert old


# -- deleting -------------------------------------------------------------------------------------------------


@pytest.fixture
def home_dir(home):
    h = resolve_home(home)
    h.ensure()
    return h


def test_delete_removes_files_rows_and_notifications_on_both_stores(store, home_dir):
    from aigen.pipeline.delete import delete_generation

    gid = seed_generation(store, home_dir, "alice", "to go")
    other = seed_generation(store, home_dir, "alice", "to stay")
    with store.transaction() as db:
        db.conn.execute("INSERT INTO notifications (generation_id, channel, due_at, status) VALUES (?, 'console', ?, "
                        "'pending')", (gid, T0.isoformat()))
    folder = home_dir.content_dir / "alice" / gid
    (folder / ".image_9.png.part").write_bytes(b"half")  # a killed run's leftover
    (home_dir.path / "logs").mkdir(exist_ok=True)
    (home_dir.path / "logs" / f"{gid}.log").write_text("log")
    result = delete_generation(home_dir, store, gid, now=T0)
    assert result["files"] == 15 and result["user_id"] == "alice" and result["bytes"] > 250_000
    assert not folder.exists() and not (home_dir.path / "logs" / f"{gid}.log").exists()
    for sql in ("SELECT count(*) AS n FROM generations WHERE id = ?", "SELECT count(*) AS n FROM assets WHERE "
                "generation_id = ?", "SELECT count(*) AS n FROM notifications WHERE generation_id = ?"):
        assert store.query_one(sql, (gid,))["n"] == 0
    tomb = store.query_one("SELECT * FROM deleted_generations WHERE id = ?", (gid,))
    assert tomb["user_id"] == "alice" and tomb["assets"] == 10 and "prompt" not in tomb
    assert (home_dir.content_dir / "alice" / other).exists() and len(store.assets(other)) == 10
    from aigen.errors import NotFound

    with pytest.raises(NotFound):
        delete_generation(home_dir, store, gid)
    with pytest.raises(NotFound):  # someone else's is "unknown" to a user
        delete_generation(home_dir, store, other, user_id="bob")
    assert len(store.assets(other)) == 10


def test_delete_refuses_a_running_generation(store, home_dir):
    from aigen.pipeline.delete import Running, delete_generation
    from aigen.pipeline.run import run_lock

    gid = seed_generation(store, home_dir, "alice", "busy", finish=False)
    with run_lock(home_dir, gid):
        with pytest.raises(Running) as e:
            delete_generation(home_dir, store, gid)
    assert "is being made right now" in e.value.message
    assert len(store.assets(gid)) == 10
    delete_generation(home_dir, store, gid)  # stalled now: deletable
    assert store.query_one("SELECT count(*) AS n FROM generations")["n"] == 0


def test_delete_and_zip_with_files_in_s3(home_dir, s3_env, monkeypatch):
    """Object storage: the zip streams from S3, and delete removes the objects (and only that generation's)."""
    import io
    import zipfile

    from aigen.pipeline.delete import delete_generation
    from aigen.storage import from_config
    from aigen.web.zipstream import members, stream_zip

    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    storage = from_config(home_dir.path)
    store = Store(home_dir.db_path)
    gid = seed_generation(store, home_dir, "alice", "in the bucket", images=2, videos=1)
    keep = seed_generation(store, home_dir, "alice", "stays", images=1, videos=0)
    import shutil

    for g in (gid, keep):  # move the files into the bucket under the same keys
        for a in store.assets(g):
            for rel in filter(None, (a["path"], a.get("poster_path"))):
                tmp = home_dir.path / (rel + ".up")
                shutil.copyfile(home_dir.path / rel, tmp)
                storage.put_file(tmp, rel)
        shutil.rmtree(home_dir.content_dir / "alice" / g)
    assert len(storage.list(f"generated_content/alice/{gid}/")) == 4  # 2 images, a video and its poster
    g = store.get_generation(gid)
    body = b"".join(stream_zip(storage, g, members(g, store.assets(gid)), folder="x"))
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert sorted(zf.namelist()) == ["x/image_1.png", "x/image_2.png", "x/prompt.txt", "x/video_1.mp4"]
    import hashlib

    for a in store.assets(gid):
        assert hashlib.sha256(zf.read("x/" + a["path"].rsplit("/", 1)[-1])).hexdigest() == a["sha256"]
    result = delete_generation(home_dir, store, gid, storage=storage)
    assert result["files"] == 4
    assert storage.list(f"generated_content/alice/{gid}/") == []
    assert len(storage.list(f"generated_content/alice/{keep}/")) == 1
    assert store.query_one("SELECT count(*) AS n FROM generations WHERE id = ?", (gid,))["n"] == 0


# -- aigen delete ---------------------------------------------------------------------------------------------


def test_aigen_delete_with_yes_deletes_and_logs_an_event(cli, home_dir):
    store = Store(home_dir.db_path)
    gid = seed_generation(store, home_dir, "alice", "bye")
    r = cli("delete", gid[:6], "--yes")
    assert r.exit_code == 0, r.output
    assert f"Deleted generation {gid} and 15 file(s)" in r.output
    assert not (home_dir.content_dir / "alice" / gid).exists()
    assert store.query_one("SELECT count(*) AS n FROM generations")["n"] == 0
    ev = store.list_events(kind="generation_deleted")
    assert len(ev) == 1 and ev[0]["generation_id"] == gid and ev[0]["user_id"] == "alice"
    assert ev[0]["detail"] == "by aigen delete: 15 file(s)"
    r = cli("events", "--kind", "generation_deleted", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["events"][0]["generation_id"] == gid


def test_aigen_delete_without_a_terminal_refuses_without_yes(cli, home_dir):
    store = Store(home_dir.db_path)
    gid = seed_generation(store, home_dir, "alice", "stays")
    r = cli("delete", gid)  # CliRunner's standard input is not a terminal
    assert r.exit_code == 2
    assert f"refusing to delete generation {gid} without confirmation" in r.output and "--yes" in r.output
    r = cli("delete", gid, "--json")
    assert r.exit_code == 2 and json.loads(r.output)["error"] == "bad_input"
    assert len(store.assets(gid)) == 10 and (home_dir.content_dir / "alice" / gid).exists()


def test_aigen_delete_asks_on_a_terminal(cli, home_dir, monkeypatch):
    import types

    import aigen.cli.delete as mod

    store = Store(home_dir.db_path)
    gid = seed_generation(store, home_dir, "alice", "ask me")
    monkeypatch.setattr(mod, "sys", types.SimpleNamespace(stdin=types.SimpleNamespace(isatty=lambda: True)))
    r = cli("delete", gid, input="n\n")
    assert r.exit_code == 1 and "Nothing was deleted." in r.output and '"ask me"' in r.output
    assert len(store.assets(gid)) == 10
    r = cli("delete", gid, input="y\n")
    assert r.exit_code == 0 and "Deleted generation" in r.output
    assert store.query_one("SELECT count(*) AS n FROM generations")["n"] == 0


def test_aigen_delete_unknown_id_and_running_generation(cli, home_dir):
    from aigen.pipeline.run import run_lock

    r = cli("delete", "abcdef", "--yes")  # no database yet: nothing is created
    assert r.exit_code == 2 and "unknown generation id" in r.output
    assert not home_dir.db_path.exists()
    store = Store(home_dir.db_path)
    gid = seed_generation(store, home_dir, "alice", "running", finish=False)
    r = cli("delete", "ffffffff", "--yes", "--json")
    assert r.exit_code == 2 and json.loads(r.output)["error"] == "not_found"
    with run_lock(home_dir, gid):
        r = cli("delete", gid, "--yes", "--json")
    assert r.exit_code == 1, r.output
    d = json.loads(r.output)
    assert d["error"] == "running" and "is being made right now" in d["message"]
    assert len(store.assets(gid)) == 10 and store.list_events(kind="generation_deleted") == []


# -- fairness limits ----------------------------------------------------------------------------------------------


def test_limits_count_running_and_the_last_24_hours_including_deleted_ones(store, home_dir):
    from aigen.pipeline import limits as fair
    from aigen.pipeline.delete import delete_generation

    now = T0 + timedelta(hours=1)
    a = gen(store, "one")  # 2 assets each, Processing
    gen(store, "two", minutes=10, status="Completed")
    gen(store, "bob's", user="bob")
    gen(store, "old", minutes=-25 * 60, status="Completed")  # more than 24 hours before `now`
    use = fair.usage(store, "alice", now)
    assert (use.running, use.assets_today) == (1, 4)
    store.set_generation_fields(a, status="Failed")
    delete_generation(home_dir, store, a, now=now)
    assert fair.usage(store, "alice", now).assets_today == 4  # deleted, still counted
    limits = fair.Limits(running_per_user=1, assets_per_day=5)
    with store.transaction():  # as the gallery does: the check and the write in one transaction
        fair.check(store, limits, "alice", 1, now)  # 4 + 1 fits
        with pytest.raises(fair.LimitReached) as e:
            fair.check(store, limits, "alice", 2, now)
        made = store.create_generation({"user_id": "alice", "prompt": "in the same transaction", "image_count": 1,
                                        "video_count": 0}, [{"kind": "image", "idx": 1, "provider": "local"}], now=now)
    assert store.get_generation(made)["status"] == "Processing"
    assert fair.usage(store, "alice", now).assets_today == 5
    assert "so 1 more can be asked for now" in e.value.message
    assert fair.problem(limits, fair.usage(store, "alice", now)).startswith("You have 1 generation(s) in progress")
    store.set_generation_fields(made, status="Completed")
    assert fair.problem(limits, fair.usage(store, "alice", now + timedelta(hours=24))) is None


def test_limits_from_config_toml(tmp_path):
    from aigen.errors import BadInput
    from aigen.pipeline.limits import Limits

    assert Limits.from_config(tmp_path) == Limits(3, 200)
    (tmp_path / "config.toml").write_text("[limits]\nrunning_per_user = 0\nassets_per_day = 10\n")
    assert Limits.from_config(tmp_path) == Limits(0, 10)
    for bad in ("running_per_user = true", "assets_per_day = 1.5", "assets_per_day = -1", "per_day = 3",
                'running_per_user = "2"'):
        (tmp_path / "config.toml").write_text(f"[limits]\n{bad}\n")
        with pytest.raises(BadInput):
            Limits.from_config(tmp_path)
