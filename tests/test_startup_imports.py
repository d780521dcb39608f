"""Start-up of the embedded CLI: what `aigen --help` and `aigen status` import, and the shortcuts that keep it so.

Not timings (bench/fig3_cli_startup.py measures those): these fail when a change makes `aigen --help` or
`aigen status` import something heavy it does not use, or when a shortcut (the --help snapshot, plain option
coercion without pydantic, the store without sqlite-utils) stops giving exactly what the slow path gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Never needed to print the help or to list generations. Top-level packages, plus aigen modules.
FORBIDDEN = (
    "PIL", "numpy", "av", "openai", "runwayml", "bottle", "waitress", "sqlalchemy", "psycopg", "dbos",
    "boto3", "botocore", "requests", "urllib3", "plyer",
    "pydantic", "pydantic_core",  # typer's adapters (aigen.cli.params answers plain values without them)
    "sqlite_utils", "click", "pluggy",  # sqlite-utils and what it imports (the store reads with sqlite3)
)
FORBIDDEN_AIGEN = ("aigen.pipeline.run", "aigen.providers", "aigen.media", "aigen.web", "aigen.cluster",
                   "aigen.notify", "aigen.storage", "aigen.store.pg", "aigen.store.migrate_home")

RUN = """
import json, sys
from aigen.__main__ import main  # what `aigen` and `python -m aigen` run
code = 0
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
sys.stderr.write("\\nMODULES " + json.dumps({"code": code, "modules": sorted(sys.modules)}) + "\\n")
"""


def run_cli(args, *, columns=100, env=None):
    """Run the console script's main(args) in a fresh interpreter: (exit code, stdout, stderr, imported modules)."""
    env = dict(os.environ if env is None else env)
    env["COLUMNS"] = str(columns)
    p = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, env=env, timeout=60)
    err, _, tail = p.stderr.rpartition("\nMODULES ")
    assert tail, p.stderr
    info = json.loads(tail)
    return info["code"] or 0, p.stdout, err, set(info["modules"])


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules
                  if m.split(".")[0] in FORBIDDEN or any(m == a or m.startswith(a + ".") for a in FORBIDDEN_AIGEN))


@pytest.fixture
def store_home(home):
    """A home whose store holds a few generations (a listing goes through the store and Rich's table)."""
    from aigen.config import resolve_home
    from aigen.store import Store

    h = resolve_home(None)
    h.ensure()
    store = Store(h.db_path)
    ids = [store.create_generation({"user_id": f"u{i % 2}", "prompt": f"prompt {i}", "image_count": 1,
                                    "video_count": 0},
                                   [{"kind": "image", "idx": 1, "provider": "local", "model": "m", "seed": i,
                                     "width": 64, "height": 64}])
           for i in range(3)]
    store.close()
    return h, ids


def test_help_imports_neither_typer_nor_anything_heavy():
    code, out, _, modules = run_cli(["--help"])
    assert code == 0 and out.startswith("Usage: aigen [OPTIONS] COMMAND [ARGS]...")
    assert heavy(modules) == []
    assert "typer" not in modules and "rich" not in modules  # the snapshot answered


def test_help_on_a_narrow_terminal_is_typer_s_and_imports_nothing_heavy():
    code, out, _, modules = run_cli(["--help"], columns=60)
    assert code == 0 and "typer" in modules  # narrower than 80 columns: typer wraps it itself
    assert heavy(modules) == [] and "rich" not in modules


@pytest.mark.parametrize("args", [
    ["status"],
    ["status", "--json"],
    ["status", "--user", "u1", "--limit", "2"],
    ["status", "--status", "processing"],
    ["status", "ID"],
    ["status", "ID", "--json"],
    ["status", "--help"],
])
def test_status_imports_nothing_heavy(store_home, args):
    h, ids = store_home
    args = [ids[0] if a == "ID" else a for a in args]
    code, out, err, modules = run_cli(args)
    assert code == 0, err
    assert any(i in out for i in ids) if args[-1] != "--help" else "Usage: aigen status" in out
    assert heavy(modules) == []


def test_status_of_a_fresh_home_and_a_bad_value_import_nothing_heavy(home):
    code, out, _, modules = run_cli(["status"])
    assert code == 0 and "No generations yet" in out and heavy(modules) == []
    assert not home.exists()  # asking wrote nothing
    code, _, err, modules = run_cli(["status", "--limit", "abc"])  # typer's own message, from its adapter
    assert code == 2 and "Invalid value for '--limit'" in err and "valid integer" in err


# -- the --help snapshot ---------------------------------------------------------------------------------------

def _typer_help(columns: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS=str(columns))
    return subprocess.run([sys.executable, "-c", "from aigen.cli import main; main(['--help'])"],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("columns", [60, 79, 80, 81, 200])
def test_help_is_exactly_what_typer_prints(columns):
    typer_made = _typer_help(columns)
    code, out, err, _ = run_cli(["--help"], columns=columns)
    assert (code, out, err) == (typer_made.returncode, typer_made.stdout, typer_made.stderr) == (0, out, "")


def test_help_snapshot_is_current():
    import typer

    from aigen import _help_snapshot, fasthelp

    if _help_snapshot.TYPER_VERSION != typer.__version__:
        pytest.skip(f"the snapshot was made with typer {_help_snapshot.TYPER_VERSION}, typer {typer.__version__} "
                    "is installed: `aigen --help` goes through typer (remake it: python -m aigen.fasthelp --write)")
    assert fasthelp.is_current(), ("aigen/cli changed since the --help snapshot was made, so `aigen --help` "
                                   "imports typer again: run `python -m aigen.fasthelp --write` and commit it")
    assert _help_snapshot.TEXT == _typer_help(80).stdout


def test_a_stale_snapshot_is_never_shown(monkeypatch):
    from aigen import _help_snapshot, fasthelp

    monkeypatch.setenv("COLUMNS", "100")
    assert fasthelp.snapshot_help() == _help_snapshot.TEXT or not fasthelp.is_current()
    monkeypatch.setattr(_help_snapshot, "FINGERPRINT", "0-0-00000000")
    assert fasthelp.snapshot_help() is None
    monkeypatch.setattr(fasthelp, "_typer_init", lambda: None)  # typer not found: no fingerprint
    assert fasthelp.fingerprint() is None and not fasthelp.is_current()


@pytest.mark.parametrize("columns,lines", [(None, None), ("100", None), ("79", "30"), ("0", "0"), ("x", "y"),
                                           ("-5", "10"), ("81", "0")])
def test_terminal_columns_is_shutil_s(monkeypatch, columns, lines):
    import shutil

    from aigen.fasthelp import terminal_columns

    for var, value in (("COLUMNS", columns), ("LINES", lines)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    assert terminal_columns() == shutil.get_terminal_size().columns


# -- plain option values without pydantic ----------------------------------------------------------------------

def _typer_param(annotation, **option):
    """A real typer option of this type, as typer builds it (its runtime coercion not built yet)."""
    import typer

    app = typer.Typer()

    if annotation is str:
        def cmd(v: str = typer.Option("d", "--v", **option)): pass
    elif annotation is int:
        def cmd(v: int = typer.Option(0, "--v", **option)): pass
    elif annotation is float:
        def cmd(v: float = typer.Option(0.0, "--v", **option)): pass
    else:
        def cmd(v: bool = typer.Option(False, "--v", **option)): pass
    app.command()(cmd)
    app.command("other")(lambda: None)
    command = typer.main.get_command(app)
    param = command.commands["cmd"].params[0]
    return command, param


VALUES = {
    str: ["", "x", "héllo", "a\udcff", " 5 ", 5, b"bytes", None],
    int: [0, 7, -3, 2**70, "0", "7", "-7", "007", "-0", "+5", " 5", "5 ", "1_000", "5.0", "5.5", "abc", "٣", "",
          "-", "123456789012345678", "1234567890123456789", True, 5.0, None],
    float: [0.0, 1.5, float("inf"), "1.5", "abc", 2, None],
    bool: [True, False, "true", "no", "1", "", "maybe", None],
}


@pytest.mark.parametrize("annotation", [str, int, float, bool])
def test_plain_values_coerce_exactly_as_typer_s_adapter(annotation):
    pytest.importorskip("typer._coercion")
    import copy

    from typer._coercion import build_runtime_param

    from aigen.cli.params import PlainRuntimeParam, is_plain

    command, param = _typer_param(annotation)
    ctx = command.make_context("x", ["cmd"], resilient_parsing=True)
    assert is_plain(param)

    def outcome(runtime, p, value):
        try:
            result = runtime.coerce(value, param=p, ctx=ctx)
            return "ok", type(result), result
        except Exception as e:  # typer's BadParameter: compare the message the user sees
            return "error", type(e).__name__, e.format_message() if hasattr(e, "format_message") else str(e)

    for value in VALUES[annotation]:
        theirs = build_runtime_param(param.type_descriptor)
        mine_param = copy.copy(param)
        mine = PlainRuntimeParam(parameter_info=param.type_descriptor.parameter_info, annotation=annotation)
        assert outcome(mine, mine_param, value) == outcome(theirs, param, value), value


def test_only_plain_parameters_skip_typer_s_adapter():
    pytest.importorskip("typer._coercion")
    from aigen.cli.params import is_plain

    assert is_plain(_typer_param(int)[1]) and is_plain(_typer_param(str)[1])
    assert not is_plain(_typer_param(int, min=1)[1])
    assert not is_plain(_typer_param(int, max=5, clamp=True)[1])
    assert not is_plain(_typer_param(str, parser=str.upper)[1])


def test_every_aigen_command_gets_plain_coercion_where_it_can():
    pytest.importorskip("typer._coercion")
    import typer

    from aigen.cli import app
    from aigen.cli.params import PlainRuntimeParam, is_plain

    command = typer.main.get_command(app)
    status = command.commands["status"]
    limit = next(p for p in status.params if p.name == "limit")
    assert isinstance(limit._runtime_param, PlainRuntimeParam)
    ctx = status.make_context("status", [], parent=command.make_context("aigen", ["status"], resilient_parsing=True))
    assert isinstance(status.get_help_option(ctx)._runtime_param, PlainRuntimeParam)
    # Lists (generate --image-option) keep typer's adapter.
    options = next(p for p in command.commands["generate"].params if p.name == "image_option")
    assert not is_plain(options) and options._runtime_param is None


# -- the store reads without sqlite-utils ----------------------------------------------------------------------

def test_pending_migrations_read_with_sql_are_sqlite_utils_s(tmp_path):
    import sqlite_utils

    from aigen.store import Store
    from aigen.store.core import pending_migrations
    from aigen.store.migrations import migrations

    db = sqlite_utils.Database(str(tmp_path / "new.db"))
    assert pending_migrations(db.conn) == [m.name for m in migrations.pending(db)] == migrations.names()
    old = tmp_path / "old.db"
    db = sqlite_utils.Database(str(old))
    migrations.real().apply(db, stop_before="0005_listing_indexes")
    assert pending_migrations(db.conn) == [m.name for m in migrations.pending(db)]
    assert pending_migrations(db.conn)[0] == "0005_listing_indexes"
    db.close()
    store = Store(old)  # upgrades it
    assert pending_migrations(store.db.conn) == [] == migrations.pending(store.db)
    assert store.applied_migrations() == migrations.names()


def test_the_console_script_is_the_one_with_the_fast_path():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '\naigen = "aigen.__main__:main"\n' in text
    code, out, _, modules = run_cli(["--version"])  # everything else still goes through typer
    assert code == 0 and out.startswith("aigen ") and "typer" in modules and heavy(modules) == []
