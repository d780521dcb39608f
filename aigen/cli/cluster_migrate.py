"""`aigen cluster migrate --from HOME`: copy an embedded home into the configured cluster.

The work is done by aigen.store.migrate_home; this module opens both sides, draws the
progress bar and prints the final count check.
"""

from __future__ import annotations


import typer

from aigen.cli.output import console, err_console, escape, fail, human_bytes, print_json
from aigen.errors import AigenError, BadInput


def _open_target(state):
    """The configured store: PostgreSQL with AIGEN_DATABASE_URL, else this home's SQLite."""
    try:
        from aigen.store import open_store
    except ImportError:  # before the PostgreSQL store existed: the embedded store of this home
        from aigen.store.core import Store

        state.home.ensure()
        return Store(state.home.db_path)
    state.home.ensure()
    return open_store(state.home)


def _check_source_idle(src_home) -> None:
    """Refuse a home that is in use: a run or a notify daemon would go on writing it during the copy."""
    from aigen.locks import is_held

    locks = src_home.path / "locks"
    if not locks.is_dir():
        return
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - no file locks: cannot tell
        return
    busy = sorted(p.name for p in locks.glob("*.lock") if is_held(p))
    if busy:
        raise BadInput(
            f"the home {src_home.path} is in use ({', '.join(busy[:3])}{', ...' if len(busy) > 3 else ''} held): "
            "a run or a notify daemon is still writing it",
            hint="let runs finish and stop the notify daemon (and the gallery), then migrate again")


def migrate(
    ctx: typer.Context,
    from_home: str = typer.Option(..., "--from", help="The embedded home to copy (its aigen.db and "
                                  "generated_content/); opened read-only, never modified.", metavar="HOME"),
    as_json: bool = typer.Option(False, "--json", help="Print the final count check as JSON."),
) -> None:
    """Copy an embedded home (rows and files) into the cluster: the store of AIGEN_DATABASE_URL and the
    storage of AIGEN_STORAGE_URL.

    Copied: users (with access codes), generations, assets, notifications, events and used magic links,
    with their ids; every file under generated_content/ of each generation, checked against the size and
    SHA-256 of its assets row before and after the upload. A generation's rows are written only once all
    its files are in place. Gallery sessions are not copied (users log in again).

    Idempotent and resumable: a row already in the cluster is kept as it is and a verified file is not
    uploaded again, so running it twice gives the same counts and an interrupted run completes when run
    again. Ids that clash with other rows of the cluster stop it before anything is written.

    Exit codes: 0 when every row and file of the home is in the cluster; 1 when some are not (the count
    check says which) or a service failed; 2 for bad input.
    """
    from pathlib import Path

    from aigen.config import Home
    from aigen.store.core import check_database_file
    from aigen.store.migrate_home import SourceStore, migrate_home

    state = ctx.obj
    try:
        if not from_home.strip():
            raise BadInput("invalid --from '': give the home directory to copy")
        src_home = Home(Path(from_home).expanduser().resolve(), "--from")
        if not src_home.path.is_dir():
            raise BadInput(f"invalid --from {from_home!r}: {src_home.path} is not a directory")
        if not check_database_file(src_home.db_path):
            raise BadInput(f"invalid --from {from_home!r}: {src_home.db_path} does not exist (not an aigen home)")
        _check_source_idle(src_home)
        source = SourceStore.open(src_home.db_path)
        target = _open_target(state)
        if getattr(target, "backend", "sqlite") == "sqlite" and \
                Path(target.path).resolve() == src_home.db_path.resolve():
            raise BadInput(f"--from {from_home!r} is the home this command would copy into",
                           hint="set AIGEN_DATABASE_URL (and AIGEN_STORAGE_URL) to the cluster, see the README")
        from aigen.storage import from_config

        storage = from_config(state.home.path)
    except AigenError as e:
        fail(e, as_json=as_json)

    where = "PostgreSQL" if getattr(target, "backend", "sqlite") == "postgresql" else f"the store {target.path}"
    if not as_json:
        err_console.print(f"Copying {escape(str(src_home.path))} into {escape(where)}, files to "
                          f"{escape(storage.describe())}")
    try:
        with _ProgressBar(enabled=not as_json) as bar:
            report = migrate_home(src_home.path, source, target, storage, progress=bar)
    except AigenError as e:
        fail(e, as_json=as_json)
    finally:
        source.close()

    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


class _ProgressBar:
    """A Rich progress bar (on stderr): bytes of files, and rows."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)

            self._p = Progress(TextColumn("{task.description:<6}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[extra]}"), TimeRemainingColumn(), console=err_console.real,
                               transient=False)
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def start(self, rows: int, files: int, nbytes: int) -> None:
        if self._p is None:
            return
        self._files = self._p.add_task("files", total=files, extra="")
        self._rows = self._p.add_task("rows", total=rows, extra="")
        self._bytes_total = nbytes
        self._bytes = 0
        self._uploaded = 0

    def rows(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._rows, n)

    def file(self, item, uploaded: bool) -> None:
        if self._p is None:
            return
        self._bytes += item.size
        self._uploaded += uploaded
        self._p.update(self._files, advance=1, extra=f"{human_bytes(self._bytes)} of "
                       f"{human_bytes(self._bytes_total)}, {self._uploaded} uploaded")


def _print_report(report) -> None:
    from rich.table import Table

    t = Table(title="Count check (rows of this home: in the home / in the cluster)", title_justify="left")
    for col in ("", "home", "cluster", "copied now"):
        t.add_column(col, justify="right" if col else "left")
    for name in report.source:
        src, dst = report.source[name], report.target.get(name)
        mark = "" if src == dst else " [red]differs[/]"
        t.add_row(name, str(src), f"{dst}{mark}", str(report.copied.get(name, 0)))
    mark = "" if report.files_source == report.files_target else " [red]differs[/]"
    t.add_row("files", str(report.files_source), f"{report.files_target}{mark}",
              f"{report.files_uploaded} ({human_bytes(report.bytes_uploaded)})")
    console.print(t)
    for name, (n, why) in report.not_copied.items():
        console.print(f"[dim]Not copied: {n} {escape(name)} ({escape(why)}).[/]")
    for w in report.warnings:
        console.print(f"[yellow]Warning:[/] {escape(w)}")
    for p in report.problems:
        console.print(f"[red]Not copied:[/] {escape(p)}")
    if report.ok:
        console.print("[green]Every row and file of the home is in the cluster.[/]")
    else:
        console.print("[red]The cluster does not hold everything of the home yet[/]: fix what is listed above "
                      "and run the same command again (what is already there is kept).")
