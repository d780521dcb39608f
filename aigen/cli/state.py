"""Per-invocation state shared by the commands: the home and the store, opened lazily."""

from __future__ import annotations

from dataclasses import dataclass, field

from aigen.config import Home, resolve_home


@dataclass
class State:
    home_flag: str | None = None
    _home: Home | None = field(default=None, repr=False)
    _store: object | None = field(default=None, repr=False)

    @property
    def home(self) -> Home:
        if self._home is None:
            self._home = resolve_home(self.home_flag)
        return self._home

    def store(self, *, create: bool = True):
        """The store of this home; with create=False, None when there is no database yet.

        Read-only commands pass create=False so that asking about a fresh home
        (or mistyping an id) writes nothing to disk.
        """
        if self._store is None:
            from aigen.store import Store

            if not create and not self.home.db_path.exists():
                return None
            self.home.ensure()
            self._store = Store(self.home.db_path)
        return self._store
