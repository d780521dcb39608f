"""Figure 3, CLI start-up: `aigen --help`, and `aigen status` over a store with 10,000 generations.

Measurement: wall time of a fresh process, `python -m aigen --help` and
`python -m aigen --home H status` (the `aigen` console script runs the same
`aigen.__main__:main`; `-m` is used so the checkout is measured whether or not it
is installed). The store is built with the real schema and filled with
executemany (10,000 generations over 100 users, 10 assets each).

Baseline: `python -c pass`, the interpreter's own start-up, timed in the same
rounds (the order shuffled in each round), so the difference is what aigen adds.
Targets: `--help` at most 60 ms and `status` at most 150 ms over it (medians).

Every process runs with its bytecode cached, as an installed aigen's is (pip
compiles it; a checkout writes __pycache__ on first run): PYTHONDONTWRITEBYTECODE
is dropped and PYTHONPYCACHEPREFIX points into the run's temporary folder,
filled by the warm-up round, so nothing is written into the checkout. The same
commands with aigen's modules compiled at every start (no cache, as on a
machine that forbids writing .pyc) are timed in the same rounds and shown as
notes, and so is `--help` on a terminal narrower than 80 columns (where typer
prints it, not the snapshot: aigen/fasthelp.py).

    python bench/fig3_cli_startup.py             # about a minute
    python bench/fig3_cli_startup.py --quick     # a few seconds, numbers meaningless
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import Check, Report, Stats  # noqa: E402


def slowest_imports(cmd: list[str], env: dict, n: int = 6, runs: int = 3) -> list[tuple[str, float]]:
    """Top-level modules by cumulative import time (ms), from `python -X importtime`: each module's
    least time over a few runs, so that one descheduled run on a busy machine does not name the wrong one."""
    best: dict[str, float] = {}
    for _ in range(runs):
        proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True, env=env,
                              cwd=benchlib.ROOT)
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            _, _, rest = line.partition(":")
            parts = rest.split("|")
            if len(parts) != 3:
                continue
            name = parts[2].rstrip()
            if name.startswith("  "):  # nested: counted in its parent's cumulative time
                continue
            ms = int(parts[1]) / 1000
            best[name.strip()] = min(best.get(name.strip(), ms), ms)
    return sorted(best.items(), key=lambda x: -x[1])[:n]


HELP_BUDGET_S = 0.060
STATUS_BUDGET_S = 0.150


def main(argv=None) -> int:
    p = benchlib.parser(__doc__.split("\n\n")[0], repeat=30)
    p.add_argument("--generations", type=int, default=10_000)
    args = p.parse_args(argv)
    if args.quick:
        args.repeat, args.generations = 1, 200

    rep = Report("fig3_cli_startup", "Figure 3: CLI start-up", args, {
        "repeat": args.repeat, "generations": args.generations,
    })
    rep.header()
    py = sys.executable

    with benchlib.temp_dir("aigen-bench-fig3-") as tmp:
        base_env = dict(os.environ)
        base_env["PYTHONPATH"] = str(benchlib.ROOT) + (os.pathsep + base_env["PYTHONPATH"]
                                                       if base_env.get("PYTHONPATH") else "")
        base_env.pop("AIGEN_HOME", None)
        base_env["COLUMNS"] = "100"
        env = dict(base_env, PYTHONPYCACHEPREFIX=str(tmp / "pycache"))  # bytecode cached, outside the checkout
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        nocache = dict(base_env, PYTHONDONTWRITEBYTECODE="1")  # aigen's modules compiled at every start
        nocache.pop("PYTHONPYCACHEPREFIX", None)
        narrow = dict(env, COLUMNS="79")

        built = benchlib.build_store(tmp / "home", generations=args.generations, users=100,
                                     user_generations=args.generations // 100)
        rep.note(f"store: {built.describe()}")
        home = str(built.home.path)
        help_cmd = [py, "-m", "aigen", "--help"]
        status_cmd = [py, "-m", "aigen", "--home", home, "status"]
        cmds = {
            "baseline": ([py, "-c", "pass"], env),
            "help": (help_cmd, env),
            "status": (status_cmd, env),
            "status_user": ([*status_cmd, "--user", built.user], env),
            "baseline_nocache": ([py, "-c", "pass"], nocache),
            "help_nocache": (help_cmd, nocache),
            "status_nocache": (status_cmd, nocache),
            "help_typer": (help_cmd, narrow),
        }
        out = subprocess.run(status_cmd, capture_output=True, text=True, env=env, cwd=benchlib.ROOT)
        with sqlite3.connect(built.home.db_path) as conn:
            completed = conn.execute("SELECT count(*) FROM generations WHERE status = 'Completed'").fetchone()[0]
        # Its summary line counts every generation by status: proof it read the whole store, not an empty one.
        if out.returncode != 0 or f"{completed} completed" not in out.stdout:
            raise RuntimeError(f"aigen status did not list the store (exit {out.returncode}): "
                               f"{out.stdout[-600:]} {out.stderr[-600:]}")
        rep.note(f"aigen status prints {len(out.stdout.splitlines())} lines, ending: "
                 f"{out.stdout.strip().splitlines()[-1]!r}")
        snapshot = subprocess.run([py, "-m", "aigen.fasthelp"], capture_output=True, text=True, env=env,
                                  cwd=benchlib.ROOT)
        fast_help = snapshot.returncode == 0
        rep.note("aigen --help snapshot: " + ("current (printed without importing typer)" if fast_help else
                                              "STALE, so --help goes through typer: " + snapshot.stdout.strip()))
        times = benchlib.interleaved({k: (lambda c=c, e=e: benchlib.run_timed(c, env=e, cwd=benchlib.ROOT))
                                      for k, (c, e) in cmds.items()}, args.repeat, warmup=0 if args.quick else 1)
        base = Stats(times["baseline"])
        base_nc = Stats(times["baseline_nocache"])

        def over(key: str, against: Stats = base) -> str:
            s = Stats(times[key])
            return f"{s.describe('ms')}, {1000 * (s.median - against.median):+.0f} ms over the baseline"

        for key, label, budget in (("help", "aigen --help", HELP_BUDGET_S),
                                   ("status", "aigen status", STATUS_BUDGET_S)):
            m = Stats(times[key])
            diff = m.median - base.median
            notes = [f"aigen adds {1000 * diff:.0f} ms to the interpreter's start-up (median - median; "
                     f"IQR of the measurement {1000 * (m.q3 - m.q1):.0f} ms)"]
            if key == "help":
                notes.append("through typer (a terminal of 79 columns, where the snapshot is not used): "
                             + over("help_typer"))
            if key == "status":
                notes.append(f"aigen status --user {built.user} ({built.user_generations:,} generations): "
                             + over("status_user"))
            notes.append("without a bytecode cache (PYTHONDONTWRITEBYTECODE=1: aigen's modules compiled at every "
                         f"start; baseline {base_nc.describe('ms')}): " + over(f"{key}_nocache", base_nc))
            if not args.quick:
                top = [(name, ms) for name, ms in slowest_imports(cmds[key][0], env) if ms >= 3]
                notes.append("slowest top-level imports, cumulative (python -X importtime): "
                             + (", ".join(f"{name} {ms:.0f} ms" for name, ms in top) or "none over 3 ms"))
            rep.add(Check(
                name=f"{label}" + (f" over a store with {args.generations:,} generations" if key == "status" else ""),
                measurement_label=f"python -m aigen {'--help' if key == 'help' else '--home H status'} "
                                  "(fresh process, wall, bytecode cached)",
                measurement=m, unit="ms",
                baseline_label="python -c pass (fresh process, wall, same rounds)",
                baseline=base,
                ratio=benchlib.ratio(m.median, base.median), ratio_label="measurement / baseline",
                target=f"measurement - baseline <= {1000 * budget:.0f} ms",
                met=diff <= budget,
                notes=notes,
            ))
            rep.extra.setdefault("difference_ms", {})[key] = round(1000 * diff, 1)
            rep.extra.setdefault("difference_nocache_ms", {})[key] = round(
                1000 * (Stats(times[f"{key}_nocache"]).median - base_nc.median), 1)
        rep.extra["help_snapshot_current"] = fast_help
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
