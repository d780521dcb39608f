"""The console, --json output and fail(): every command prints through here."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

from aigen.errors import AigenError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


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
