"""The console, --json output and fail(): every command prints through here."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

from aigen.errors import AigenError


class _Console:
    """Rich's ``Console(**options)``, made the first time it is used.

    Importing Rich costs ~15 ms, which `aigen --help` (printed by typer) and the
    commands that print only JSON or nothing need not pay. Everything is Rich's
    console's own: attributes and methods are forwarded to it, and ``real`` is
    the console itself, for Rich objects that take one (``Progress(console=...)``).
    """

    def __init__(self, **options: Any):
        self._options = options
        self._real = None

    @property
    def real(self):
        if self._real is None:
            from rich.console import Console

            self._real = Console(**self._options)
        return self._real

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_options", "_real"):
            raise AttributeError(name)
        return getattr(self.real, name)

    def __enter__(self):
        return self.real.__enter__()

    def __exit__(self, *exc):
        return self.real.__exit__(*exc)


console = _Console(highlight=False)
err_console = _Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    # Plain print, not Rich: JSON must never be wrapped or coloured.
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fail(err: AigenError, *, as_json: bool = False) -> NoReturn:
    if as_json:
        print_json(err.to_dict())
    else:
        # soft_wrap: the terminal wraps long messages itself; Rich must not cut
        # a value or a path in two with a hard newline.
        err_console.print(f"[bold red]Error:[/] {escape(err.message)}", soft_wrap=True)
        if err.hint:
            err_console.print(f"[dim]Hint:[/] {escape(err.hint)}", soft_wrap=True)
    raise typer.Exit(err.exit_code)


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(str(text))


def human_bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def local_time(iso_text: str | None, *, short: bool = False) -> str:
    """Show stored UTC times in the user's local zone, to the minute."""
    if not iso_text:
        return ""
    from datetime import datetime

    try:
        when = datetime.fromisoformat(iso_text).astimezone()
        if short:
            # Tables: today's times need no date, which keeps them readable at 80 columns.
            today = datetime.now().astimezone().date()
            return when.strftime("%H:%M" if when.date() == today else "%m-%d %H:%M")
        return when.strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso_text


def excerpt(text: str, n: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
