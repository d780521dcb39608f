"""`aigen keys set|list|remove`: API keys kept in a 0600 file in the home.

The environment always wins over the file; values are never printed, only a
mask (the vendor's prefix and the length).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from aigen.cli.output import console, escape, fail, print_json
from aigen.errors import AigenError, BadInput

app = typer.Typer(
    name="keys",
    help="Store, list and remove provider API keys (kept in HOME/keys.json, mode 0600; "
    "an environment variable of the same name always wins).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _vars_for(provider: str, var: Optional[str]) -> tuple[str, ...]:
    from aigen import keys as keystore

    names = keystore.provider_vars(provider)
    if not names:
        raise BadInput(f"provider {provider!r} needs no key")
    if var is not None:
        var = var.strip().upper()
        if var not in names:
            raise BadInput(f"invalid --var {var!r} for {provider}: choose one of {', '.join(names)}")
        return (var,)
    return names


@app.command("set")
def set_key(
    ctx: typer.Context,
    provider: str = typer.Argument(..., help="Provider name: openai, stability, runway, pictory, ..."),
    var: Optional[str] = typer.Option(
        None, "--var", help="Which variable to set, for providers with several (e.g. PICTORY_CLIENT_ID)."
    ),
    from_stdin: bool = typer.Option(
        False, "--stdin", help="Read the value from standard input instead of a hidden prompt."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Store PROVIDER's key. Prompts without echo, or reads it from stdin with --stdin.

    A provider with several variables (pictory) is asked for each in turn; leave
    one empty to skip it. With --stdin, name the variable with --var.
    """
    from aigen import keys as keystore

    state = ctx.obj
    try:
        names = _vars_for(provider, var)
        if from_stdin and len(names) > 1:
            raise BadInput(f"{provider} has several variables ({', '.join(names)}): choose one with --var")
        if state.home.path.is_dir() and state.home.read_only_mount():
            # Said before the key is typed, not after.
            from aigen.errors import read_only_home

            raise read_only_home(state.home.path)
        values: dict[str, str] = {}
        if from_stdin:
            values[names[0]] = keystore.validate_value(names[0], sys.stdin.read())
        else:
            for name in names:
                raw = typer.prompt(
                    f"{name}" + (" (empty to skip)" if len(names) > 1 else ""),
                    default="" if len(names) > 1 else None,
                    hide_input=True,
                    show_default=False,
                )
                if len(names) > 1 and not raw.strip():
                    continue
                values[name] = keystore.validate_value(name, raw)
            if not values:
                raise BadInput(f"no value given for {provider}: nothing was stored")
        home = state.home
        path = None
        for name, value in values.items():
            path = keystore.write_key(home.path, name, value)
    except AigenError as e:
        fail(e, as_json=as_json)

    shadowed = [n for n in values if os.environ.get(n)]
    if as_json:
        print_json({"provider": provider, "stored": list(values), "file": str(path),
                    "overridden_by_environment": shadowed})
        return
    for name in values:
        console.print(f"Stored {name} for {provider} in {escape(str(path))} (mode 0600).")
    for name in shadowed:
        console.print(f"[yellow]Note:[/] {name} is also set in the environment, which takes precedence.")


@app.command("list")
def list_keys(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Show which keys are set and where from (environment or file), masked."""
    from aigen import keys as keystore
    from aigen.providers.base import provider_names

    state = ctx.obj
    try:
        home = state.home
        rows = []
        for provider in provider_names():
            try:
                names = keystore.provider_vars(provider)
            except Exception:  # a broken plugin must not hide the other keys
                continue
            for name in names:
                rows.append({"provider": provider, **keystore.key_status(home.path, os.environ, name)})
        warning = keystore.file_mode_problem(home.path)
    except AigenError as e:
        fail(e, as_json=as_json)
    path = keystore.keys_path(home.path)
    if as_json:
        print_json({"file": str(path), "file_exists": path.exists(), "warning": warning, "keys": rows})
        return
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("provider", "variable", "set", "from", "value"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["provider"], r["var"], "yes" if r["set"] else "[dim]no[/]",
            r["source"] or "", escape(r["masked"] or ""),
        )
    if rows:
        console.print(table)
    else:
        console.print("No provider needs a key.")
    console.print(f"[dim]Keys file: {escape(str(path))}{'' if path.exists() else ' (not created yet)'}[/]")
    if warning:
        console.print(f"[yellow]Warning:[/] {escape(warning)}")


@app.command("remove")
def remove_key(
    ctx: typer.Context,
    provider: str = typer.Argument(..., help="Provider whose stored key(s) to remove."),
    var: Optional[str] = typer.Option(None, "--var", help="Remove only this variable."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Remove PROVIDER's stored key(s) from the keys file (the environment is untouched)."""
    from aigen import keys as keystore

    state = ctx.obj
    try:
        names = _vars_for(provider, var)
        removed = keystore.remove_keys(state.home.path, list(names))
    except AigenError as e:
        fail(e, as_json=as_json)
    still = [n for n in names if os.environ.get(n)]
    if as_json:
        print_json({"provider": provider, "removed": removed, "still_in_environment": still})
        return
    if removed:
        console.print(f"Removed {', '.join(removed)} from {escape(str(keystore.keys_path(state.home.path)))}.")
    else:
        console.print(f"No stored key for {provider}; nothing removed.")
    for n in still:
        console.print(f"[yellow]Note:[/] {n} is still set in the environment.")
