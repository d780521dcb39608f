"""`aigen retry`: make only the missing assets of a generation."""

from __future__ import annotations

import typer

from aigen.cli.output import console, err_console, escape, fail, print_json
from aigen.errors import AigenError

# Where they live now (the gallery's Resume/Retry makes the same checks); kept importable from here.
from aigen.pipeline.resume import REFUSED_HINT, AllRefused  # noqa: E402,F401


def skipped_dict(a: dict) -> dict:
    return {"id": a["id"], "kind": a["kind"], "index": a["idx"], "provider": a["provider"],
            "reason": "refused", "error_code": a.get("error_code"), "error": a.get("error")}


def retry(
    ctx: typer.Context,
    generation_id: str = typer.Argument(..., help="The generation id (or a unique prefix of 4+ characters)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display or file table: one summary line (id, status, counts)."),
    include_refused: bool = typer.Option(
        False, "--include-refused",
        help="Also submit again the assets a provider refused (moderation, e.g. Runway SAFETY.*). Off by "
             "default: the same prompt is refused again, and repeated refusals can get an account suspended."),
) -> None:
    """Finish a Failed or interrupted generation: assets already made are never made again.

    Also resumes a run that was killed: its temporary files are removed, and an
    asset whose provider job was already started is polled, not paid for twice.
    Assets a provider refused are skipped (and listed) unless --include-refused.
    """
    from aigen.cli.runview import result_dict, run_foreground

    state = ctx.obj
    try:
        store, gen_id = state.generation(generation_id)
        from aigen.pipeline.resume import plan_retry

        try:
            plan = plan_retry(state.home.path, store, gen_id, include_refused=include_refused)
        except AllRefused as err:
            if as_json:
                print_json({**err.to_dict(), "id": gen_id, "skipped": [skipped_dict(a) for a in err.refused]})
                raise typer.Exit(err.exit_code)
            _print_skipped(err.refused, quiet=quiet, tip=False)  # the hint below says it
            raise
        gen, missing, refused, url = plan.generation, plan.missing, plan.refused, plan.url
        if plan.nothing_to_do:
            if as_json:
                print_json(result_dict(state.home, gen, store.assets(gen_id)))
            elif not quiet:
                console.print(f"Generation {gen_id} is already Completed: nothing to retry.")
            raise typer.Exit(0)
        skipped = [skipped_dict(a) for a in refused]
        if refused and not as_json:
            _print_skipped(refused, quiet=quiet)
        if not as_json and not quiet:
            console.print(f"Generation [bold]{gen_id}[/]: making {len(missing)} missing asset(s).")
        if url is not None:
            from aigen.cli import cluster

            # The same assets as an embedded retry: every one not done, refused ones only if asked.
            from aigen.pipeline.resume import reopen

            reopen(store, gen_id, include_refused=include_refused)
            cluster.enqueue(url, gen_id, include_refused=include_refused, store=store)
            code = cluster.follow(store, state.home, gen_id, as_json=as_json, quiet=quiet,
                                  extra={"skipped": skipped})
        else:
            code = run_foreground(store, state.home, gen_id, as_json=as_json, quiet=quiet,
                                  include_refused=include_refused, extra={"skipped": skipped})
    except AigenError as e:
        fail(e, as_json=as_json)
    raise typer.Exit(code)


def _print_skipped(refused: list[dict], *, quiet: bool, tip: bool = True) -> None:
    """Say which assets are not submitted again, and why (stderr with -q: stdout stays one line)."""
    out = err_console if quiet else console
    out.print(f"[yellow]Skipped {len(refused)} refused asset(s)[/] (not submitted again):", soft_wrap=True)
    for a in refused:
        out.print(f"  {a['kind']} {a['idx']} ({escape(a['provider'])}): {escape(a.get('error') or 'refused')}",
                  soft_wrap=True)
    if tip and not quiet:
        out.print("[dim]Pass --include-refused to submit them again (they may be refused, and charged, again).[/]")
