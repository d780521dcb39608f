"""SQLite's search index in created_at order (migration 0020): a page of a search comes from the index alone
(aigen.store.search.fts5_page) and is exactly the page the general way gives, whatever the times look like."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from aigen.store import Store
from aigen.store import search as S
from aigen.store.search import Filters
from aigen.web import views

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=timezone.utc)
WORDS = ["fox", "owl", "lake", "sky", "red", "blue", "city", "dawn"]


def gen(store, prompt, user="alice", *, at, status=None, provider="local"):
    gid = store.create_generation(
        {"user_id": user, "prompt": prompt, "image_count": 1, "video_count": 1, "image_provider": provider,
         "video_provider": "local"},
        [{"kind": "image", "idx": 1, "provider": provider}, {"kind": "video", "idx": 1, "provider": "local"}],
        now=at)
    if status:
        store.set_generation_fields(gid, status=status)
    return gid


def expected(store, user, f: Filters, page, size):
    """The page by plain Python over every row: the gallery's rules, nothing of the index."""
    rows = [r for r in store.query("SELECT * FROM generations WHERE user_id = ?", (user,))
            if (not f.status or r["status"] == f.status)
            and (not f.provider or f.provider in (r["image_provider"], r["video_provider"]))
            and all(w in S.words_of(r["prompt"]) for w in f.words)]
    rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=f.order != "oldest")
    pages = max(1, -(-len(rows) // size))
    page = min(max(1, page), pages)
    return [r["id"] for r in rows[(page - 1) * size:page * size]], len(rows)


def got(store, user, f, page, size):
    pg = views.load_page(store, user, page, size, filters=f)
    return [g["id"] for g in pg.generations], pg.matched


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "aigen.db")
    yield s
    s.close()


def fill(store, rng, n=160, users=("alice", "bob")):
    """Generations over a few hours, many of them sharing a millisecond (bursts), in any order of arrival."""
    times = []
    for i in range(n):
        t = T0 + timedelta(seconds=rng.randrange(0, 4 * 3600), milliseconds=rng.randrange(1000))
        times.append(t)
        if rng.random() < 0.3:  # a burst: several generations in that same millisecond
            times += [t] * rng.randrange(1, 4)
    rng.shuffle(times)  # arrival order is not created_at order
    for t in times:
        words = rng.sample(WORDS, rng.randrange(1, 4))
        gen(store, " ".join(words), rng.choice(users), at=t,
            status=rng.choice([None, "Completed", "Completed", "Failed"]),
            provider=rng.choice(["local", "openai"]))


def all_queries():
    for q in ("fox", "red sky", "city dawn", "owl"):
        for status in (None, "Completed", "Processing"):
            for provider in (None, "openai"):
                for order in ("newest", "oldest"):
                    yield Filters.from_query({"q": q, "status": status, "provider": provider, "sort": order}.get)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_page_of_every_search_is_the_general_ways_page(store, seed):
    rng = random.Random(seed)
    fill(store, rng)
    assert S.fts5_in_order(store)
    used = pages = 0
    for f in all_queries():
        for size in (3, 7):
            _, matched = expected(store, "alice", f, 1, size)
            for page in range(1, -(-matched // size) + 2):
                want = expected(store, "alice", f, page, size)
                assert got(store, "alice", f, page, size) == want, (f, page, size)
                used += S.fts5_page(store, "g.*", "alice", f, page, size, matched) is not None
                pages += 1
    # The index answered most pages by itself (the rest: a millisecond split by a page's edge; the bursts
    # here make that far more common than it is).
    assert used > 0.6 * pages, (used, pages)


def test_the_index_keys_follow_created_at_and_count_what_cannot(store):
    a = gen(store, "red fox", at=T0 + timedelta(minutes=5))
    b = gen(store, "red fox", at=T0)  # arrives later, made earlier
    c = gen(store, "red fox", at=T0)  # the same millisecond as b
    keys = {r["gen_id"]: r["k"] for r in store.query("SELECT gen_id, k FROM generations_fts_docs")}
    assert keys[b] < keys[a] and keys[c] < keys[a] and keys[b] // S.SEARCH_KEY_SLOTS == keys[c] // S.SEARCH_KEY_SLOTS
    assert store.query("SELECT * FROM generations_fts_unordered WHERE n > 0") == []
    f = Filters.from_query({"q": "fox", "sort": "oldest"}.get)
    assert S.fts5_page(store, "g.*", "alice", f, 1, 1, 3) is None  # b and c share a millisecond: split
    assert [r["id"] for r in S.fts5_page(store, "g.*", "alice", f, 1, 2, 3)] == sorted([b, c])
    assert [r["id"] for r in S.fts5_page(store, "g.*", "alice", f, 2, 2, 3)] == [a]
    # A created_at of another form than aigen writes: no key from it, counted, and the user's searches
    # take the general way (still right).
    store.set_generation_fields(a, created_at="2026-05-01 09:05:00")
    assert store.query_one("SELECT n FROM generations_fts_unordered WHERE user_id = 'alice'")["n"] == 1
    assert S.fts5_page(store, "g.*", "alice", f, 2, 2, 3) is None
    assert got(store, "alice", f, 1, 2) == expected(store, "alice", f, 1, 2)
    # A status change keeps the key's order; putting the time back gives the key back.
    store.set_generation_fields(a, created_at="2026-05-01T09:05:00.000+00:00", status="Completed")
    assert store.query_one("SELECT n FROM generations_fts_unordered WHERE user_id = 'alice'")["n"] == 0
    assert [r["id"] for r in S.fts5_page(store, "g.*", "alice", f, 2, 2, 3)] == [a]
    with store.transaction() as db:
        db.conn.execute("UPDATE generations SET created_at = 'not a time' WHERE id = ?", (b,))
        db.conn.execute("DELETE FROM assets WHERE generation_id = ?", (b,))
        db.conn.execute("DELETE FROM generations WHERE id = ?", (b,))
    assert store.query_one("SELECT n FROM generations_fts_unordered WHERE user_id = 'alice'")["n"] == 0
    assert store.query_one("SELECT count(*) AS n FROM generations_fts WHERE generations_fts MATCH 'fox'")["n"] == 2


def test_a_full_millisecond_gets_the_next_free_key(store):
    at = T0 + timedelta(hours=1)
    ids = [gen(store, "owl", at=at) for _ in range(S.SEARCH_KEY_SLOTS + 2)]
    assert store.query_one("SELECT n FROM generations_fts_unordered WHERE user_id = 'alice'")["n"] == 2
    f = Filters.from_query({"q": "owl"}.get)
    assert got(store, "alice", f, 2, 100) == expected(store, "alice", f, 2, 100)
    assert len(set(ids)) == len(ids)


def test_the_migration_orders_a_store_made_before_it(tmp_path):
    s = Store(tmp_path / "aigen.db")
    rng = random.Random(9)
    fill(s, rng, n=60)
    with s.transaction() as db:
        db.conn.execute("UPDATE generations SET created_at = '2026-05-01 10:00' WHERE rowid % 17 = 0")
        db.conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0020_search_in_order'")
    s.close()
    s = Store(tmp_path / "aigen.db")  # opening applies 0020 again: every generation, in order
    try:
        docs = s.query("SELECT d.k, d.in_order, g.created_at, g.id, g.user_id FROM generations_fts_docs d "
                       "JOIN generations g ON g.id = d.gen_id")
        assert len(docs) == s.query_one("SELECT count(*) AS n FROM generations")["n"]
        ordered = sorted((d for d in docs if d["in_order"]), key=lambda d: d["k"])
        assert [(d["created_at"], d["id"]) for d in ordered] == sorted((d["created_at"], d["id"]) for d in ordered)
        odd = {}
        for d in docs:
            if not d["in_order"]:
                odd[d["user_id"]] = odd.get(d["user_id"], 0) + 1
        assert odd and {r["user_id"]: r["n"] for r in s.query("SELECT * FROM generations_fts_unordered")} == odd
        for f in all_queries():
            assert got(s, "alice", f, 1, 5) == expected(s, "alice", f, 1, 5)
    finally:
        s.close()
