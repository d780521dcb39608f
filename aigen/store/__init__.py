"""The store: SQLite (aigen.db in the home, the default) or PostgreSQL (cluster mode).

``open_store`` picks one from the configuration; both have the same public
methods, and ``store.backend`` says which it is ("sqlite" or "postgresql").
"""

from aigen.store.core import Store, utcnow, iso


def open_store(home, *, readonly: bool = False, env=None):
    """The store for this configuration: ``PgStore(url)`` when a database URL is set, else the home's aigen.db.

    ``home`` is a ``aigen.config.Home`` or a folder. The URL comes from
    ``aigen.config.database_url`` (AIGEN_DATABASE_URL, then ``[cluster]
    database_url`` in the home's config.toml); psycopg is imported only then.
    """
    from pathlib import Path

    from aigen.config import database_url

    folder = getattr(home, "path", home)
    url = database_url(env, Path(folder) if folder is not None else None)
    if url is not None:
        return pg_store_class()(url, readonly=readonly)
    db_path = getattr(home, "db_path", None) or Path(folder) / "aigen.db"
    return Store(db_path, readonly=readonly)


def pg_store_class():
    """aigen.store.pg.PgStore, or BadInput (exit 2) when psycopg is not installed."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        from aigen.errors import BadInput

        raise BadInput("the store on PostgreSQL (AIGEN_DATABASE_URL) needs the psycopg package, which is not "
                       "installed", hint="pip install 'aigen[cluster]', or unset AIGEN_DATABASE_URL to use aigen.db "
                                         "in the home") from None
    from aigen.store.pg import PgStore

    return PgStore


__all__ = ["Store", "open_store", "pg_store_class", "utcnow", "iso"]
