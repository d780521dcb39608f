"""`aigen events`: every login attempt and view recorded by the gallery."""

from __future__ import annotations

from typing import Optional

import typer

from aigen.cli.output import console, escape, fail, local_time, print_json
from aigen.errors import AigenError, BadInput

KIND_STYLE = {"login_ok": "green", "magic_link_login": "green", "login_failed": "red", "logout": "dim"}


def events(
    ctx: typer.Context,
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Only this user's events."),
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="Only this kind: login_ok, login_failed, "
                                       "magic_link_login, logout, gallery_view, generation_view, asset_view, "
                                       "api_view, generation_retry, generation_requested, generation_deleted, zip_download, prompt_copied."),
    failed: bool = typer.Option(False, "--failed", help="Only failed login attempts (same as --kind login_failed)."),
    limit: int = typer.Option(50, "--limit", "-n", help="How many events (newest first, 1-10000)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List the gallery's events, newest first: logins (ok or not, why, from where) and views."""
    from aigen import config
    from aigen.web import EVENT_KINDS

    state = ctx.obj
    try:
        if user is not None:
            config.validate_user_id(user)
        if failed:
            if kind not in (None, "login_failed"):
                raise BadInput(f"--failed and --kind {kind!r} contradict each other: --failed means login_failed")
            kind = "login_failed"
        if kind is not None and kind not in EVENT_KINDS:
            raise BadInput(f"invalid --kind {kind!r}: must be one of {', '.join(EVENT_KINDS)}")
        if not 1 <= limit <= 10000:
            raise BadInput(f"invalid --limit {limit}: must be between 1 and 10000")
        store = state.store(create=False)
        rows = store.list_events(user_id=user, kind=kind, limit=limit) if store is not None else []
    except AigenError as e:
        fail(e, as_json=as_json)

    if as_json:
        for r in rows:
            if r.get("ok") is not None:
                r["ok"] = bool(r["ok"])
        print_json({"home": str(state.home.path), "events": rows})
        return
    if not rows:
        who = f" for user {escape(user)}" if user else ""
        what = f" of kind {escape(kind)}" if kind else ""
        console.print(f"No events{who}{what} yet. They are written by the gallery (`aigen serve`).")
        return
    from rich import box
    from rich.table import Table

    # Narrow enough for 80 columns; whether a login worked is in the kind
    # (login_ok / login_failed), the asset in "what" (e.g. "view video 3").
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("time", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("user", no_wrap=True, overflow="ellipsis", max_width=14)
    table.add_column("reason / what", overflow="fold", ratio=1, min_width=10)
    table.add_column("address", no_wrap=True, overflow="ellipsis", max_width=22)
    table.add_column("generation", no_wrap=True)
    for r in rows:
        style = KIND_STYLE.get(r["kind"], "")
        kind_cell = f"[{style}]{r['kind']}[/]" if style else r["kind"]
        why = "; ".join(x for x in (r.get("reason"), r.get("detail")) if x)
        table.add_row(
            _time(r["at"]),
            kind_cell,
            escape(r.get("user_id") or ""),
            escape(why),
            escape(r.get("address") or ""),
            r.get("generation_id") or "",
        )
    console.print(table)
    console.print("[dim]Asset ids, sessions and user agents are in --json.[/]")


def _time(iso_text: str) -> str:
    # Seconds matter here: a burst of failed logins is read second by second.
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso_text).astimezone().strftime("%m-%d %H:%M:%S")
    except ValueError:
        return local_time(iso_text)
