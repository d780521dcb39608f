"""`aigen --help` without importing typer: the text from a snapshot, used only while it is current.

Here, outside aigen.cli, because importing anything under aigen.cli runs aigen/cli/__init__.py, which
imports typer and every command.

Importing typer alone takes ~30 ms, and building every command to print the
list takes ~7 ms more, for a text that changes only when the code does. So
aigen/_help_snapshot.py holds what `aigen --help` prints, made by typer
itself (``python -m aigen.fasthelp --write`` runs the real command and
saves its output), with a fingerprint of everything that shapes it: the
content of every aigen/cli/*.py and typer's __init__.py (its version).
``snapshot_help`` returns the text only when the
fingerprint of the sources now is the same and the terminal is at least 80
columns wide (Click wraps help to min(columns, 80) - 2, so any width from 80
up prints the same text); otherwise None, and typer prints the help as
always. A stale snapshot is therefore never shown, only slower;
tests/test_startup_imports.py fails while it is stale, with the command that
remakes it.
"""

from __future__ import annotations

import os
import sys

SNAPSHOT_MODULE = "_help_snapshot.py"  # beside this file
MIN_COLUMNS = 80  # typer._click.formatting.HelpFormatter: width = max(min(columns, 80) - 2, 50)


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``, the same steps, without importing shutil (~2 ms)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    try:
        lines = int(os.environ["LINES"])
    except (KeyError, ValueError):
        lines = 0
    if columns <= 0 or lines <= 0:
        try:
            size = os.get_terminal_size(sys.__stdout__.fileno())
        except (AttributeError, ValueError, OSError):
            size = os.terminal_size((80, 24))
        if columns <= 0:
            columns = size.columns or 80
    return columns


def _typer_init() -> str | None:
    from importlib.util import find_spec

    try:
        spec = find_spec("typer")
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None else None


def fingerprint() -> str | None:
    """CRC-32 and length of the sources the top-level help is made from; None when one cannot be read."""
    import zlib

    cli_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cli")
    typer_init = _typer_init()
    if typer_init is None:
        return None
    crc, size = 0, 0
    try:
        names = sorted(n for n in os.listdir(cli_dir) if n.endswith(".py"))
        paths = [os.path.join(cli_dir, n) for n in names] + [typer_init]
        for name, path in zip([*names, "typer/__init__.py"], paths):
            with open(path, "rb") as fh:
                data = fh.read()
            crc = zlib.crc32(name.encode() + b"\0" + data + b"\0", crc)
            size += len(data)
    except OSError:
        return None
    return f"{len(paths)}-{size}-{crc:08x}"


def is_current() -> bool:
    """Whether the snapshot was made from the sources as they are now."""
    try:
        from aigen import _help_snapshot
    except ImportError:
        return False
    return _help_snapshot.FINGERPRINT == fingerprint()


def snapshot_help() -> str | None:
    """The text `aigen --help` prints here and now, when the snapshot is current; else None."""
    if terminal_columns() < MIN_COLUMNS or not is_current():
        return None
    from aigen import _help_snapshot

    return _help_snapshot.TEXT


def render() -> str:
    """What `aigen --help` prints through typer (the slow path), in a fresh interpreter at 80 columns."""
    import subprocess

    env = {**os.environ, "COLUMNS": str(MIN_COLUMNS), "LINES": "24"}
    proc = subprocess.run(
        [sys.executable, "-c", "from aigen.cli import main; main(['--help'])"],
        capture_output=True, text=True, encoding="utf-8", env=env, check=True,
    )
    return proc.stdout


def write() -> str:
    """Remake the snapshot from typer's own output; returns its path."""
    import typer

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), SNAPSHOT_MODULE)
    text, print_ = render(), fingerprint()
    if print_ is None:
        raise SystemExit("cannot fingerprint the sources of aigen --help")
    lines = text.splitlines(keepends=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('"""What `aigen --help` prints at 80 columns or more, and the fingerprint of the sources it was made\n'
                 'from. Written by `python -m aigen.fasthelp --write`: do not edit (see aigen/fasthelp.py)."""\n\n'
                 f"FINGERPRINT = {print_!r}\n"
                 f"TYPER_VERSION = {typer.__version__!r}\n\n"
                 "TEXT = (\n" + "".join(f"    {line!r}\n" for line in lines) + ")\n")
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Remake aigen/_help_snapshot.py from typer's own output.")
    parser.add_argument("--write", action="store_true", help="write the snapshot (else: say whether it is current)")
    args = parser.parse_args()
    if args.write:
        print(f"wrote {write()}")
    else:
        print("current" if is_current() else "stale: run python -m aigen.fasthelp --write")
        sys.exit(0 if is_current() else 1)
