"""`aigen retry`: make only the missing assets of a generation."""

from __future__ import annotations

import typer

from aigen.cli.output import console, fail, print_json
from aigen.errors import AigenError, NotFound


def retry(
    ctx: typer.Context,
    generation_id: str = typer.Argument(..., help="The generation id (or a unique prefix of 4+ characters)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display or file table: one summary line (id, status, counts)."),
) -> None:
    """Finish a Failed or interrupted generation: assets already made are never made again.

    Also resumes a run that was killed: its temporary files are removed, and an
    asset whose provider job was already started is polled, not paid for twice.
    """
    from aigen.cli.runview import result_dict, run_foreground

    state = ctx.obj
    try:
        store = state.store(create=False)
        if store is None:
            raise NotFound(f"unknown generation id {generation_id!r}: there are no generations in "
                           f"{state.home.path} yet")
        gen_id = store.resolve_generation_id(generation_id)
        gen = store.get_generation(gen_id)
        missing = [a for a in store.assets(gen_id) if a["status"] != "done"]
        if not missing and gen["status"] == "Completed":
            if as_json:
                print_json(result_dict(state.home, gen, store.assets(gen_id)))
            elif not quiet:
                console.print(f"Generation {gen_id} is already Completed: nothing to retry.")
            raise typer.Exit(0)
        from aigen.errors import Busy
        from aigen.pipeline.run import is_running
        from aigen.providers.base import get_provider

        if is_running(state.home, gen_id):
            raise Busy(f"generation {gen_id} is being processed by another aigen process",
                       hint=f"follow it with `aigen status {gen_id}`")
        # The same checks as `generate`: a missing key stops here, before the
        # assets' attempts and errors are touched.
        for name, kind in sorted({(a["provider"], a["kind"]) for a in missing}):
            get_provider(name, home=state.home.path).check_ready(kind)
        if not as_json and not quiet:
            console.print(f"Generation [bold]{gen_id}[/]: making {len(missing)} missing asset(s).")
        code = run_foreground(store, state.home, gen_id, as_json=as_json, quiet=quiet)
    except AigenError as e:
        fail(e, as_json=as_json)
    raise typer.Exit(code)
