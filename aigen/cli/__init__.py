"""The `aigen` command line: the console script, and the typer application (aigen.cli.root).

Importing this package imports nothing else: `aigen --help` is answered from
a snapshot of its text when the snapshot matches the sources that make it
(aigen.cli.fasthelp), without importing typer at all; everything else goes to
aigen.cli.root. ``app`` (and the other names of aigen.cli.root that callers
use) are imported from there when first asked for.
"""

from __future__ import annotations

# What `from aigen.cli import X` finds in aigen.cli.root (imported then, with typer and every command).
_ROOT_NAMES = frozenset({"app", "main_callback", "_Group", "_machine_fault", "_version"})


def __getattr__(name: str):
    if name in _ROOT_NAMES:
        from aigen.cli import root

        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """The console script: `aigen --help` from its snapshot when it is current, else aigen.cli.root.main."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--help"]:
        from aigen.cli.fasthelp import snapshot_help

        text = snapshot_help()
        if text is not None:
            # What typer's help option does: click's echo (text, newline, flush), then exit 0.
            sys.stdout.write(text)
            sys.stdout.flush()
            sys.exit(0)
    from aigen.cli.root import main as root_main

    root_main(args)
