"""Run a generation in the foreground with live progress, then report it."""

from __future__ import annotations

import shlex
import time

import typer

from aigen.cli.output import console, err_console, escape, print_json
from aigen.cli.progress import RunDisplay, files_table
from aigen.config import Home
from aigen.errors import EXIT_FAILED, EXIT_OK
from aigen.pipeline import retryhint

EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM): kill, timeout, systemctl stop


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it takes exactly Ctrl-C's path.

    A KeyboardInterrupt subclass: the runner stops the assets not started, waits
    for the started ones while it keeps the run lock, and re-raises; only the
    exit code (143) and the first word of the message differ.
    """


def catch_sigterm():
    """Make SIGTERM raise Terminated in the main thread; return what restores the previous handler.

    Off the main thread (embedded use) signals cannot be caught: nothing changes.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # pragma: no cover - not the main interpreter
        return lambda: None

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return restore


def retry_base(home: Home | None) -> str:
    """`aigen retry`, with --home when the home was given that way (a bare command would look in another)."""
    if home is not None and home.source == "--home":
        return f"aigen --home {shlex.quote(str(home.path))} retry"
    return "aigen retry"


def stopped(gen_id: str | None, exc: KeyboardInterrupt, home: Home | None = None) -> "typer.Exit":
    """Say how the run ended and how to resume; the exit to raise (130 Ctrl-C, 143 SIGTERM)."""
    term = isinstance(exc, Terminated)
    what = "Stopped by SIGTERM." if term else "Interrupted."
    if gen_id is None:
        err_console.print(f"\n[yellow]{what}[/] Nothing was made.", highlight=False)
    else:
        err_console.print(
            f"\n[yellow]{what}[/] Finished assets are kept; resume with: {escape(retry_base(home))} {gen_id}",
            highlight=False, soft_wrap=True,  # keep the command on one line, copyable
        )
    return typer.Exit(EXIT_TERMINATED if term else EXIT_INTERRUPTED)


def result_dict(home: Home, gen: dict, assets: list[dict]) -> dict:
    def abspath(rel):
        from aigen.config import stored_location

        return stored_location(home.path, rel) if rel else None

    return {
        "id": gen["id"],
        "user_id": gen["user_id"],
        "prompt": gen["prompt"],
        "status": gen["status"],
        "created_at": gen["created_at"],
        "generated_at": gen["generated_at"],
        "error": gen.get("error"),
        "home": str(home.path),
        "images": [abspath(p) for p in gen["image_paths"]],
        "videos": [abspath(p) for p in gen["video_paths"]],
        "notify_at": gen.get("notify_at"),
        "assets": [
            {
                "id": a["id"],
                "kind": a["kind"],
                "index": a["idx"],
                "provider": a["provider"],
                "model": a["model"],
                "status": a["status"],
                "path": abspath(a["path"]),
                "poster": abspath(a.get("poster_path")),
                "bytes": a["bytes"],
                "sha256": a["sha256"],
                "width": a["width"],
                "height": a["height"],
                "duration": a["duration"],
                "seed": a["seed"],
                "attempts": a["attempts"],
                "provider_job_id": a.get("provider_job_id"),
                "error": a["error"],
                "error_code": a.get("error_code"),
                "refused": bool(a.get("refused")),
                # How the kept file differs from the ask ("asked 1024x1024, got 512x512").
                "note": a.get("note"),
            }
            for a in assets
        ],
    }


def run_foreground(store, home: Home, gen_id: str, *, as_json: bool, quiet: bool = False,
                   after_run=None, include_refused: bool = False, extra: dict | None = None) -> int:
    """Run with live progress and report; ``after_run(gen)`` runs once the result is shown
    (generate's notification), and what it returns goes into the JSON as "notification".
    ``extra`` is added to the JSON (retry's skipped assets); ``include_refused`` submits
    refused assets again."""
    from aigen.pipeline.run import Runner

    todo = [a for a in store.assets(gen_id) if a["status"] != "done"]
    total = len(store.assets(gen_id))
    started = time.monotonic()
    display = RunDisplay(console, total, quiet=quiet or as_json)
    runner = Runner(store, home, listener=display, include_refused=include_refused)
    restore = catch_sigterm()
    try:
        try:
            with display:
                result = runner.run(gen_id)
        except KeyboardInterrupt as e:
            raise stopped(gen_id, e, home) from None
        return _report(home, gen_id, result, todo, total, started, as_json=as_json, quiet=quiet,
                       after_run=after_run, extra=extra)
    except Terminated as e:
        # After the run (the report, the notification): the assets are settled.
        raise stopped(gen_id, e, home) from None
    finally:
        restore()


def _report(home: Home, gen_id: str, result, todo: list[dict], total: int, started: float, *, as_json: bool,
            quiet: bool, after_run, extra: dict | None = None) -> int:
    elapsed = time.monotonic() - started
    gen, assets = result.generation, result.assets
    if as_json:
        data = result_dict(home, gen, assets)
        data["elapsed_s"] = round(elapsed, 2)
        data.update(extra or {})
        if after_run is not None:
            data["notification"] = after_run(gen)
        print_json(data)
    else:
        made = sum(1 for a in assets if a["status"] == "done")
        todo_ids = {a["id"] for a in todo}
        made_now = sum(1 for a in assets if a["id"] in todo_ids and a["status"] == "done")
        colour = "green" if gen["status"] == "Completed" else "red"
        base = retry_base(home)
        if quiet:
            # One line, so scripts and logs still learn the id and the outcome.
            line = f"{gen['status']} {gen['id']}: {made} of {total} assets"
            if gen["status"] == "Failed":
                if retryhint.all_left_refused(assets):
                    line += f"; all missing ones were refused: {retryhint.retry_command(base, gen['id'], assets)}"
                else:
                    line += f"; make the missing ones with: {base} {gen['id']}"
            console.print(f"[{colour}]{escape(line)}[/]", soft_wrap=True)
        else:
            console.print(files_table(assets, home.path))
            console.print(
                f"[{colour}]{gen['status']}[/]: {made} of {total} assets "
                f"({made_now} made in this run) in {elapsed:.1f} s. Generation [bold]{gen['id']}[/] "
                f"for user {escape(gen['user_id'])}."
            )
            if gen["status"] == "Failed":
                console.print(f"[red]{escape(gen.get('error') or '')}[/]")
                console.print(f"{escape(retryhint.lead(assets))} "
                              f"[bold]{escape(retryhint.retry_command(base, gen['id'], assets))}[/]",
                              soft_wrap=True)
    if after_run is not None and not as_json:
        after_run(gen)
    return EXIT_OK if gen["status"] == "Completed" else EXIT_FAILED
