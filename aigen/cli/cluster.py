"""`aigen cluster ...`: commands for the cluster shape (PostgreSQL store, object storage, workers).

Wiring only; each command lives in its own module (cluster_migrate.py, ...).
Nothing heavy is imported here: `aigen --help` imports this module.
"""

from __future__ import annotations

import typer

from aigen.cli import cluster_migrate as _migrate

app = typer.Typer(
    help="Cluster mode: one aigen for a team, its store in PostgreSQL (AIGEN_DATABASE_URL) and its files in "
         "object storage (AIGEN_STORAGE_URL). See the README, \"Running on several machines\".",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

app.command("migrate")(_migrate.migrate)
