"""Run every benchmark, one after another, then print one table of all their checks.

    python bench/run_all.py                 # about 7 minutes on 2 cores (figure 5's stores built first)
    python bench/run_all.py --quick         # seconds: proves every script runs
    python bench/run_all.py --only fig1,fig3
    python bench/run_all.py --table-only    # just the table, from the last results

Each script prints its own block and writes bench/results/<figure>.json; the
table (Markdown) is what the README's "Performance" section shows. Scripts run
in sequence, never together: on a 2-core machine they would measure each other.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

SCRIPTS = [
    ("fig1", "fig1_orchestration"),
    ("fig2", "fig2_local_renderer"),
    ("fig3", "fig3_cli_startup"),
    ("fig4", "fig4_gallery"),
    ("fig5", "fig5_scale"),
    ("fig6", "fig6_cluster"),
]


def _value(d: dict, unit: str) -> str:
    if "value" in d:
        v = d["value"]
        have = unit
    else:
        v = d["median"]
        have = d["unit"]
    if have in ("s", "ms", "us") and unit in ("s", "ms", "us"):
        v = v * {"s": 1.0, "ms": 1e-3, "us": 1e-6}[have] / {"s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]
    text = benchlib.fmt_value(v, unit)
    return text if "value" in d else f"{text} (median of {d['n']})"


def table(results: list[dict]) -> str:
    """A Markdown table of every check, then what each measurement and baseline is."""
    rows = ["| figure | measurement | baseline | ratio | target | met? |", "|---|---|---|---|---|---|"]
    legend = []
    for res in results:
        fig = res["figure"].split("_", 1)[0].replace("fig", "")
        for c in res["checks"]:
            unit = c.get("display_unit", "s")
            m, b = _value(c["measurement"], unit), _value(c["baseline"], unit)
            rows.append(f"| {fig}. {c['name']} | {m} | {b} | {c['ratio']:.2f}x | {c['target']} | "
                        f"{'yes' if c['met'] else '**no**'} |")
            legend.append(f"- {fig}. {c['name']}: measurement = {c['measurement_label']}; baseline = "
                          f"{c['baseline_label']}; ratio = {c['ratio_label']}")
    return "\n".join(rows + [""] + legend)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every script")
    p.add_argument("--only", help="comma-separated: fig1,fig2,...")
    p.add_argument("--results-dir", default=str(benchlib.RESULTS_DIR))
    p.add_argument("--table-only", action="store_true", help="do not run anything; print the table of the last results")
    args = p.parse_args(argv)
    chosen = [s for s in SCRIPTS if not args.only or s[0] in args.only.split(",")]
    if not chosen:
        p.error(f"--only {args.only!r} names none of {', '.join(k for k, _ in SCRIPTS)}")
    failed = []
    if not args.table_only:
        for key, name in chosen:
            cmd = [sys.executable, str(Path(__file__).with_name(name + ".py")), "--results-dir", args.results_dir]
            if args.quick:
                cmd.append("--quick")
            t0 = time.perf_counter()
            rc = subprocess.call(cmd)
            print(f"[run_all] {name}: exit {rc} after {time.perf_counter() - t0:.0f} s\n", flush=True)
            if rc != 0:
                failed.append(name)
    results = []
    for _, name in chosen:
        path = Path(args.results_dir) / f"{name}{'-quick' if args.quick else ''}.json"
        if path.exists() and name not in failed:
            results.append(json.loads(path.read_text()))
    if results:
        print(table(results))
        missed = [c["name"] for r in results for c in r["checks"] if not c["met"]]
        print(f"\n{sum(len(r['checks']) for r in results) - len(missed)} met, {len(missed)} missed"
              + (f": {'; '.join(missed)}" if missed else ""))
    if failed:
        print(f"[run_all] failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
