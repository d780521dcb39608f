"""`aigen status`: what is processing, done and failed."""

from __future__ import annotations

from typing import Optional

import typer

from aigen.cli.output import console, escape, excerpt, fail, human_bytes, local_time, print_json
from aigen.errors import AigenError, BadInput, NotFound

STATUS_STYLE = {"Processing": "cyan", "Completed": "green", "Failed": "red"}


def status(
    ctx: typer.Context,
    generation_id: Optional[str] = typer.Argument(None, help="Show one generation in detail, with every asset."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Only this user's generations."),
    only: Optional[str] = typer.Option(None, "--status", help="Only Processing, Completed or Failed."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many generations to list (newest first, 1-1000)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List generations (newest first) with their status and counts, or one in detail."""
    from aigen import config
    from aigen.locks import is_running

    state = ctx.obj
    try:
        if user is not None:
            config.validate_user_id(user)
        if not 1 <= limit <= 1000:
            raise BadInput(f"invalid --limit {limit}: must be between 1 and 1000")
        if only is not None:
            match = [s for s in STATUS_STYLE if s.lower() == only.lower()]
            if not match:
                raise BadInput(f"invalid --status {only!r}: choose Processing, Completed or Failed")
            only = match[0]
        home = state.home
        store = state.store(create=False)
        if store is None:
            if generation_id is not None:
                raise NotFound(f"unknown generation id {generation_id!r}: there are no generations in "
                               f"{home.path} yet")
            rows, counts = [], {}
        elif generation_id is not None:
            gen_id = store.resolve_generation_id(generation_id)
            return _detail(store, home, gen_id, as_json, is_running(home, gen_id))
        else:
            rows = store.list_generations(user_id=user, status=only, limit=limit)
            counts = store.count_generations(user_id=user)
    except AigenError as e:
        fail(e, as_json=as_json)

    for r in rows:
        r["running"] = r["status"] == "Processing" and is_running(home, r["id"])
    if as_json:
        print_json({
            "home": str(home.path),
            "home_source": home.source,
            "store": getattr(store, "backend", "sqlite"),
            "counts": {s: counts.get(s, 0) for s in STATUS_STYLE},
            "generations": [_summary(r) for r in rows],
        })
        return
    from rich.table import Table

    console.print(f"[dim]Home: {escape(str(home.path))} (from {home.source})[/]", soft_wrap=True)
    if getattr(store, "backend", "sqlite") == "postgresql":
        console.print(f"[dim]Store: PostgreSQL at {escape(store.path)}[/]", soft_wrap=True)
    if not rows:
        who = f" for user {escape(user)}" if user else ""
        console.print(f"No generations{who} yet. Make some with: aigen generate \"a prompt\" --user NAME")
        return
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold underline")
    # Fixed columns get the width their content needs; the prompt excerpt takes
    # what is left, so the table stays readable at 80 columns.
    cells = []
    for r in rows:
        st = r["status"]
        label = st
        if st == "Processing" and not r["running"]:
            label = "Stalled"
        cells.append({
            "id": r["id"],
            "user": r["user_id"],
            "status": label,
            "img": f"{r['images_done']}/{r['image_count'] or 0}",
            "vid": f"{r['videos_done']}/{r['video_count'] or 0}",
            "created": local_time(r["created_at"], short=True),
            "generated": local_time(r["generated_at"], short=True),
            "prompt": r["prompt"],
        })
    fixed = ("id", "user", "status", "img", "vid", "created", "generated")
    # Fixed columns take exactly what their values need (user ids capped at 16);
    # the prompt excerpt gets the rest, so the table fits 80 columns.
    widths = {c: max(len(c), *(len(x[c]) for x in cells)) for c in fixed}
    widths["user"] = min(widths["user"], 16)
    prompt_w = max(8, min(60, console.width - sum(widths.values()) - 2 * (len(fixed) + 1)))
    styles = {**STATUS_STYLE, "Stalled": "yellow"}
    for col in ("id", "user", "prompt", "status", "img", "vid", "created", "generated"):
        width = prompt_w if col == "prompt" else widths[col]
        table.add_column(col, no_wrap=True, width=width, overflow="ellipsis")
    for x in cells:
        table.add_row(
            x["id"],
            escape(x["user"]),
            escape(excerpt(x["prompt"], prompt_w)),
            f"[{styles.get(x['status'], '')}]{x['status']}[/]",
            x["img"],
            x["vid"],
            x["created"],
            x["generated"],
        )
    console.print(table)
    summary = ", ".join(f"{counts.get(s, 0)} {s.lower()}" for s in STATUS_STYLE)
    console.print(f"[dim]{summary}.[/]")
    if any(r["status"] == "Processing" and not r["running"] for r in rows):
        console.print("[yellow]Stalled[/] means Processing with no process working on it (the run was "
                      "killed): resume it with `aigen retry ID`.")


def _summary(r: dict) -> dict:
    return {
        "id": r["id"],
        "user_id": r["user_id"],
        "prompt": r["prompt"],
        "status": r["status"],
        "running": r.get("running", False),
        "images_done": r["images_done"],
        "images_total": r["image_count"] or 0,
        "videos_done": r["videos_done"],
        "videos_total": r["video_count"] or 0,
        "failed_assets": r["assets_failed"],
        "created_at": r["created_at"],
        "generated_at": r["generated_at"],
        "image_paths": r["image_paths"],
        "video_paths": r["video_paths"],
        "notify_at": r.get("notify_at"),
        "notified_at": r.get("notified_at"),
        "notify_status": r.get("notify_status"),
        "error": r.get("error"),
    }


def _detail(store, home, gen_id: str, as_json: bool, running: bool) -> None:
    from aigen.cli.runview import result_dict

    gen = store.get_generation(gen_id)
    assets = store.assets(gen_id)
    if as_json:
        data = result_dict(home, gen, assets)
        data.update(
            running=running,
            home_source=home.source,
            image_provider=gen["image_provider"],
            video_provider=gen["video_provider"],
            seed=gen["seed"],
            options=gen["options"],
            notified_at=gen.get("notified_at"),
            notify_status=gen.get("notify_status"),
            notify_error=gen.get("notify_error"),
        )
        print_json(data)
        return
    from rich.table import Table

    st = gen["status"]
    console.print(f"[dim]Home: {escape(str(home.path))} (from {home.source})[/]", soft_wrap=True)
    console.print(f"[bold]{gen['id']}[/] for {escape(gen['user_id'])}: [{STATUS_STYLE.get(st, '')}]{st}[/]"
                  + (" [yellow](stalled: run `aigen retry " + gen["id"] + "`)[/]" if st == "Processing" and not running else ""))
    console.print(f"Prompt: {escape(gen['prompt'])}")
    console.print(f"Created {local_time(gen['created_at'])}; generated {local_time(gen['generated_at']) or '-'}; "
                  f"seed {gen['seed']}")
    models = sorted({f"{a['provider']}/{a['model']}" for a in assets if a["model"]})
    if models:
        console.print(f"Models: {escape(', '.join(models))}")
    if gen.get("notify_at") or gen.get("notify_status") not in (None, "none"):
        when = local_time(gen["notify_at"]) if gen.get("notify_at") else "completion"
        console.print(f"Notify at {when}: {gen.get('notify_status') or 'pending'}"
                      + (f" ({escape(gen['notify_error'])})" if gen.get("notify_error") else ""))
    if gen.get("error"):
        console.print(f"[red]{escape(gen['error'])}[/]")
    from pathlib import PurePosixPath

    from aigen.config import stored_location

    folder = stored_location(home.path, f"generated_content/{gen['user_id']}/{gen['id']}")
    # File names only, the folder once in the caption: readable at 80 columns.
    table = Table(caption=escape(f"in {folder}"), caption_justify="left", box=None, pad_edge=False,
                  padding=(0, 1), header_style="bold underline")
    for col in ("asset", "provider", "status", "file / error", "size", "dims", "seed", "tries"):
        table.add_column(col, overflow="fold", no_wrap=col != "file / error")
    for a in assets:
        dims = f"{a['width']}x{a['height']}" if a["width"] else ""
        if a["duration"]:
            dims += f" {a['duration']:.1f}s"
        where = PurePosixPath(a["path"]).name if a["path"] else (a["error"] or "")
        if a["status"] == "running" and a.get("progress") is not None:
            where = f"{a['progress'] * 100:.0f}%"
        style = {"done": "green", "failed": "red", "running": "cyan"}.get(a["status"], "dim")
        table.add_row(
            f"{a['kind']} {a['idx']}",
            escape(a["provider"]),
            f"[{style}]{a['status']}[/]",
            escape(where),
            human_bytes(a["bytes"]),
            dims,
            str(a["seed"]),
            str(a["attempts"]),
        )
    console.print(table)
    # Files kept though not as asked (a paid file of another size or length).
    for a in assets:
        if a["status"] == "done" and a.get("note"):
            console.print(f"[yellow]Note[/] {a['kind']} {a['idx']}: {escape(a['note'])} (kept: it was paid for)",
                          soft_wrap=True)
