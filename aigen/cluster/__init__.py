"""Cluster mode: `aigen worker` processes on many machines over DBOS Transact.

Imported only when the cluster configuration is set (AIGEN_DATABASE_URL or
`[cluster] database_url`): the embedded path (SQLite, thread pools) never
imports dbos, psycopg or sqlalchemy.

The design, in short (README "Workers"):

* DBOS keeps its own tables in the schema ``aigen_dbos`` of the cluster's
  PostgreSQL database; aigen's own rows (generations, assets, workers) stay
  the truth the CLI and the gallery read.
* a generation is a DBOS workflow (queue ``aigen-generations``) that enqueues
  one workflow per asset on its provider's queue ``aigen-<provider>`` and
  waits for them, then finalizes the generation; the notify daemon notifies
  as in embedded mode.
* each provider queue's *global* concurrency is the provider's cap
  (AIGEN_<PROVIDER>_CONCURRENCY, config.toml, its default), and its optional
  rate AIGEN_<PROVIDER>_RATE (calls per minute) is the queue's limiter: they
  hold however many workers run.
* every worker has a stable executor id and a ``workers`` row with a heartbeat;
  a worker whose heartbeat stopped is claimed by exactly one other worker,
  which recovers that executor's pending workflows (DBOS re-enqueues them on
  the queue they came from, so the caps still hold).
"""

from __future__ import annotations

import os
from pathlib import Path

from aigen.errors import AigenError

INSTALL_HINT = "install the cluster extra: pip install 'aigen[cluster]'"


class ClusterUnavailable(AigenError):
    """The cluster database cannot be reached, or the cluster extra is not installed."""

    code = "cluster_unavailable"


def database_url(env: dict | None = None, home: Path | None = None) -> str | None:
    """The cluster database URL, or None in embedded mode (aigen.config.database_url when it exists)."""
    try:
        from aigen.config import database_url as configured  # helper "pgstore"
    except ImportError:
        configured = None
    if configured is not None:
        return configured(env=env, home=home)
    env = os.environ if env is None else env
    return (env.get("AIGEN_DATABASE_URL") or "").strip() or None


def require_dbos():
    """Import dbos, or say how to install it (one line, exit 1)."""
    try:
        import dbos  # noqa: F401
    except ImportError:
        raise ClusterUnavailable("cluster mode needs DBOS Transact, which is not installed",
                                 hint=INSTALL_HINT) from None
    return dbos


def describe_db_error(e: BaseException, url: str) -> ClusterUnavailable:
    """A database fault as one clear line (the URL without its password)."""
    return ClusterUnavailable(f"cannot reach the cluster database {redact(url)}: {_first_line(e)}",
                              hint="check AIGEN_DATABASE_URL and that PostgreSQL is running")


def redact(url: str) -> str:
    try:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        pass
    return url


def _first_line(e: BaseException) -> str:
    inner = getattr(e, "orig", None) or e
    text = str(inner).strip().splitlines()
    return text[0] if text else type(inner).__name__


def is_db_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ""
    return mod.startswith(("sqlalchemy", "psycopg")) or isinstance(e, ConnectionError)
