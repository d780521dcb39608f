"""Find generations: prompt words, status, provider, order; the same rules on SQLite and PostgreSQL.

The words of a search are taken from the user's text as runs of letters and digits (everything else,
FTS syntax included: quotes, `*`, `NEAR(`, `-`, `:`, parentheses, is a separator), and each must
appear in the prompt as a whole word, in any case. On SQLite they are matched by the FTS5 table
`generations_fts` (migration 0014; accents ignored), each word sent as a quoted string so nothing the
user types is read as FTS syntax; on PostgreSQL by ``to_tsvector('simple', prompt) @@
plainto_tsquery('simple', words)`` on its GIN index. Both use no stemming and no stop words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STATUSES = ("Processing", "Completed", "Failed")
ORDERS = ("newest", "oldest")
MAX_WORDS = 16
MAX_QUERY = 200
# Letters and digits (\w without the underscore, which both tokenizers treat as a separator).
_WORD_RE = re.compile(r"[^\W_]+")


def words_of(text: str | None) -> list[str]:
    """The words searched for: runs of letters and digits, lower-cased, at most MAX_WORDS, no repeats."""
    out: list[str] = []
    for w in _WORD_RE.findall((text or "")[:MAX_QUERY]):
        w = w.lower()
        if w not in out:
            out.append(w)
        if len(out) == MAX_WORDS:
            break
    return out


def fts5_query(words: list[str]) -> str:
    """An FTS5 MATCH expression that means "all these words": each a quoted string, never syntax."""
    return " AND ".join('"' + w.replace('"', '""') + '"' for w in words)


@dataclass
class Filters:
    """What the gallery's search form and `GET /api/generations` take from the query string."""

    q: str = ""
    status: str | None = None
    provider: str | None = None
    order: str = "newest"
    words: list[str] = field(default_factory=list)

    @classmethod
    def from_query(cls, get) -> "Filters":
        """From a query string (`get(name)` returns a value or None). Unknown values are dropped, never an error:
        a link someone edited by hand still shows a page."""
        q = " ".join((get("q") or "").split())[:MAX_QUERY]
        status = get("status") or None
        status = status if status in STATUSES else None
        provider = (get("provider") or "").strip() or None
        if provider is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", provider):
            provider = None
        order = get("sort") if get("sort") in ORDERS else "newest"
        return cls(q=q, status=status, provider=provider, order=order, words=words_of(q))

    @property
    def active(self) -> bool:
        return bool(self.words or self.status or self.provider or self.order != "newest")

    def params(self, **override) -> dict:
        """The query-string form (only what differs from the defaults), for links that keep the search."""
        p = {"q": self.q or None, "status": self.status, "provider": self.provider,
             "sort": self.order if self.order != "newest" else None}
        p.update(override)
        return {k: v for k, v in p.items() if v not in (None, "")}


def has_fts5(store) -> bool:
    """Whether the SQLite store has the FTS5 index (an SQLite built without FTS5 has none: LIKE is used)."""
    cached = getattr(store, "_aigen_has_fts5", None)
    if cached is None:
        row = store.query_one("SELECT count(*) AS n FROM sqlite_master WHERE name = 'generations_fts'")
        cached = bool(row and row["n"])
        try:
            store._aigen_has_fts5 = cached
        except AttributeError:
            pass
    return cached


def where_clause(store, user_id: str, f: Filters, alias: str = "g") -> tuple[str, list]:
    """(SQL condition, parameters) selecting the user's generations that match `f`."""
    a = alias
    where, params = [f"{a}.user_id = ?"], [user_id]
    if f.status:
        where.append(f"{a}.status = ?")
        params.append(f.status)
    if f.provider:
        where.append(f"({a}.image_provider = ? OR {a}.video_provider = ?)")
        params += [f.provider, f.provider]
    if f.words:
        if getattr(store, "backend", "sqlite") == "postgresql":
            where.append(f"to_tsvector('simple'::regconfig, {a}.prompt) @@ plainto_tsquery('simple'::regconfig, ?)")
            params.append(" ".join(f.words))
        elif has_fts5(store):
            where.append(f"{a}.id IN (SELECT gen_id FROM generations_fts WHERE generations_fts MATCH ?)")
            params.append(fts5_query(f.words))
        else:  # pragma: no cover - an SQLite without FTS5: substrings, slower, still correct enough
            for w in f.words:
                where.append(f"{a}.prompt LIKE ? ESCAPE '\\'")
                params.append("%" + w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    return " AND ".join(where), params


def order_clause(f: Filters, alias: str = "g") -> str:
    d = "ASC" if f.order == "oldest" else "DESC"
    return f"{alias}.created_at {d}, {alias}.id {d}"
