"""The `aigen` command line: wiring only; each command lives in its own module.

Nothing heavy is imported here (no numpy, av, PIL, bottle, openai, runwayml):
every command's start-up pays for it, so commands import what they need when
run. The console script (``aigen.__main__:main``) comes here for everything but
a plain `aigen --help`, which it prints without importing this (aigen.fasthelp).
"""

from __future__ import annotations

from typing import Optional

import typer

from aigen import __version__
from aigen.cli import cluster as _cluster
from aigen.cli import delete as _delete
from aigen.cli import doctor as _doctor
from aigen.cli import events as _events
from aigen.cli import export as _export
from aigen.cli import generate as _generate
from aigen.cli import keys as _keys
from aigen.cli import notify as _notify
from aigen.cli import providers as _providers
from aigen.cli import retry as _retry
from aigen.cli import serve as _serve
from aigen.cli import status as _status
from aigen.cli import user as _user
from aigen.cli.state import State


class _Group(typer.core.TyperGroup):
    """The top-level group: a fault of the machine that escaped a command ends in one line, not a traceback.

    A full disk, a read-only home or a broken database met where a command
    did not expect it (an OSError, an sqlite3 error) is reported like every
    other error: message, hint, exit 1 (no space) or 2 (read-only, broken).

    Built once per run with every command under it, whose plain options then
    skip typer's pydantic adapters (aigen.cli.params).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from aigen.cli.params import plain_coercion

        plain_coercion(self)

    def invoke(self, ctx):
        words = [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except Exception as e:
            err = _machine_fault(e, ctx)
            if err is None:
                raise
            from aigen.cli.output import fail

            fail(err, as_json="--json" in words)


def _machine_fault(e: BaseException, ctx):
    from aigen.errors import AigenError, describe_os_error, describe_sqlite_error

    if isinstance(e, AigenError):  # e.g. the database filled up in a command's main loop
        return e
    err = describe_os_error(e)
    if err is None and type(e).__module__ == "sqlite3":
        db_path = "aigen.db"
        try:
            db_path = ctx.obj.home.db_path
        except Exception:
            pass
        err = describe_sqlite_error(e, db_path)
    if err is None and (type(e).__module__ or "").startswith("psycopg"):  # the PostgreSQL store (cluster mode)
        from aigen.errors import describe_pg_error

        url = None
        try:
            from aigen.config import database_url

            url = database_url(None, ctx.obj.home.path)
        except Exception:
            pass
        err = describe_pg_error(e, url)
    return err


app = typer.Typer(
    cls=_Group,
    name="aigen",
    help=(
        "Turn one text prompt into videos and images with AI providers, keep every request and file "
        "in a local SQLite store, notify you when they are ready, and browse them in a local gallery.\n\n"
        "With AIGEN_DATABASE_URL=postgresql://USER:PASSWORD@HOST/DB (or [cluster] database_url in "
        "HOME/config.toml) the store is that PostgreSQL database instead.\n\n"
        "The `local` provider needs no key and no network: it is a procedural renderer for trying "
        "the system, not an AI model."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aigen {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    home: Optional[str] = typer.Option(
        None,
        "--home",
        help="Directory holding aigen.db and generated_content/ (default: $AIGEN_HOME, "
        "else the per-user data directory).",
        metavar="DIR",
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = State(home_flag=home)


app.command("generate")(_generate.generate)
app.command("retry")(_retry.retry)
app.command("status")(_status.status)
app.command("delete")(_delete.delete)
app.command("export")(_export.export)
app.command("notify-daemon")(_notify.notify_daemon)
app.command("providers")(_providers.providers)
app.add_typer(_keys.app, name="keys")
app.command("serve")(_serve.serve)
app.command("events")(_events.events)
app.add_typer(_user.app, name="user")
app.command("doctor")(_doctor.doctor)
app.command("worker")(_cluster.worker)
app.command("cancel")(_cluster.cancel)
app.add_typer(_cluster.app, name="cluster")


def main(argv: list[str] | None = None) -> None:
    """The command line (the console script comes here after its fast path for `aigen --help`).

    With --json, a usage error (a missing argument, a number that is not one)
    is answered as JSON on stdout like every other bad input, exit 2; without
    it, Click's own message and exit code 2 stand.
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if "--json" not in args:
        app(args, prog_name="aigen")
        return
    command = typer.main.get_command(app)
    try:
        code = command.main(args, prog_name="aigen", standalone_mode=False)
    except Exception as e:
        # Typer may vendor Click or use it: recognise its UsageError by name.
        if not any(c.__name__ == "UsageError" for c in type(e).__mro__):
            raise
        from aigen.cli.output import print_json

        print_json({"error": "bad_input", "message": e.format_message()})
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
