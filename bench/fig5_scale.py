"""Figure 5, scale: 1,000,000 generations, 10,000,000 assets and 10,000,000 events, on SQLite and PostgreSQL.

The store (bench/fig5_stores.py: the real schema, every migration, rows made by
the database itself, the same rows on both backends): 100,000 of the
generations belong to the user asked about, the rest to 999 others,
interleaved in time over a year; prompts from a vocabulary whose nouns follow
Zipf's law. Measured on each backend, one operation at a time:
  - `aigen status --user X`: the command run in-process (typer's CliRunner: the
    same parsing, store opening, queries and table printing, without the
    interpreter's start-up, which figure 3 covers); also as a fresh process;
  - the gallery page of X over HTTP from the real app under waitress on
    127.0.0.1, logged in (a keep-alive connection): page 1, and the middle page
    (the deepest there is: a page past the middle is walked from the end);
  - the gallery's search: a word of typical frequency; the most common word with
    a status filter, oldest first; two words; status and provider filters
    without words on a deep page;
  - login: POST /login until its 303, each with a fresh session.
Every statement these run is recorded and explained (SQLite: EXPLAIN QUERY
PLAN; PostgreSQL: EXPLAIN with the statement's values); a plan that scans a big
table without an index, or sorts many of its rows (SQLite's temporary B-tree
for an ORDER BY or GROUP BY, a PostgreSQL Sort of more than 1,000 rows; an
Incremental Sort, whose input comes in index order, is not), is flagged and
misses the target.

Baseline: the same operations, timed in the same rounds, on a store 100 times
smaller (10,000 generations), so the ratio shows how each grows with the data.

The stores are kept between runs in a cache folder (default
/tmp/aigen-bench-fig5-cache: about 7 GiB for SQLite and 10 GiB for PostgreSQL
at the default sizes). The first run builds them (about 4 minutes each on 2
cores); later runs reuse them (a migration added since is applied to them
first, and its time printed) and take about 2 minutes.

    python bench/fig5_scale.py                        # both backends
    python bench/fig5_scale.py --backends sqlite      # one
    python bench/fig5_scale.py --fresh                # rebuild the cached stores
    python bench/fig5_scale.py --no-cache             # build in a temporary folder, removed at the end
    python bench/fig5_scale.py --quick                # a few seconds, numbers meaningless
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
import fig5_stores as fs  # noqa: E402
from benchlib import Check, Report, Stats  # noqa: E402

BUDGET_S = 0.050
PG_SORT_ROWS = 1000  # a PostgreSQL Sort estimated above this many rows is flagged


# ----------------------------------------------------------------------------
# Statements and plans on PostgreSQL


class PgQueryLog:
    """Records every statement PgStore connections run, with its values (patches aigen.store.pg for this process)."""

    def __init__(self):
        self.statements: list[tuple[str, object]] = []
        self.active = False

    def install(self) -> None:
        from aigen.store import pg

        orig = pg.Connection.execute
        log = self

        def execute(conn, sql, params=None):
            if log.active:
                log.statements.append((sql, params))
            return orig(conn, sql, params)

        pg.Connection.execute = execute

    def capture(self):
        from contextlib import contextmanager

        @contextmanager
        def cm():
            self.statements.clear()
            self.active = True
            try:
                yield self.statements
            finally:
                self.active = False

        return cm()


def pg_explain(url: str, statements: list[tuple[str, object]], big_tables=benchlib.BIG_TABLES) -> list[dict]:
    """EXPLAIN (FORMAT JSON) of each distinct SELECT/UPDATE/DELETE, with its values; flags as benchlib.explain."""
    from aigen.store.pg import PgStore

    store = PgStore(url, migrate=False)
    seen, out = set(), []
    try:
        for sql, params in statements:
            head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
            if head not in ("SELECT", "UPDATE", "DELETE", "WITH") or "pg_advisory" in sql or "to_regclass" in sql:
                continue
            key = (" ".join(sql.split()), len(params or ()))
            if key in seen:
                continue
            seen.add(key)
            row = store.db.conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
            plan = row[0][0]["Plan"]
            lines, problems = [], []
            _walk(plan, 0, lines, problems, big_tables)
            out.append({"sql": " ".join(sql.split()), "plan": lines, "problems": problems})
    finally:
        store.close_all()
    return out


def _walk(node: dict, depth: int, lines: list, problems: list, big_tables) -> None:
    kind = node["Node Type"]
    rel = node.get("Relation Name")
    idx = node.get("Index Name")
    desc = kind + (f" on {rel}" if rel else "") + (f" using {idx}" if idx else "")
    desc += f" (rows={node.get('Plan Rows')})"
    lines.append("  " * depth + desc)
    if kind == "Seq Scan" and rel in big_tables:
        problems.append(f"full scan of {rel}")
    # An Incremental Sort is not flagged: its input already comes in the order of its first key (an index),
    # and it sorts only the rows that share one value of it, so under a LIMIT it stops early.
    if kind == "Sort" and node.get("Plan Rows", 0) > PG_SORT_ROWS:
        problems.append(f"sort of ~{node['Plan Rows']} rows ({', '.join(node.get('Sort Key', []))})")
    for child in node.get("Plans", []):
        _walk(child, depth + 1, lines, problems, big_tables)


# ----------------------------------------------------------------------------
# The gallery, on any store


class StoreGallery(benchlib.Gallery):
    """benchlib.Gallery over a given store (SQLite or PostgreSQL)."""

    def __init__(self, home, store):
        from aigen.web.app import WebSettings, make_app
        from aigen.web.server import THREADS, GalleryServer

        self.store = store
        settings = WebSettings(home=home, host="127.0.0.1", port=0, store=store)
        self.threads = THREADS
        self.server = GalleryServer(make_app(settings), "127.0.0.1", 0, threads=THREADS).start_in_thread()
        self.port = self.server.port

    def close(self) -> None:
        self.server.shutdown()
        close_all = getattr(self.store, "close_all", None)
        (close_all or self.store.close)()


# ----------------------------------------------------------------------------


def main(argv=None) -> int:
    p = benchlib.parser(__doc__.split("\n\n")[0], repeat=30)
    p.add_argument("--generations", type=int, default=1_000_000)
    p.add_argument("--user-generations", type=int, default=100_000)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--assets-per-generation", type=int, default=10)
    p.add_argument("--small-factor", type=int, default=100, help="the baseline store is this many times smaller")
    p.add_argument("--process-repeat", type=int, default=10, help="runs of `aigen status --user` as a process")
    p.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--cache-dir", default=str(fs.CACHE_DIR), help="where the stores are kept between runs")
    p.add_argument("--fresh", action="store_true", help="rebuild the cached stores")
    p.add_argument("--no-cache", action="store_true", help="build in a temporary folder, removed at the end")
    args = p.parse_args(argv)
    if args.quick:
        args.generations, args.user_generations, args.users, args.events = 2000, 200, 20, 20_000
        args.small_factor, args.repeat, args.process_repeat, args.no_cache = 10, 3, 1, True
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("sqlite", "postgresql"):
            raise SystemExit(f"unknown backend {b!r}: sqlite or postgresql")

    rep = Report("fig5_scale", "Figure 5: scale (status, gallery page, search and login on a big store)", args, {
        "generations": args.generations, "user_generations": args.user_generations, "users": args.users,
        "events": args.events, "assets_per_generation": args.assets_per_generation,
        "small_factor": args.small_factor, "repeat": args.repeat, "backends": ",".join(backends),
    })
    rep.header()
    f = args.small_factor
    big_spec = fs.Spec(generations=args.generations, users=args.users, user_generations=args.user_generations,
                       assets_per_gen=args.assets_per_generation, events=args.events)
    small_spec = fs.Spec(generations=max(args.generations // f, 10), users=max(args.users // f, 2),
                         user_generations=max(args.user_generations // f, 1),
                         assets_per_gen=args.assets_per_generation, events=args.events // f)
    words = fs.search_words(big_spec.seed)
    rep.extra["plans"] = {}
    rep.extra["builds"] = {}

    with ExitStack() as stack:
        tmp = stack.enter_context(benchlib.temp_dir("aigen-bench-fig5-"))
        cache = Path(tempfile.mkdtemp(prefix="aigen-bench-fig5-nocache-")) if args.no_cache else Path(args.cache_dir)
        if args.no_cache:
            stack.callback(lambda: __import__("shutil").rmtree(cache, ignore_errors=True))
        cache.mkdir(parents=True, exist_ok=True)
        for backend in backends:
            stores = {}
            if backend == "sqlite":
                for name, spec in (("big", big_spec), ("small", small_spec)):
                    stores[name] = fs.cached_sqlite(spec, cache_dir=cache, fresh=args.fresh, log=rep.note)
            else:
                try:
                    server = fs.PgServer(cache / "pg", keep=not args.no_cache)
                except Exception as e:  # noqa: BLE001 - no PostgreSQL here: said, and the figure has no PG rows
                    rep.note(f"PostgreSQL skipped: {e}")
                    continue
                stack.callback(server.stop)
                rep.note(f"PostgreSQL {server.version} ({server.bindir}), data in {server.data}")
                for name, spec in (("big", big_spec), ("small", small_spec)):
                    stores[name] = fs.cached_pg(server, spec, fresh=args.fresh, log=rep.note)
            for name, b in stores.items():
                how = "reused from the cache" if b.reused else f"built in {b.seconds:.0f} s"
                rep.note(f"{backend} {name} store: {b.spec.describe()}, {b.size_bytes / 2**30:.2f} GiB, {how}")
                rep.extra["builds"][f"{backend}_{name}"] = {"seconds": b.seconds, "reused": b.reused,
                                                          "bytes": b.size_bytes, "timings": b.timings}
            measure(backend, stores, tmp / backend, words, args, rep)
    return rep.finish()


def measure(backend: str, stores: dict, tmp: Path, words: dict, args, rep: Report) -> None:
    from typer.testing import CliRunner

    from aigen.cli import app as cli_app
    from aigen.config import resolve_home

    pg = backend == "postgresql"
    homes, env = {}, {}
    for name, b in stores.items():
        if pg:
            homes[name] = resolve_home(tmp / f"home-{name}")
            homes[name].ensure()
            env[name] = {"AIGEN_DATABASE_URL": b.where}
        else:
            homes[name] = resolve_home(Path(b.where))
            env[name] = {"AIGEN_DATABASE_URL": None}
    if pg:
        log = PgQueryLog()
    else:
        log = benchlib.QueryLog()
    log.install()
    runner = CliRunner()
    user = fs.USER

    def status(name: str):
        home = homes[name]

        def run():
            res = runner.invoke(cli_app, ["--home", str(home.path), "status", "--user", user], env=env[name])
            if res.exit_code != 0 or user not in res.output:
                raise RuntimeError(f"aigen status --user failed ({res.exit_code}): {res.output[-500:]}")
        return run

    def open_store(name: str):
        if pg:
            from aigen.store.pg import PgStore

            return PgStore(stores[name].where)
        from aigen.store import Store

        return Store(homes[name].db_path)

    ug = {name: b.spec.user_generations for name, b in stores.items()}
    page_size = 10
    searches = {
        "search_typical": ("search: one word of typical frequency", {"q": words["typical"]}),
        "search_common": ("search: the most common word, Completed only, oldest first",
                          {"q": words["common"], "status": "Completed", "sort": "oldest"}),
        "search_two": ("search: two words", {"q": words["two_words"]}),
        "filter_deep": ("search: status and provider filters, no words, a deep page",
                        {"status": "Completed", "provider": "local", "sort": "oldest", "page": "middle"}),
    }
    galleries, clients = {}, {}
    try:
        for name in stores:
            galleries[name] = StoreGallery(homes[name], open_store(name))
            c = benchlib.HttpClient(galleries[name].port)
            c.login(user)
            clients[name] = c

        def get(name: str, params: dict):
            params = dict(params)
            if params.get("page") == "middle":
                params["page"] = str(max(1, ug[name] // page_size // 2))
            path = "/?" + urlencode(params) if params else "/"

            def run():
                code, _, body = clients[name].get(path)
                if code != 200 or b"<html" not in body[:200].lower():
                    raise RuntimeError(f"GET {path} on the {name} store: {code} {body[:300]!r}")
            return run

        login_times: dict[str, list[float]] = {n: [] for n in stores}

        def login(name: str):
            def run():
                c = benchlib.HttpClient(galleries[name].port)
                try:
                    login_times[name].append(c.post_login(user, c.csrf()))
                finally:
                    c.close()
            return run

        ops = {
            "status": ("aigen status --user X", "in-process (CliRunner): parse, open the store, query, print",
                       status),
            "page": ("gallery page 1 of X", "GET / over HTTP, logged in, one at a time", lambda n: get(n, {})),
            "page_deep": ("gallery page of X in the middle (the deepest)", "GET /?page=N over HTTP",
                          lambda n: get(n, {"page": "middle"})),
            "login": ("login path", "POST /login until its 303 (fresh session each)", login),
        }
        for key, (label, params) in searches.items():
            ops[key] = (label, "GET /?" + urlencode({k: v for k, v in params.items()}) + " over HTTP",
                        (lambda p: lambda n: get(n, p))(params))
        fns = {f"{key}|{name}": make(name) for key, (_, _, make) in ops.items() for name in stores}
        # The plans: every statement of one run of each operation, on the big store.
        plans = {}
        for key in ops:
            fn = fns[f"{key}|big"]
            fn()  # warm: templates compiled, connections open, sections cached
            with log.capture() as statements:
                fn()
            statements = list(statements)
            if pg:
                plans[key] = pg_explain(stores["big"].where, statements)
            else:
                plans[key] = benchlib.explain(homes["big"].db_path, statements)
        for v in login_times.values():
            v.clear()
        times = benchlib.interleaved(fns, args.repeat, warmup=1)
        for v in login_times.values():
            del v[: len(v) - args.repeat]  # the warm-up logins
    finally:
        for c in clients.values():
            c.close()
        for g in galleries.values():
            g.close()

    # A fresh process, for the record: what a user typing the command waits for.
    penv = dict(os.environ)
    penv["PYTHONPATH"] = str(benchlib.ROOT) + (os.pathsep + penv["PYTHONPATH"] if penv.get("PYTHONPATH") else "")
    penv.pop("AIGEN_HOME", None)
    penv.pop("AIGEN_DATABASE_URL", None)
    if pg:
        penv["AIGEN_DATABASE_URL"] = stores["big"].where
    py = sys.executable
    proc = benchlib.interleaved({
        "status": lambda: benchlib.run_timed([py, "-m", "aigen", "--home", str(homes["big"].path), "status",
                                              "--user", user], env=penv),
        "python": lambda: benchlib.run_timed([py, "-c", "pass"], env=penv),
    }, args.process_repeat, warmup=0 if args.quick else 1)
    ps, pp = Stats(proc["status"]), Stats(proc["python"])

    print(f"--- query plans ({backend}, big store) ---")
    for key, pl in plans.items():
        print(f"  [{ops[key][0]}]")
        benchlib.print_plans(pl)
    rep.extra["plans"][backend] = plans

    big = stores["big"].spec
    for key, (label, how, _) in ops.items():
        if key == "login":
            m, b = Stats(login_times["big"]), Stats(login_times["small"])
        else:
            m, b = Stats(times[f"{key}|big"]), Stats(times[f"{key}|small"])
        problems = sorted({pr for pl in plans[key] for pr in pl["problems"]})
        notes = [f"p99 {1000 * m.quantile(0.99):.1f} ms (baseline store {1000 * b.quantile(0.99):.1f} ms)",
                 f"distinct reads explained: {len(plans[key])}, "
                 + ("all use indexes" if not problems else "; ".join(problems))]
        if key == "status":
            notes.append(f"as a fresh process: {ps.describe('ms')}, "
                         f"{1000 * (ps.median - pp.median):.0f} ms over python -c pass (figure 3 covers start-up)")
        rep.add(Check(
            name=f"{backend}: {label}, {big.generations:,} generations ({big.user_generations:,} of X) / "
                 f"{big.events:,} events",
            measurement_label=f"big store, {how}", measurement=m, unit="ms",
            baseline_label=f"the same on the {args.small_factor}x smaller store", baseline=b,
            ratio=benchlib.ratio(m.median, b.median), ratio_label="big store / small store",
            target=f"median < {1000 * BUDGET_S:.0f} ms; no plan scans a big table or sorts many rows",
            met=m.median < BUDGET_S and not problems,
            notes=notes,
        ))


if __name__ == "__main__":
    sys.exit(main())
