"""Figure 5, scale: 100,000 generations, 1,000,000 assets and 1,000,000 events.

Measurement, on that store (real schema, every migration, filled with
executemany; 10,000 of the generations belong to the user asked about, the rest
to 999 others, interleaved in time):
  - `aigen status --user X`: the command run in-process (typer's CliRunner, so
    the same parsing, Store opening, queries and table printing, without the
    interpreter's start-up, which figure 3 covers); also as a fresh process;
  - the gallery page of that user: GET / over HTTP from the real app under
    waitress on 127.0.0.1, logged in (a keep-alive connection, one request at a
    time);
  - the login path: POST /login (user_id and CSRF token, on loopback) until
    its 303, each with a fresh session; GET /login before it is not timed.
Every statement these run is recorded (sqlite3 trace callback) and its
EXPLAIN QUERY PLAN printed; a plan that scans a big table without an index, or
sorts a big table's rows with a temporary B-tree (ORDER BY or GROUP BY), is flagged.

Baseline: the same operations, timed in the same rounds, on a store 100 times
smaller (1,000 generations, 10,000 assets, 10,000 events), so the ratio shows
how each grows with the data.

    python bench/fig5_scale.py                 # about 2 minutes (half of it building the store)
    python bench/fig5_scale.py --reuse DIR     # keep the big store in DIR and reuse it next time
    python bench/fig5_scale.py --quick         # a few seconds, numbers meaningless
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import Check, Report, Stats  # noqa: E402

BUDGET_S = 0.050


def build_or_reuse(path: Path, spec: dict, rep: Report) -> benchlib.BuiltStore:
    """Build the store at `path`, or reuse the one a previous run left there with the same spec."""
    marker = path / "bench-spec.json"
    if marker.exists() and json.loads(marker.read_text()).get("spec") == spec:
        from aigen.config import resolve_home

        saved = json.loads(marker.read_text())
        rep.note(f"reusing the store in {path}")
        return benchlib.BuiltStore(resolve_home(path), saved["user"], spec["generations"],
                                   spec["user_generations"], saved["assets"], spec["events"], 0.0)
    if path.exists() and any(path.iterdir()):
        raise SystemExit(f"{path} exists and is not a store this script built with these sizes: "
                         "give an empty or new directory")
    built = benchlib.build_store(path, **spec)
    marker.write_text(json.dumps({"spec": spec, "user": built.user, "assets": built.assets}))
    return built


def main(argv=None) -> int:
    p = benchlib.parser(__doc__.split("\n\n")[0], repeat=40)
    p.add_argument("--generations", type=int, default=100_000)
    p.add_argument("--user-generations", type=int, default=10_000)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--assets-per-generation", type=int, default=10)
    p.add_argument("--small-factor", type=int, default=100, help="the baseline store is this many times smaller")
    p.add_argument("--process-repeat", type=int, default=10, help="runs of `aigen status --user` as a process")
    p.add_argument("--reuse", metavar="DIR", help="build the big store in DIR once and reuse it")
    args = p.parse_args(argv)
    if args.quick:
        args.generations, args.user_generations, args.users, args.events = 2000, 200, 20, 20_000
        args.small_factor, args.repeat, args.process_repeat = 10, 3, 1

    rep = Report("fig5_scale", "Figure 5: scale (status, gallery page and login on a big store)", args, {
        "generations": args.generations, "user_generations": args.user_generations, "users": args.users,
        "events": args.events, "assets_per_generation": args.assets_per_generation,
        "small_factor": args.small_factor, "repeat": args.repeat,
    })
    rep.header()
    from typer.testing import CliRunner

    from aigen.cli import app as cli_app

    log = benchlib.QueryLog()
    log.install()
    f = args.small_factor
    big_spec = dict(generations=args.generations, users=args.users, user_generations=args.user_generations,
                    assets_per_gen=args.assets_per_generation, events=args.events)
    small_spec = dict(generations=max(args.generations // f, 10), users=max(args.users // f, 2),
                      user_generations=max(args.user_generations // f, 1), assets_per_gen=args.assets_per_generation,
                      events=args.events // f)

    with benchlib.temp_dir("aigen-bench-fig5-") as tmp:
        big = build_or_reuse(Path(args.reuse) if args.reuse else tmp / "big", big_spec, rep)
        small = benchlib.build_store(tmp / "small", **small_spec)
        rep.note(f"big store: {big.describe()}")
        rep.note(f"baseline store: {small.describe()}")
        from aigen.store import Store

        # Opening it applies any migration the build did not have (a reused store from before one).
        Store(big.home.db_path).close()
        rep.note(f"big store file: {big.home.db_path.stat().st_size / 2**20:.0f} MiB")
        runner = CliRunner()

        def status(built: benchlib.BuiltStore):
            def run():
                res = runner.invoke(cli_app, ["--home", str(built.home.path), "status", "--user", built.user])
                if res.exit_code != 0 or built.user not in res.output:
                    raise RuntimeError(f"aigen status --user failed ({res.exit_code}): {res.output[-500:]}")
            return run

        galleries: dict[str, benchlib.Gallery] = {}
        clients: dict[str, benchlib.HttpClient] = {}
        try:
            for name, b in (("big", big), ("small", small)):
                galleries[name] = benchlib.Gallery(b.home)
            for name, b in (("big", big), ("small", small)):
                c = benchlib.HttpClient(galleries[name].port)
                c.login(b.user)
                clients[name] = c

            def page(name: str):
                def run():
                    status_code, _, body = clients[name].get("/")
                    if status_code != 200 or b"<html" not in body[:200].lower():
                        raise RuntimeError(f"GET / on the {name} store: {status_code} {body[:300]!r}")
                return run

            login_times: dict[str, list[float]] = {"big": [], "small": []}

            def login(name: str, built: benchlib.BuiltStore):
                def run():
                    c = benchlib.HttpClient(galleries[name].port)
                    try:
                        login_times[name].append(c.post_login(built.user, c.csrf()))
                    finally:
                        c.close()
                return run

            fns = {
                "status_big": status(big), "status_small": status(small),
                "page_big": page("big"), "page_small": page("small"),
                "login_big": login("big", big), "login_small": login("small", small),
            }
            # The plans: every statement of one run of each operation, on the big store.
            plans = {}
            for key, label in (("status_big", "aigen status --user"), ("page_big", "gallery page"),
                               ("login_big", "GET /login + POST /login")):
                fns[key]()  # warm: templates compiled, connections open
                with log.capture() as statements:
                    fns[key]()
                plans[label] = benchlib.explain(big.home.db_path, list(statements))
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
        env = dict(os.environ)
        env["PYTHONPATH"] = str(benchlib.ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("AIGEN_HOME", None)
        py = sys.executable
        proc = benchlib.interleaved({
            "status": lambda: benchlib.run_timed([py, "-m", "aigen", "--home", str(big.home.path), "status",
                                                  "--user", big.user], env=env),
            "python": lambda: benchlib.run_timed([py, "-c", "pass"], env=env),
        }, args.process_repeat, warmup=0 if args.quick else 1)
        ps, pp = Stats(proc["status"]), Stats(proc["python"])

        print("--- query plans (big store) ---")
        for label, pl in plans.items():
            print(f"  [{label}]")
            benchlib.print_plans(pl)
        rep.extra["plans"] = plans

        specs = (
            ("status", "aigen status --user X", "in-process (CliRunner): parse, open the store, query, print",
             times["status_big"], times["status_small"], "aigen status --user"),
            ("page", "gallery page of X", "GET / over HTTP, logged in, one at a time",
             times["page_big"], times["page_small"], "gallery page"),
            ("login", "login path", "POST /login until its 303 (fresh session each)",
             login_times["big"], login_times["small"], "GET /login + POST /login"),
        )
        for key, name, how, big_t, small_t, plan_key in specs:
            m, b = Stats(big_t), Stats(small_t)
            problems = sorted({pr for pl in plans[plan_key] for pr in pl["problems"]})
            notes = [f"p99 {1000 * m.quantile(0.99):.1f} ms (baseline store {1000 * b.quantile(0.99):.1f} ms)",
                     f"distinct reads explained: {len(plans[plan_key])}, "
                     + ("all use indexes" if not problems else "; ".join(problems))]
            if key == "status":
                notes.append(f"as a fresh process: {ps.describe('ms')}, "
                             f"{1000 * (ps.median - pp.median):.0f} ms over python -c pass (figure 3 covers start-up)")
            rep.add(Check(
                name=f"{name} with {big.generations:,} generations / {big.events:,} events",
                measurement_label=f"big store, {how}", measurement=m, unit="ms",
                baseline_label=f"the same on the {f}x smaller store", baseline=b,
                ratio=benchlib.ratio(m.median, b.median), ratio_label="big store / small store",
                target=f"median < {1000 * BUDGET_S:.0f} ms; no plan scans a big table or sorts (ORDER/GROUP BY)",
                met=m.median < BUDGET_S and not problems,
                notes=notes,
            ))
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
