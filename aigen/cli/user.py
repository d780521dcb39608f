"""`aigen user ...`: gallery users; `aigen user code ID` makes an access code,
`aigen user sessions ID` lists (and ends) their gallery sessions."""

from __future__ import annotations

import typer

from aigen.cli.output import console, escape, fail, print_json
from aigen.errors import AigenError, BadInput

app = typer.Typer(
    name="user",
    help="Gallery users: access codes for logging in when the gallery is served beyond this machine, "
    "and their gallery sessions.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@app.command("code")
def code(
    ctx: typer.Context,
    user_id: str = typer.Argument(..., help="The user the code is for."),
    rotate: bool = typer.Option(False, "--rotate", help="Replace the user's code: the old one stops working now "
                                "and every gallery session of the user ends."),
    revoke: bool = typer.Option(False, "--revoke", help="Remove the user's code and end every gallery session of "
                                "the user: off loopback they can then log in only through a magic link made from now on."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Make an access code for USER_ID and print it, once.

    Only a salted hash is stored, so the code cannot be shown again: if the
    user already has one, this refuses unless --rotate is given. The gallery
    asks for the code (with the user_id) when it is served on an address other
    than loopback (`aigen serve --host 0.0.0.0`); on 127.0.0.1 a user_id alone
    is enough. --rotate and --revoke also log the user out of the gallery
    everywhere, magic-link sessions included, and cancel every magic link
    made until now.
    """
    from aigen import config
    from aigen.web import access

    state = ctx.obj
    report: dict = {"sessions_ended": 0}
    try:
        config.validate_user_id(user_id)
        if rotate and revoke:
            raise BadInput("--rotate and --revoke contradict each other: give one of them")
        if revoke:
            store = state.store(create=False)
            if store is None:
                raise BadInput(f"unknown user {user_id!r}: there is no database in {state.home.path} yet")
            had = access.revoke_code(store, user_id, report=report)
        else:
            store = state.store()
            secret = access.set_code(store, user_id, rotate=rotate, report=report)
    except AigenError as e:
        fail(e, as_json=as_json)

    ended = report["sessions_ended"]
    ended_text = f" {ended} gallery session{'s' if ended != 1 else ''} ended." if ended else ""
    if revoke:
        if as_json:
            print_json({"user_id": user_id, "revoked": had, "sessions_ended": ended})
        elif had:
            console.print(f"Access code of {escape(user_id)} revoked.{ended_text}")
        elif ended:
            console.print(f"{escape(user_id)} had no access code.{ended_text}")
        else:
            console.print(f"{escape(user_id)} had no access code and no gallery session; nothing changed.")
        return
    user = store.get_user(user_id)
    if as_json:
        print_json({"user_id": user_id, "code": secret, "created_at": user["access_code_created_at"],
                    "rotated": rotate, "sessions_ended": ended})
        return
    console.print(f"Access code for [bold]{escape(user_id)}[/]: [bold]{secret}[/]")
    console.print("It is shown only this once (only a hash is stored). Give it to the user: the gallery asks for it "
                  "when served beyond this machine (`aigen serve --host 0.0.0.0`). "
                  f"Replace it with `aigen user code {escape(user_id)} --rotate`.")
    if ended_text:
        console.print(ended_text.strip() + " They log in again with the new code.")


@app.command("sessions")
def sessions_cmd(
    ctx: typer.Context,
    user_id: str = typer.Argument(..., help="Whose gallery sessions."),
    revoke_all: bool = typer.Option(False, "--revoke-all", help="End every live session of the user now, and "
                                    "cancel the magic links made until now: their next request needs a new login."),
    show_all: bool = typer.Option(False, "--all", help="Also list sessions that ended (logged out, revoked, "
                                  "expired) in the last 30 days."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List USER_ID's gallery sessions, newest first: how each was opened
    (code, loopback, magic link), from where, when last used, when it ends.

    The gallery checks these on every request, so --revoke-all logs the user
    out everywhere at once (their access code, if any, still works; use
    `aigen user code ID --rotate` to change it as well).
    """
    from aigen import config
    from aigen.store.core import utcnow
    from aigen.web import sessions

    state = ctx.obj
    ended = 0
    try:
        config.validate_user_id(user_id)
        store = state.store(create=False)
        now = utcnow()
        if store is None:
            rows = []
        else:
            if revoke_all:
                with store.transaction() as db:
                    ended = sessions.revoke_user(db, user_id, sessions.WHY_ADMIN, now)
            rows = sessions.list_sessions(store, user_id, include_ended=show_all or revoke_all, now=now)
    except AigenError as e:
        fail(e, as_json=as_json)

    if as_json:
        out = {"user_id": user_id, "sessions": [dict(r, id=r["id"][:16]) for r in rows]}
        if revoke_all:
            out["revoked"] = ended
        print_json(out)
        return
    if revoke_all:
        console.print((f"{ended} session{'s' if ended != 1 else ''} of {escape(user_id)} ended" if ended
                       else f"{escape(user_id)} had no live gallery session")
                      + "; magic links made until now no longer work.")
    if not rows:
        if not revoke_all:
            what = "gallery sessions" if show_all else "live gallery sessions"
            console.print(f"{escape(user_id)} has no {what}.")
        return
    from rich import box
    from rich.table import Table

    from aigen.cli.output import local_time

    # Fits 80 columns: when each ends, and why one was revoked, are in --json.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("session", no_wrap=True, min_width=8)
    table.add_column("kind", no_wrap=True, min_width=8)
    table.add_column("state", no_wrap=True, min_width=7)
    table.add_column("opened", no_wrap=True, min_width=6)
    table.add_column("last seen", no_wrap=True, min_width=9)
    table.add_column("address", no_wrap=True, overflow="ellipsis", min_width=9, max_width=15)
    table.add_column("browser", no_wrap=True, overflow="ellipsis", min_width=7, max_width=30)
    style = {"active": "green", "revoked": "red", "expired": "dim"}
    for r in rows:
        table.add_row(r["id"][:8], r["kind"], f"[{style[r['state']]}]{r['state']}[/]",
                      local_time(r["created_at"], short=True), local_time(r["last_seen"], short=True),
                      escape(r["address"] or ""), escape(r["user_agent"] or ""))
    console.print(table)
    console.print("[dim]Times are local; when each session ends, and why one was revoked, are in --json.[/]")
