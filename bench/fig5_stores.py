"""Figure 5's stores: the same data, generated inside the database itself, on SQLite and on PostgreSQL.

A million generations with ten assets each and ten million events are too many
rows to make in Python in minutes (the executemany builder of benchlib made
~60,000 rows a second). Here every row is computed by the database from its
number: `INSERT ... SELECT` over a recursive CTE (SQLite) or generate_series
(PostgreSQL), with the same integer arithmetic on both, so both stores hold
the same rows (ids, owners, statuses, prompts, times, paths). Secondary
indexes are dropped before the load and made again after it (one sort each
instead of ten million B-tree inserts); triggers stay, so what they derive
(the prompt search index, and whatever later migrations keep in step) is
made as it would be.

What the rows are (as benchlib.build_store's):
  - generation i (0-based) belongs to user0 when (i * A) mod N < user_generations (a
    permutation of 0..N-1, so exactly that many, spread evenly in time), else to one of
    user1..user{users-1}; 95% Completed, 4% Failed, 1% Processing; created one after
    another over a year; image and video provider "local"; its prompt one of PROMPTS
    distinct prompts made from a vocabulary whose nouns follow Zipf's law (so a search
    word can be rare or common, as in real prompts);
  - every generation has `assets_per_gen` asset rows (half images, half videos), done
    with paths, sizes and hashes when Completed, half failed when Failed, queued when
    Processing;
  - events of every kind, spread over the same year, each about a generation chosen by a
    hash of its number.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

BUILDER_VERSION = 1  # bump when the rows change: cached stores of another version are rebuilt
CACHE_DIR = Path(tempfile.gettempdir()) / "aigen-bench-fig5-cache"
T_END = datetime(2026, 11, 24, 9, 0, 0, tzinfo=timezone.utc)
SPAN_DAYS = 365
N_PROMPTS = 20_000
USER = "user0"
BIG_TABLES = ("generations", "assets", "events")
# Kinds of event, by weight out of 100 (as benchlib.EVENT_KINDS).
EVENT_KINDS = [("gallery_view", 30), ("asset_view", 40), ("generation_view", 12), ("api_view", 5),
               ("login_ok", 8), ("login_failed", 4), ("logout", 1)]
M32 = 4294967296
KNUTH = 2654435761


@dataclass(frozen=True)
class Spec:
    generations: int
    users: int
    user_generations: int
    assets_per_gen: int = 10
    events: int = 0
    seed: int = 7

    def key(self) -> str:
        raw = json.dumps({**asdict(self), "v": BUILDER_VERSION}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:12]

    def describe(self) -> str:
        return (f"{self.generations:,} generations ({self.user_generations:,} of {USER}), "
                f"{self.generations * self.assets_per_gen:,} assets, {self.events:,} events")


# ----------------------------------------------------------------------------
# Prompts and search words


ADJECTIVES = [
    "red", "blue", "golden", "silver", "misty", "quiet", "ancient", "neon", "frozen", "burning", "gentle", "wild",
    "tiny", "giant", "lonely", "bright", "dark", "shimmering", "rusty", "crystal", "velvet", "stormy", "sunlit",
    "moonlit", "hidden", "floating", "broken", "glowing", "painted", "forgotten", "electric", "sleepy", "curious",
    "majestic", "weathered", "vibrant", "pale", "emerald", "crimson", "amber",
]
NOUNS = [
    "city", "forest", "cat", "dog", "fox", "ocean", "mountain", "robot", "dragon", "castle", "lighthouse", "river",
    "garden", "train", "ship", "owl", "horse", "village", "desert", "tower", "bridge", "temple", "whale", "butterfly",
    "tree", "lake", "island", "market", "library", "street", "wolf", "bear", "deer", "rabbit", "eagle", "spaceship",
    "planet", "moon", "star", "cloud", "waterfall", "cave", "canyon", "meadow", "harbor", "cathedral", "windmill",
    "balloon", "kite", "lantern", "violin", "piano", "clock", "teapot", "bicycle", "car", "tram", "airship",
    "submarine", "octopus", "jellyfish", "turtle", "penguin", "tiger", "lion", "elephant", "giraffe", "zebra",
    "panda", "koala", "flamingo", "peacock", "hummingbird", "beetle", "snail", "mushroom", "cactus", "orchid",
    "sunflower", "tulip", "rose", "lotus", "bamboo", "oak", "willow", "pine", "glacier", "volcano", "reef",
    "skyscraper", "alley", "rooftop", "subway", "cafe", "bakery", "workshop", "observatory", "greenhouse",
    "farmhouse", "cottage", "palace", "fortress", "ruins", "pyramid", "statue", "fountain", "carousel", "circus",
    "festival", "parade", "samurai", "knight", "wizard", "astronaut", "pirate", "mermaid", "ghost", "fairy",
    "giantess", "scarecrow", "golem", "phoenix", "unicorn", "griffin", "kraken", "yeti", "sphinx", "chimera",
    "hydra", "minotaur", "centaur", "pegasus", "basilisk", "wyvern", "leviathan", "behemoth", "djinn", "kitsune",
    "tanuki", "kappa", "oni", "tengu", "selkie", "banshee", "dryad", "nymph", "satyr", "troll", "ogre", "goblin",
    "pixie", "sprite", "wisp", "gargoyle",
]
SETTINGS = [
    "at dawn", "at dusk", "at night", "in the rain", "in the snow", "under a storm", "in spring", "in autumn",
    "by the sea", "on a hill", "in the fog", "at sunset", "under the stars", "in a dream", "after the rain",
    "in winter", "at noon", "during a festival", "in the desert heat", "beneath the aurora",
]
STYLES = [
    "watercolor", "oil painting", "photorealistic", "cinematic lighting", "35mm film", "studio ghibli style",
    "pixel art", "isometric", "low poly", "ink drawing", "charcoal sketch", "ukiyo-e", "art nouveau", "baroque",
    "impressionist", "surreal", "minimalist", "vaporwave", "cyberpunk", "steampunk", "long exposure", "macro lens",
    "aerial view", "wide angle", "bokeh", "hdr", "matte painting", "concept art", "claymation", "paper cutout",
]


def make_prompts(seed: int) -> list[str]:
    """N_PROMPTS distinct prompts; nouns chosen by Zipf's law (the k-th most common about 1/k as often)."""
    rng = random.Random(seed)
    weights = [1.0 / (k + 1) for k in range(len(NOUNS))]
    out, seen = [], set()
    while len(out) < N_PROMPTS:
        noun = rng.choices(NOUNS, weights)[0]
        p = f"a {rng.choice(ADJECTIVES)} {noun} {rng.choice(SETTINGS)}, {rng.choice(STYLES)}"
        if rng.random() < 0.3:
            p += f", {rng.choice(STYLES)}"
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def search_words(seed: int) -> dict[str, str]:
    """Search texts of known frequency among the prompts: a common noun, a typical one, two words."""
    prompts = make_prompts(seed)
    counts = {n: sum(1 for p in prompts if f" {n} " in p) for n in NOUNS}
    ranked = sorted(NOUNS, key=lambda n: -counts[n])
    common, typical = ranked[0], ranked[len(ranked) // 4]
    adj = ADJECTIVES[3]
    return {"common": common, "typical": typical, "two_words": f"{adj} {typical}"}


# ----------------------------------------------------------------------------
# The arithmetic both databases run


def _coprime_step(n: int) -> int:
    """A multiplier A with gcd(A, n) = 1 near 0.618 n: i -> (i * A) mod n is a permutation of 0..n-1."""
    import math

    a = max(1, int(n * 0.6180339887))
    while math.gcd(a, n) != 1:
        a += 1
    return a


def _gen_columns(spec: Spec, d: "_Dialect", i: str = "i") -> dict[str, str]:
    """SQL expressions of a generation's columns from its number (the column `i`)."""
    n, ug, users = spec.generations, spec.user_generations, max(spec.users, 2)
    a = _coprime_step(n)
    start_ms = int((T_END - timedelta(days=SPAN_DAYS)).timestamp() * 1000)
    span_ms = SPAN_DAYS * 86400 * 1000
    h = lambda c: f"(((({i} + {c}) * {KNUTH}) % {M32}) / 256)"  # noqa: E731 - a 24-bit hash of i
    st = f"({h(11)} % 100)"
    created_ms = f"({start_ms} + ({i} * {span_ms}) / {n})"
    return {
        "id": d.hex(f"(({i} * 6700417019) % 281474976710656)", 12),
        "user_id": f"(CASE WHEN (({i} * {a}) % {n}) < {ug} THEN '{USER}' ELSE 'user' || (1 + {h(3)} % {users - 1}) END)",
        "status": f"(CASE WHEN {st} < 95 THEN 'Completed' WHEN {st} < 99 THEN 'Failed' ELSE 'Processing' END)",
        "created": d.ts(created_ms),
        "generated": d.ts(f"({created_ms} + 40000)"),
        "prompt_k": f"(1 + {h(5)} % {N_PROMPTS})",
    }


class _Dialect:
    name = ""

    def hex(self, expr: str, width: int) -> str:
        raise NotImplementedError

    def ts(self, ms_expr: str) -> str:
        raise NotImplementedError

    def series(self, n: int, v: str = "i") -> str:
        """A subquery of one column `v`: 0, 1, ..., n - 1, in that order."""
        raise NotImplementedError


class _SQLite(_Dialect):
    name = "sqlite"

    def hex(self, expr, width):
        return f"printf('%0{width}x', {expr})"

    def ts(self, ms_expr):
        return f"strftime('%Y-%m-%dT%H:%M:%f+00:00', {ms_expr} / 1000.0, 'unixepoch')"

    def series(self, n, v="i"):
        return f"(WITH RECURSIVE s({v}) AS (SELECT 0 UNION ALL SELECT {v} + 1 FROM s WHERE {v} < {n - 1}) SELECT {v} FROM s)"


class _Pg(_Dialect):
    name = "postgresql"

    def hex(self, expr, width):
        return f"lpad(to_hex({expr}), {width}, '0')"

    def ts(self, ms_expr):
        return (f"to_char(to_timestamp(({ms_expr}) / 1000.0) AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"+00:00\"')")

    def series(self, n, v="i"):
        return f"(SELECT {v} FROM generate_series(0::bigint, {n - 1}::bigint) AS gs({v}))"


def _load_statements(spec: Spec, d: _Dialect) -> list[tuple[str, str]]:
    """(what, SQL) of the load, in order; the table bench_prompts (k, text) exists.

    Rows come out in the order of their number (one series, no sort, no join that could
    reorder them), so rows made together sit together, as in a store filled over time.
    """
    g = _gen_columns(spec, d)
    n = spec.generations
    users = max(spec.users, 2)
    ni = spec.assets_per_gen - spec.assets_per_gen // 2  # images per generation; the rest are videos
    gen_sql = f"""
INSERT INTO generations (id, user_id, prompt, status, video_paths, image_paths, created_at, updated_at, generated_at,
    image_provider, video_provider, image_model, video_model, image_count, video_count, seed, options, notify_status,
    error)
SELECT id, user_id, (SELECT p.text FROM bench_prompts p WHERE p.k = x.prompt_k), status,
    CASE WHEN status = 'Processing' THEN '[]' ELSE '["generated_content/' || user_id || '/' || id || '/video_1.mp4"]' END,
    CASE WHEN status = 'Processing' THEN '[]' ELSE '["generated_content/' || user_id || '/' || id || '/image_1.png"]' END,
    created, CASE WHEN status = 'Processing' THEN created ELSE generated END,
    CASE WHEN status = 'Processing' THEN NULL ELSE generated END,
    'local', 'local', 'procedural-v1', 'procedural-v1', {ni}, {spec.assets_per_gen - ni}, i,
    '{{"image_size": [1024, 1024], "video_size": [1280, 720], "duration": 4.0, "fps": 24}}',
    CASE WHEN status = 'Processing' THEN NULL ELSE 'none' END,
    CASE WHEN status = 'Failed' THEN '1 of 10 assets failed: image 5: provider said no' ELSE NULL END
FROM (SELECT i, {g['id']} AS id, {g['user_id']} AS user_id, {g['status']} AS status, {g['created']} AS created,
             {g['generated']} AS generated, {g['prompt_k']} AS prompt_k
      FROM {d.series(n)} AS s) AS x"""
    # Asset t is the (t mod K)-th of generation t div K. Done when its generation is Completed, or
    # Failed and in the first half of its kinds; failed for the rest of a Failed one; else queued.
    k_n = spec.assets_per_gen
    half = k_n // 2
    made = f"(status = 'Completed' OR (status = 'Failed' AND k < {half}))"
    failed = f"(status = 'Failed' AND k >= {half})"
    path = ("'generated_content/' || user_id || '/' || id || '/' || kind || '_' || idx || "
            "CASE WHEN kind = 'image' THEN '.png' ELSE '.mp4' END")
    sha = " || ".join(d.hex(f"((t * {c}) % {M32})", 8) for c in
                      (KNUTH, 2246822519, 3266489917, 668265263, 374761393, 2654435769, 1597334677, 3812015801))
    asset_sql = f"""
INSERT INTO assets (generation_id, kind, idx, provider, model, seed, width, height, duration, fps, status, path,
    poster_path, bytes, sha256, attempts, error, created_at, started_at, finished_at, updated_at, progress)
SELECT id, kind, idx, 'local', 'procedural-v1', i * 100 + idx,
    CASE WHEN kind = 'image' THEN 1024 ELSE 1280 END, CASE WHEN kind = 'image' THEN 1024 ELSE 720 END,
    CASE WHEN kind = 'video' THEN 4.0 ELSE NULL END, CASE WHEN kind = 'video' THEN 24 ELSE NULL END,
    CASE WHEN {made} THEN 'done' WHEN {failed} THEN 'failed' ELSE 'queued' END,
    CASE WHEN {made} THEN {path} ELSE NULL END,
    CASE WHEN {made} AND kind = 'video' THEN 'generated_content/' || user_id || '/' || id || '/video_' || idx
         || '.poster.jpg' ELSE NULL END,
    CASE WHEN {made} THEN CASE WHEN kind = 'image' THEN 1200000 ELSE 900000 END ELSE NULL END,
    CASE WHEN {made} THEN {sha} ELSE NULL END,
    CASE WHEN {made} OR {failed} THEN 1 ELSE 0 END,
    CASE WHEN {failed} THEN 'provider said no' ELSE NULL END,
    created, created, CASE WHEN {made} OR {failed} THEN generated ELSE NULL END, created,
    CASE WHEN {made} THEN 1.0 ELSE NULL END
FROM (SELECT t, i, k, {g['id']} AS id, {g['user_id']} AS user_id, {g['status']} AS status, {g['created']} AS created,
             {g['generated']} AS generated,
             CASE WHEN k < {ni} THEN 'image' ELSE 'video' END AS kind,
             CASE WHEN k < {ni} THEN k + 1 ELSE k - {ni} + 1 END AS idx
      FROM (SELECT t, t / {k_n} AS i, t % {k_n} AS k FROM {d.series(n * k_n, "t")} AS s) AS y) AS x"""
    start_iso = (T_END - timedelta(days=SPAN_DAYS)).isoformat(timespec="milliseconds")
    out = [
        ("users", f"INSERT INTO users (user_id, created_at) SELECT 'user' || i, '{start_iso}' FROM {d.series(users)} AS s"),
        ("generations", gen_sql),
        ("assets", asset_sql),
    ]
    if spec.events:
        e = spec.events
        cases, lo = [], 0
        for kind, w in EVENT_KINDS:
            lo += w
            cases.append(f"WHEN kh < {lo} THEN '{kind}'")
        start_ms = int((T_END - timedelta(days=SPAN_DAYS)).timestamp() * 1000)
        span_ms = SPAN_DAYS * 86400 * 1000
        sessions = max(1, e // 50)
        ge = _gen_columns(spec, d, "g")  # the generation an event is about, from its number g
        ev_sql = f"""
INSERT INTO events (at, kind, user_id, ok, reason, address, user_agent, session_id, generation_id, asset_id, detail)
SELECT {d.ts(f"({start_ms} + (j * {span_ms}) / {e})")}, kind, owner,
    CASE WHEN kind = 'login_failed' THEN 0 ELSE 1 END,
    CASE WHEN kind = 'login_failed' THEN 'invalid_user_id' ELSE NULL END,
    '127.0.0.' || (1 + j % 250), 'Mozilla/5.0 (X11; Linux x86_64) bench',
    {d.hex(f"(((((j + 303) * {KNUTH}) % {M32}) / 16) % {sessions})", 22)},
    CASE WHEN kind IN ('generation_view', 'asset_view', 'api_view') THEN gid ELSE NULL END,
    CASE WHEN kind = 'asset_view' THEN 1 + ((((j + 404) * {KNUTH}) % {M32}) / 16) % {n * spec.assets_per_gen}
         ELSE NULL END,
    CASE WHEN kind = 'asset_view' THEN 'view video 1' WHEN kind = 'gallery_view' THEN 'page 1 of 1' ELSE NULL END
FROM (SELECT j, CASE {' '.join(cases)} END AS kind, {ge['id']} AS gid, {ge['user_id']} AS owner
      FROM (SELECT j, (((((j + 101) * {KNUTH}) % {M32}) / 16) % {n}) AS g,
                   (((((j + 202) * {KNUTH}) % {M32}) / 256) % 100) AS kh
            FROM {d.series(e, "j")} AS s) AS y) AS x"""
        out.append(("events", ev_sql))
    return out


# ----------------------------------------------------------------------------
# SQLite


@dataclass
class Built:
    backend: str
    spec: Spec
    seconds: float  # 0 when reused
    where: str  # the home folder (SQLite) or the database URL (PostgreSQL)
    size_bytes: int
    reused: bool
    timings: dict


def build_sqlite(home_dir: Path, spec: Spec, *, log=print) -> Built:
    """A home whose aigen.db has the real schema (Store() applies every migration), filled in bulk."""
    from aigen.config import resolve_home
    from aigen.store import Store

    t0 = time.perf_counter()
    home = resolve_home(home_dir)
    home.ensure()
    Store(home.db_path).close()
    conn = sqlite3.connect(str(home.db_path), isolation_level=None)
    timings = {}
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1000000")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA threads = 2")
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
            f"({','.join('?' for _ in BIG_TABLES)})", BIG_TABLES).fetchall()
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute("CREATE TEMP TABLE bench_prompts (k INTEGER PRIMARY KEY, text TEXT)")
        conn.executemany("INSERT INTO bench_prompts VALUES (?, ?)", enumerate(make_prompts(spec.seed), 1))
        for what, sql in _load_statements(spec, _SQLite()):
            t = time.perf_counter()
            conn.execute(sql.replace("INSERT INTO users", "INSERT OR IGNORE INTO users"))
            timings[what] = time.perf_counter() - t
            log(f"  sqlite: {what} loaded in {timings[what]:.1f} s")
        t = time.perf_counter()
        for _, sql in indexes:
            conn.execute(sql)
        timings["indexes"] = time.perf_counter() - t
        log(f"  sqlite: {len(indexes)} indexes made in {timings['indexes']:.1f} s")
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    Store(home.db_path).close()
    return Built("sqlite", spec, time.perf_counter() - t0, str(home.path), home.db_path.stat().st_size, False,
                 timings)


def cached_sqlite(spec: Spec, *, cache_dir: Path = CACHE_DIR, fresh: bool = False, log=print) -> Built:
    """The SQLite store for `spec` from the cache folder, built there first if it is not (or `fresh`)."""
    folder = cache_dir / f"sqlite-{spec.key()}"
    marker = folder / "bench-built.json"
    if marker.exists() and not fresh:
        info = json.loads(marker.read_text())
        from aigen.config import resolve_home
        from aigen.store import Store

        home = resolve_home(folder / "home")
        t = time.perf_counter()
        applied = Store(home.db_path).migrate()  # a migration newer than the cached store: applied now
        Store(home.db_path).close()
        if applied:
            log(f"  sqlite: applied {', '.join(applied)} to the cached store in {time.perf_counter() - t:.1f} s")
            info.setdefault("migrations_applied_later", {})[",".join(applied)] = time.perf_counter() - t
            marker.write_text(json.dumps(info))
        return Built("sqlite", spec, 0.0, str(home.path), home.db_path.stat().st_size, True, info.get("timings", {}))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    built = build_sqlite(folder / "home", spec, log=log)
    marker.write_text(json.dumps({"spec": asdict(spec), "seconds": built.seconds, "timings": built.timings}))
    return built


# ----------------------------------------------------------------------------
# PostgreSQL


def build_pg(url: str, spec: Spec, *, log=print) -> Built:
    """The database at `url` (empty) with the real schema (PgStore applies PG_MIGRATIONS), filled in bulk."""
    import psycopg

    from aigen.store.pg import PgStore

    t0 = time.perf_counter()
    PgStore(url).close_all()
    timings = {}
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET maintenance_work_mem = '512MB'")
        c.execute("SET synchronous_commit = off")
        idx = c.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
            "AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
            (list(BIG_TABLES),)).fetchall()
        with c.transaction():
            for name, _ in idx:
                c.execute(f'DROP INDEX "{name}"')
            c.execute("CREATE TEMP TABLE bench_prompts (k BIGINT PRIMARY KEY, text TEXT)")
            with c.cursor().copy("COPY bench_prompts (k, text) FROM STDIN") as cp:
                for k, text in enumerate(make_prompts(spec.seed), 1):
                    cp.write_row((k, text))
            # Triggers off during the load (replica mode): the rows are consistent by construction,
            # so the foreign key's check of each asset is skipped; and the counts trigger of
            # generations (migration 0017), which would update the same few rows a million times in
            # one transaction (each update a new row version: quadratic), is replaced by what the
            # migration itself does on an existing database, once the rows are in.
            c.execute("SET LOCAL session_replication_role = replica")
            for what, sql in _load_statements(spec, _Pg()):
                t = time.perf_counter()
                c.execute(sql + (" ON CONFLICT DO NOTHING" if what == "users" else ""))
                timings[what] = time.perf_counter() - t
                log(f"  postgresql: {what} loaded in {timings[what]:.1f} s")
            c.execute("SET LOCAL session_replication_role = origin")
            t = time.perf_counter()
            for sql in _pg_backfills():
                c.execute(sql)
            timings["derived"] = time.perf_counter() - t
            log(f"  postgresql: derived tables filled in {timings['derived']:.1f} s")
        t = time.perf_counter()
        for _, sql in idx:
            c.execute(sql)
        timings["indexes"] = time.perf_counter() - t
        log(f"  postgresql: {len(idx)} indexes made in {timings['indexes']:.1f} s")
        t = time.perf_counter()
        # What autovacuum would have done on a database that has been in use: statistics and the
        # visibility map (index-only scans) up to date.
        c.execute("VACUUM (ANALYZE) generations, assets, events, users")
        timings["vacuum_analyze"] = time.perf_counter() - t
        log(f"  postgresql: VACUUM ANALYZE in {timings['vacuum_analyze']:.1f} s")
        size = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return Built("postgresql", spec, time.perf_counter() - t0, url, size, False, timings)


def _pg_backfills() -> list[str]:
    """The statements of PG_MIGRATIONS that fill derived tables from generations (what a trigger keeps up
    to date afterwards), taken from the migrations themselves so the bench does what they do."""
    from aigen.store.pg_schema import PG_MIGRATIONS

    out = []
    for _, sql in PG_MIGRATIONS:
        for stmt in sql.split(";\n"):
            s = stmt.strip()
            if s.startswith("DELETE FROM generation_counts") or s.startswith("INSERT INTO generation_counts"):
                out.append(s)
    return out


class PgServer:
    """A PostgreSQL server for the benchmark whose data folder can outlive the run (the cache).

    Debian's binaries, as tests/fakes/cluster_services.start_postgres uses them (run as the
    `postgres` user when this runs as root), on 127.0.0.1 and an ephemeral port.
    """

    def __init__(self, data_parent: Path, *, keep: bool):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.fakes.cluster_services import ServiceUnavailable, _pg_bindir, free_port

        self.bindir = _pg_bindir()
        if self.bindir is None:
            raise ServiceUnavailable("no PostgreSQL binaries under /usr/lib/postgresql/*/bin (AIGEN_TEST_PG_BIN)")
        self.keep = keep
        self.top = data_parent
        self.data = data_parent / "data"
        self.log = data_parent / "server.log"
        self.run_as: list[str] = []
        self.env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        pw = None
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            self.run_as = [shutil.which("runuser") or "runuser", "-u", "postgres", "--"]
        self.top.mkdir(parents=True, exist_ok=True)
        if pw is not None:
            # The server runs as `postgres`: it must be able to reach its folder.
            for parent in self.top.parents:
                if parent == Path(tempfile.gettempdir()) or parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o711)
            os.chown(self.top, pw.pw_uid, pw.pw_gid)
        self.initialised_now = False
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            init = subprocess.run([*self.run_as, str(self.bindir / "initdb"), "-D", str(self.data), "-U", "aigen",
                                   "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                                  capture_output=True, text=True, env=self.env, cwd=self.top)
            if init.returncode != 0:
                raise ServiceUnavailable(f"initdb failed: {(init.stderr or init.stdout)[-800:]}")
            self.initialised_now = True
        last = ""
        for _ in range(3):
            self.port = free_port()
            # Durability off, as the tests' throwaway server (it only speeds up the load; reads are the same).
            # shared_buffers 1 GB, not the default 128 MB, which PostgreSQL's documentation says to raise
            # (to about a quarter of the memory: 6 GB here): at 128 MB the rows of a search for the most
            # common word (15,000 table pages) were read again from the operating system's cache each time.
            opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.top} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100 "
                    "-c max_wal_size=8GB -c checkpoint_timeout=30min -c shared_buffers=1GB")
            start = subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                                    str(self.log), "-w", "-t", "60", "-o", opts, "start"],
                                   capture_output=True, text=True, env=self.env, cwd=self.top)
            if start.returncode == 0:
                break
            last = (start.stderr or start.stdout)[-400:]
        else:
            raise ServiceUnavailable(f"pg_ctl start failed: {last}")
        self.base = f"postgresql://aigen@127.0.0.1:{self.port}"
        self.version = self.query("postgres", "SHOW server_version")[0][0]

    def url(self, db: str) -> str:
        return f"{self.base}/{db}"

    def query(self, db: str, sql: str, params=None):
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def exists(self, db: str) -> bool:
        return bool(self.query("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (db,)))

    def create(self, db: str) -> str:
        self.query("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        self.query("postgres", f'CREATE DATABASE "{db}"')
        return self.url(db)

    def drop(self, db: str) -> None:
        self.query("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def stop(self) -> None:
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                        "-t", "120", "stop"], capture_output=True, env=self.env, cwd=self.top)
        if not self.keep:
            shutil.rmtree(self.top, ignore_errors=True)


def cached_pg(server: PgServer, spec: Spec, *, fresh: bool = False, log=print) -> Built:
    """The database for `spec` on the (cached) server, built there first if it is not (or `fresh`)."""
    from aigen.store.pg import PgStore

    db = f"fig5_{spec.key()}"
    done = server.exists(db) and server.query(db, "SELECT to_regclass('bench_built')")[0][0] is not None
    if done and not fresh:
        t = time.perf_counter()
        store = PgStore(server.url(db), migrate=False)
        applied = store.migrate()
        store.close_all()
        if applied:
            log(f"  postgresql: applied {', '.join(applied)} to the cached database in "
                f"{time.perf_counter() - t:.1f} s")
            server.query(db, "VACUUM (ANALYZE) generations")
        size = server.query(db, "SELECT pg_database_size(current_database())")[0][0]
        timings = json.loads(server.query(db, "SELECT info FROM bench_built")[0][0])
        return Built("postgresql", spec, 0.0, server.url(db), size, True, timings)
    url = server.create(db)
    built = build_pg(url, spec, log=log)
    server.query(db, "CREATE TABLE bench_built (info TEXT)")
    server.query(db, "INSERT INTO bench_built VALUES (%s)", (json.dumps(built.timings),))
    return built
