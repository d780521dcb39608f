"""`aigen user ...`: gallery users; `aigen user code ID` makes an access code."""

from __future__ import annotations

import typer

from aigen.cli.output import console, escape, fail, print_json
from aigen.errors import AigenError, BadInput

app = typer.Typer(
    name="user",
    help="Gallery users: access codes for logging in when the gallery is served beyond this machine.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@app.command("code")
def code(
    ctx: typer.Context,
    user_id: str = typer.Argument(..., help="The user the code is for."),
    rotate: bool = typer.Option(False, "--rotate", help="Replace the user's code: the old one stops working now."),
    revoke: bool = typer.Option(False, "--revoke", help="Remove the user's code: off loopback they can then "
                                "log in only through a magic link."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Make an access code for USER_ID and print it, once.

    Only a salted hash is stored, so the code cannot be shown again: if the
    user already has one, this refuses unless --rotate is given. The gallery
    asks for the code (with the user_id) when it is served on an address other
    than loopback (`aigen serve --host 0.0.0.0`); on 127.0.0.1 a user_id alone
    is enough.
    """
    from aigen import config
    from aigen.web import access

    state = ctx.obj
    try:
        config.validate_user_id(user_id)
        if rotate and revoke:
            raise BadInput("--rotate and --revoke contradict each other: give one of them")
        if revoke:
            store = state.store(create=False)
            if store is None:
                raise BadInput(f"unknown user {user_id!r}: there is no database in {state.home.path} yet")
            had = access.revoke_code(store, user_id)
        else:
            store = state.store()
            secret = access.set_code(store, user_id, rotate=rotate)
    except AigenError as e:
        fail(e, as_json=as_json)

    if revoke:
        if as_json:
            print_json({"user_id": user_id, "revoked": had})
        elif had:
            console.print(f"Access code of {escape(user_id)} revoked.")
        else:
            console.print(f"{escape(user_id)} had no access code; nothing changed.")
        return
    user = store.get_user(user_id)
    if as_json:
        print_json({"user_id": user_id, "code": secret, "created_at": user["access_code_created_at"],
                    "rotated": rotate})
        return
    console.print(f"Access code for [bold]{escape(user_id)}[/]: [bold]{secret}[/]")
    console.print("It is shown only this once (only a hash is stored). Give it to the user: the gallery asks for it "
                  "when served beyond this machine (`aigen serve --host 0.0.0.0`). "
                  f"Replace it with `aigen user code {escape(user_id)} --rotate`.")
