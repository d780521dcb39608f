"""`aigen retry`: make only the missing assets of a generation."""

from __future__ import annotations

import typer

from aigen.cli.output import console, err_console, escape, fail, print_json
from aigen.errors import AigenError, NotFound

REFUSED_HINT = ("a refused prompt is refused again (and may be charged again); repeated refusals can get "
                "the account suspended (Runway). Change the prompt with a new `aigen generate`, or pass "
                "--include-refused to submit them again anyway")


class AllRefused(AigenError):
    """Every asset left to make was refused by its provider: nothing is submitted."""

    code = "all_refused"


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
        store = state.store(create=False)
        if store is None:
            raise NotFound(f"unknown generation id {generation_id!r}: there are no generations in "
                           f"{state.home.path} yet")
        gen_id = store.resolve_generation_id(generation_id)
        gen = store.get_generation(gen_id)
        missing = [a for a in store.assets(gen_id) if a["status"] != "done"]
        refused = [] if include_refused else [a for a in missing if a["status"] == "failed" and a.get("refused")]
        missing = [a for a in missing if a not in refused]
        if not missing and gen["status"] == "Completed":
            if as_json:
                print_json(result_dict(state.home, gen, store.assets(gen_id)))
            elif not quiet:
                console.print(f"Generation {gen_id} is already Completed: nothing to retry.")
            raise typer.Exit(0)
        skipped = [skipped_dict(a) for a in refused]
        if refused and not missing:
            names = ", ".join(f"{a['kind']} {a['idx']}" for a in refused)
            err = AllRefused(f"generation {gen_id}: nothing to retry: every asset left to make was refused by "
                             f"its provider ({names})", hint=REFUSED_HINT)
            if as_json:
                print_json({**err.to_dict(), "id": gen_id, "skipped": skipped})
                raise typer.Exit(err.exit_code)
            _print_skipped(refused, quiet=quiet, tip=False)  # the hint below says it
            fail(err)
        from aigen.errors import Busy
        from aigen.pipeline.run import is_running
        from aigen.providers.base import get_provider

        from aigen.cluster import database_url

        from aigen.cli import cluster

        url = database_url(home=state.home.path)
        if url is not None and not cluster.use_workers(store, url) and cluster.queued_anywhere(url, gen_id, store):
            raise Busy(f"generation {gen_id} is queued on the cluster, where no worker is running now",
                       hint=f"start `aigen worker`, or stop it with `aigen cancel {gen_id}`")
        if not cluster.use_workers(store, url):
            url = None
        if url is not None:
            if cluster.active_workflows(url, gen_id):
                raise Busy(f"generation {gen_id} is queued or running on the cluster's workers",
                           hint=f"follow it with `aigen status {gen_id}`, or stop it with `aigen cancel {gen_id}`")
        elif is_running(state.home, gen_id):
            raise Busy(f"generation {gen_id} is being processed by another aigen process",
                       hint=f"follow it with `aigen status {gen_id}`")
        # The same checks as `generate`: a missing key stops here, before the
        # assets' attempts and errors are touched.
        for name, kind in sorted({(a["provider"], a["kind"]) for a in missing}):
            get_provider(name, home=state.home.path).check_ready(kind)
        if refused and not as_json:
            _print_skipped(refused, quiet=quiet)
        if not as_json and not quiet:
            console.print(f"Generation [bold]{gen_id}[/]: making {len(missing)} missing asset(s).")
        if url is not None:
            # The same assets as an embedded retry: every one not done, refused ones only if asked.
            store.reopen_generation(gen_id, skip_refused=not include_refused)
            store.set_generation_fields(gen_id, cancel_requested_at=None)
            cluster.enqueue(url, gen_id, include_refused=include_refused)
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
