"""Figure 3, CLI start-up: `aigen --help`, and `aigen status` over a store with 10,000 generations.

Measurement: wall time of a fresh process, `python -m aigen --help` and
`python -m aigen --home H status` (the `aigen` console script runs the same
`aigen.cli:main`; `-m` is used so the checkout is measured whether or not it
is installed). The store is built with the real schema and filled with
executemany (10,000 generations over 100 users, 10 assets each).

Baseline: `python -c pass`, the interpreter's own start-up, timed in the same
rounds (the order shuffled in each round), so the difference is what aigen adds.

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


def slowest_imports(cmd: list[str], env: dict, n: int = 6) -> list[tuple[str, float]]:
    """Top-level modules by cumulative import time (ms), from `python -X importtime`."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True, env=env,
                          cwd=benchlib.ROOT)
    top = []
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
        top.append((name.strip(), int(parts[1]) / 1000))
    return sorted(top, key=lambda x: -x[1])[:n]


def main(argv=None) -> int:
    p = benchlib.parser(__doc__.split("\n\n")[0], repeat=20)
    p.add_argument("--generations", type=int, default=10_000)
    args = p.parse_args(argv)
    if args.quick:
        args.repeat, args.generations = 1, 200

    rep = Report("fig3_cli_startup", "Figure 3: CLI start-up", args, {
        "repeat": args.repeat, "generations": args.generations,
    })
    rep.header()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(benchlib.ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("AIGEN_HOME", None)
    env.setdefault("COLUMNS", "100")
    py = sys.executable

    with benchlib.temp_dir("aigen-bench-fig3-") as tmp:
        built = benchlib.build_store(tmp / "home", generations=args.generations, users=100,
                                     user_generations=args.generations // 100)
        rep.note(f"store: {built.describe()}")
        home = str(built.home.path)
        cmds = {
            "baseline": [py, "-c", "pass"],
            "help": [py, "-m", "aigen", "--help"],
            "status": [py, "-m", "aigen", "--home", home, "status"],
            "status_user": [py, "-m", "aigen", "--home", home, "status", "--user", built.user],
        }
        out = subprocess.run(cmds["status"], capture_output=True, text=True, env=env, cwd=benchlib.ROOT)
        with sqlite3.connect(built.home.db_path) as conn:
            completed = conn.execute("SELECT count(*) FROM generations WHERE status = 'Completed'").fetchone()[0]
        # Its summary line counts every generation by status: proof it read the whole store, not an empty one.
        if out.returncode != 0 or f"{completed} completed" not in out.stdout:
            raise RuntimeError(f"aigen status did not list the store (exit {out.returncode}): "
                               f"{out.stdout[-600:]} {out.stderr[-600:]}")
        rep.note(f"aigen status prints {len(out.stdout.splitlines())} lines, ending: "
                 f"{out.stdout.strip().splitlines()[-1]!r}")
        times = benchlib.interleaved({k: (lambda c=c: benchlib.run_timed(c, env=env, cwd=benchlib.ROOT))
                                      for k, c in cmds.items()}, args.repeat, warmup=0 if args.quick else 1)
        base = Stats(times["baseline"])
        for key, label, budget in (("help", "aigen --help", 0.200), ("status", "aigen status", 0.400)):
            m = Stats(times[key])
            diff = m.median - base.median
            notes = [f"aigen adds {1000 * diff:.0f} ms to the interpreter's start-up"]
            if not args.quick:
                top = [(name, ms) for name, ms in slowest_imports(cmds[key], env) if ms >= 5]
                notes.append("slowest top-level imports, cumulative (python -X importtime): "
                             + ", ".join(f"{name} {ms:.0f} ms" for name, ms in top))
            if key == "status":
                su = Stats(times["status_user"])
                notes.append(f"aigen status --user {built.user} ({built.user_generations:,} generations): "
                             f"{su.describe('ms')}, {1000 * (su.median - base.median):.0f} ms over the baseline")
            rep.add(Check(
                name=f"{label}" + (f" over a store with {args.generations:,} generations" if key == "status" else ""),
                measurement_label=f"python -m aigen {'--help' if key == 'help' else '--home H status'} "
                                  "(fresh process, wall)",
                measurement=m, unit="ms",
                baseline_label="python -c pass (fresh process, wall)",
                baseline=base,
                ratio=benchlib.ratio(m.median, base.median), ratio_label="measurement / baseline",
                target=f"measurement - baseline <= {1000 * budget:.0f} ms",
                met=diff <= budget,
                notes=notes,
            ))
            rep.extra.setdefault("difference_ms", {})[key] = round(1000 * diff, 1)
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
