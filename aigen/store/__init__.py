"""The SQLite store: one connection per thread, WAL, a busy timeout, migrations on open."""

from aigen.store.core import Store, utcnow, iso

__all__ = ["Store", "utcnow", "iso"]
