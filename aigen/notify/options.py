"""`--notify-via` and `--email` checked before anything is written: `aigen generate` and the gallery's form.

Here rather than in aigen/cli so that the gallery (aigen.web.ask) uses the very same checks and messages
without importing the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from aigen.errors import BadInput


def resolve_notify_options(home_path: Path, store, user: str, notify_via: Optional[str],
                           email: Optional[str]) -> tuple[list, Optional[str]]:
    """Return (channels, address). `store` may be None (a home with no database yet)."""
    from aigen import config
    from aigen.notify.mail import load_smtp_settings, validate_email
    from aigen.notify.queue import DEFAULT_CHANNELS, parse_notify_via

    config.validate_user_id(user)
    if email is not None:
        email = validate_email(email)
    if notify_via is None:
        channels = list(DEFAULT_CHANNELS) + (["email"] if email else [])
    else:
        channels = parse_notify_via(notify_via)
    address = None
    if "email" in channels:
        address = email
        if address is None:
            known = store.get_user(user) if store is not None else None
            address = (known or {}).get("email")
        if not address:
            raise BadInput(
                f"--notify-via email needs an address for user {user!r} and none is known",
                hint="give --email ADDRESS (it is remembered for the next time)",
            )
        if load_smtp_settings(home=home_path) is None:
            raise BadInput(
                "--notify-via email needs an SMTP server, and none is configured",
                hint=f"set AIGEN_SMTP_HOST (and AIGEN_SMTP_PORT, _USER, _PASSWORD, _FROM, _SECURITY) or add an "
                     f"[smtp] table to {home_path / 'config.toml'}: see the README, Notifications",
            )
    return channels, address
