"""`aigen delete`: remove a generation, its files and its rows (the gallery's Delete)."""

from __future__ import annotations

import sys

import typer

from aigen.cli.output import console, escape, excerpt, fail, human_bytes, print_json
from aigen.errors import AigenError, BadInput


def delete(
    ctx: typer.Context,
    generation_id: str = typer.Argument(..., help="The generation id (or a unique prefix of 4+ characters)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation (needed when standard "
                             "input is not a terminal)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Delete a generation for good: its files (in the home or in object storage) and its rows.

    Asks first, unless --yes; without a terminal to ask on, it refuses (exit 2) rather than guess.
    A generation that is being made is refused (exit 1): wait for it, or stop it first. The
    deletion is logged as a `generation_deleted` event (`aigen events --kind generation_deleted`).
    """
    from aigen.pipeline.delete import delete_generation

    state = ctx.obj
    try:
        store, gen_id = state.generation(generation_id)
        gen = store.get_generation(gen_id)
        if not yes:
            if not sys.stdin.isatty():
                raise BadInput(f"refusing to delete generation {gen_id} without confirmation: standard input is "
                               "not a terminal", hint=f"pass --yes: `aigen delete {gen_id} --yes`")
            made = store.query_one("SELECT count(*) AS n FROM assets WHERE generation_id = ? AND status = 'done'",
                                   (gen_id,))["n"]
            console.print(f"Generation [bold]{gen_id}[/] of {escape(gen['user_id'])}: "
                          f"\"{escape(excerpt(gen['prompt'], 60))}\", {gen['status']}, {made} file(s).")
            if not typer.confirm("Delete it and its files for good?", default=False):
                console.print("Nothing was deleted.")
                raise typer.Exit(1)
        result = delete_generation(state.home, store, gen_id)
        store.log_event("generation_deleted", ok=True, user_id=result["user_id"], generation_id=gen_id,
                        detail=f"by aigen delete: {result['files']} file(s)")
    except AigenError as e:
        fail(e, as_json=as_json)
    if as_json:
        print_json({"id": gen_id, "user_id": result["user_id"], "deleted": True, "files": result["files"],
                    "bytes": result["bytes"]})
    else:
        console.print(f"Deleted generation [bold]{gen_id}[/] and {result['files']} file(s) "
                      f"({human_bytes(result['bytes'])}).")
