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

    def generation(self, generation_id: str, *, create: bool = False):
        """(store, full generation id) for an id or a unique prefix the user typed; NotFound when none matches."""
        from aigen.errors import NotFound

        store = self.store(create=create)
        if store is None:
            raise NotFound(f"unknown generation id {generation_id!r}: there are no generations in "
                           f"{self.home.path} yet")
        return store, store.resolve_generation_id(generation_id)

    def store(self, *, create: bool = True):
        """The store of this home; with create=False, None when there is no database yet.

        Read-only commands pass create=False so that asking about a fresh home
        (or mistyping an id) writes nothing to disk. In a home that cannot be
        written (a read-only mount, a backup copy) they get the database opened
        read-only; a write through it, or create=True, raises ReadOnlyHome.
        A database that is not usable raises BrokenDatabase and is left as it is.
        With AIGEN_DATABASE_URL (or [cluster] database_url) set, it is the PostgreSQL
        store whatever `create` says (see aigen.store.open_store).
        """
        if self._store is None:
            from aigen.config import database_url

            if database_url(None, self.home.path) is not None:
                # The PostgreSQL store (cluster mode): the database lives on the server, so a
                # command that only reads needs no aigen.db in the home, and opens it as it is.
                from aigen.store import open_store

                if create:
                    self.home.ensure()
                self._store = open_store(self.home)
                return self._store
            from aigen.store.core import Store, check_database_file

            db_path = self.home.db_path
            exists = check_database_file(db_path)  # BrokenDatabase before anything is written
            if not create:
                if not exists or db_path.stat().st_size == 0:
                    return None
                if not self.home.writable():
                    self._store = Store(db_path, readonly=True)
                    return self._store
            self.home.ensure()
            self._store = Store(db_path)
        return self._store
