"""`python -m aigen` and the `aigen` console script.

A plain `aigen --help` is printed from its snapshot when that matches the code
(aigen.fasthelp), without importing typer or any command; everything else
goes to aigen.cli.main.
"""


def main(argv: list[str] | None = None) -> None:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--help"]:
        from aigen.fasthelp import snapshot_help

        text = snapshot_help()
        if text is not None:
            # What typer's help option does: click's echo (text, newline, flush), then exit 0.
            sys.stdout.write(text)
            sys.stdout.flush()
            sys.exit(0)
    from aigen.cli import main as cli_main

    cli_main(args)


if __name__ == "__main__":
    main()
