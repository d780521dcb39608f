"""`aigen doctor`: check a home, say what is wrong and the command that mends each thing.

Checking never writes; each mend is its own flag. The work is in
aigen/cli/doctor_checks.py, imported only when the command runs.
"""

from __future__ import annotations

import typer

from aigen.cli.output import fail, print_json
from aigen.errors import AigenError, BadInput, read_only_home


def doctor(
    ctx: typer.Context,
    deep: bool = typer.Option(False, "--deep", help="Also hash every file and compare it with its recorded sha256."),
    fix: bool = typer.Option(False, "--fix", help="Apply the safe mends: --remove-temp, --clear-stale-locks, "
                                                  "--move-orphans."),
    remove_temp: bool = typer.Option(False, "--remove-temp", help="Delete temporary files whose writer is gone."),
    clear_stale_locks: bool = typer.Option(False, "--clear-stale-locks",
                                           help="Delete lock files that no process holds and that mark something "
                                                "gone."),
    move_orphans: bool = typer.Option(False, "--move-orphans",
                                      help="Move folders no generation knows to <home>/orphans/ (nothing is "
                                           "deleted)."),
    requeue_bad: bool = typer.Option(False, "--requeue-bad",
                                     help="Mark assets whose file is missing or damaged as failed (a damaged file "
                                          "is kept as NAME.bad) so `aigen retry ID` makes them again; paid "
                                          "providers are paid again."),
    thumbnails: bool = typer.Option(False, "--thumbnails",
                                    help="Make the gallery's previews (WebP, 256 and 512 px) of every image and "
                                         "video that has none; the gallery also makes one when it first shows "
                                         "a file without."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Check the home: the database (PRAGMA quick_check), every file it lists (size; sha256 with --deep),
    folders no generation knows, stalled runs, stale locks, temporary files, and (files in S3) checked files
    in scratch/ waiting for their upload (`aigen retry ID` uploads them without calling the provider).

    Prints each problem with the command that mends it; changes nothing unless a mend
    flag is given. Works on a read-only home (a mend flag there is refused). Exit codes:
    0 healthy (or every problem mended), 1 problems remain, 2 bad input (no such home,
    a mend flag on a read-only home).
    """
    import re

    from aigen.cli.doctor_checks import _q, check_home, mend, print_report

    state = ctx.obj
    try:
        home = state.home
        if not home.path.is_dir():
            raise BadInput(f"no aigen home at {home.path} (from {home.source}): nothing to check",
                           hint="choose the home with --home DIR or AIGEN_HOME")
        mending = fix or remove_temp or clear_stale_locks or move_orphans or requeue_bad or thumbnails
        if mending and home.read_only_mount():
            # Checking works there (the database is opened read-only); a mend would fail half-way.
            err = read_only_home(home.path)
            err.hint = ("`aigen doctor` without a mend flag checks it as it is; to mend, make it writable or "
                        "mend a writable copy (--home DIR)")
            raise err
        try:
            report = check_home(home, deep=deep)
        except OSError as e:
            raise BadInput(f"cannot check home {home.path}: {e.strerror or e}"
                           + (f": {e.filename}" if e.filename else ""),
                           hint="run doctor as the user that owns the home") from None
        flags = {name for name, on in (("--remove-temp", remove_temp or fix),
                                       ("--clear-stale-locks", clear_stale_locks or fix),
                                       ("--move-orphans", move_orphans or fix),
                                       ("--requeue-bad", requeue_bad)) if on}
        if home.source == "--home":
            # The commands printed must reach this same home.
            prefix = f"aigen --home {_q(home.path)} "
            for p in report.problems:
                p.remedy = re.sub(r"\baigen (?=doctor|retry)", lambda m: prefix, p.remedy)
        if flags:
            mend(report, home, flags)
        if thumbnails:
            from aigen.cli.doctor_checks import make_thumbnails

            make_thumbnails(report, home)
    except AigenError as e:
        fail(e, as_json=as_json)
    remaining = [p for p in report.problems if not p.mended]
    if as_json:
        print_json({
            "home": str(home.path),
            "healthy": not report.problems,
            "deep": deep,
            "database": report.database,
            **({"thumbnails": report.thumbnails} if report.thumbnails is not None else {}),
            "problems": [p.to_dict() for p in report.problems],
            "mended": sum(1 for p in report.problems if p.mended),
            "remaining": len(remaining),
        })
    else:
        print_report(report, remaining)
    raise typer.Exit(1 if remaining else 0)
