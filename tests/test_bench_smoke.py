"""The benchmarks still run: each bench/ script with --quick (tiny sizes) prints its ratio lines and writes its JSON.

Only that they run and report is checked, never a timing: the numbers of a
--quick run mean nothing, and the machines are noisy. The scripts run as
subprocesses (they register fake providers and trace SQL, which must not leak
into this test process), all at once, so the whole file takes a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SCRIPTS = ["fig1_orchestration", "fig2_local_renderer", "fig3_cli_startup", "fig4_gallery", "fig5_scale",
           "fig6_cluster"]


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench-results")
    env = dict(os.environ)
    env.pop("AIGEN_HOME", None)
    procs = {
        name: subprocess.Popen([sys.executable, str(BENCH / f"{name}.py"), "--quick", "--results-dir", str(out_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for name in SCRIPTS
    }
    runs = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        runs[name] = (proc.returncode, stdout, stderr)
    return out_dir, runs


@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_script_runs_and_prints_its_ratios(quick_runs, name):
    out_dir, runs = quick_runs
    code, stdout, stderr = runs[name]
    assert code == 0, f"{name} exited {code}:\n{stdout[-2000:]}\n{stderr[-3000:]}"
    checks = re.findall(r"^-- (.+)$", stdout, re.MULTILINE)
    ratios = re.findall(r"^  ratio:\s+(\d+\.\d\d)x \(", stdout, re.MULTILINE)
    results = re.findall(r"^  result:\s+(MET|MISSED)$", stdout, re.MULTILINE)
    assert checks, f"{name} printed no check:\n{stdout[-2000:]}"
    assert len(ratios) == len(checks) == len(results), stdout[-3000:]
    assert re.search(r"^  measurement: .+$", stdout, re.MULTILINE)
    assert re.search(r"^  baseline: .+$", stdout, re.MULTILINE)

    data = json.loads((out_dir / f"{name}-quick.json").read_text())
    assert data["figure"] == name and data["quick"] is True
    assert [c["name"] for c in data["checks"]] == checks
    for c in data["checks"]:
        assert c["ratio"] > 0 and isinstance(c["met"], bool)
        assert ("median" in c["measurement"]) or ("value" in c["measurement"])


def test_run_all_tabulates_every_check(quick_runs):
    out_dir, runs = quick_runs
    if any(code != 0 for code, _, _ in runs.values()):
        pytest.skip("a bench script failed: reported by its own test")
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--table-only", "--results-dir",
                           str(out_dir)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if re.match(r"^\| \d\. ", line)]
    expected = sum(len(json.loads((out_dir / f"{n}-quick.json").read_text())["checks"]) for n in SCRIPTS)
    assert len(rows) == expected, proc.stdout
    assert re.search(r"^\d+ met, \d+ missed", proc.stdout, re.MULTILINE)
