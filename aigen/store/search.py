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


def fts5_query(words: list[str], column: str | None = None) -> str:
    """An FTS5 MATCH expression that means "all these words" (in `column`): each a quoted string, never syntax."""
    prefix = f"{column} : " if column else ""
    return " AND ".join(prefix + '"' + w.replace('"', '""') + '"' for w in words)


def fts5_match(user_id: str, f: "Filters") -> str:
    """The MATCH of a search in generations_fts: the words in the prompt, and the tags of the user, the status
    and the provider asked for (migration 0018: 'u' + hex of the user id, 's' + the status in lower case,
    'i'/'v' + hex of the image/video provider; the tokenizer folds case)."""
    parts = [f'tags : "u{user_id.encode().hex()}"']
    if f.status:
        parts.append(f'tags : "s{f.status.lower()}"')
    if f.provider:
        p = f.provider.encode().hex()
        parts.append(f'(tags : "i{p}" OR tags : "v{p}")')
    parts.append(fts5_query(f.words, "prompt"))
    return " AND ".join(parts)


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


def fts5_tagged(store) -> bool:
    """Whether generations_fts has the tags of migration 0018 (a store whose 0014 index was made again
    after it, by hand, has the older layout: searched by words alone, as before 0018)."""
    cached = getattr(store, "_aigen_fts5_tagged", None)
    if cached is None:
        row = store.query_one("SELECT sql FROM sqlite_master WHERE name = 'generations_fts'")
        cached = bool(row and "tags" in (row["sql"] or "") and "generations_fts_docs" in (row["sql"] or ""))
        try:
            store._aigen_fts5_tagged = cached
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
        elif has_fts5(store) and not fts5_tagged(store):
            where.append(f"{a}.id IN (SELECT gen_id FROM generations_fts WHERE generations_fts MATCH ?)")
            params.append(fts5_query(f.words))
        elif has_fts5(store):
            # The user's (and the filters') matches only, from the index itself (migration 0018).
            where.append(f"{a}.id IN (SELECT d.gen_id FROM generations_fts_docs d WHERE d.k IN "
                         "(SELECT rowid FROM generations_fts WHERE generations_fts MATCH ?))")
            params.append(fts5_match(user_id, f))
        else:  # pragma: no cover - an SQLite without FTS5: substrings, slower, still correct enough
            for w in f.words:
                where.append(f"{a}.prompt LIKE ? ESCAPE '\\'")
                params.append("%" + w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    return " AND ".join(where), params


def order_clause(f: Filters, alias: str = "g", *, reverse: bool = False) -> str:
    """The ORDER BY of `f` (created_at then id, the tie-break); `reverse`: the opposite order."""
    d = "ASC" if (f.order == "oldest") != reverse else "DESC"
    return f"{alias}.created_at {d}, {alias}.id {d}"


def count_matches(store, user_id: str, f: Filters, counts: dict[str, int] | None = None) -> int:
    """How many of the user's generations match `f`.

    Without words, from `generation_counts` (migration 0017): a few rows, however many generations
    there are (`counts`, the user's counts per status when the caller has them, answers a status
    alone). With words, the matches themselves are counted.
    """
    if not f.words:
        if not f.provider:
            counts = store.count_generations(user_id=user_id) if counts is None else counts
            return counts.get(f.status, 0) if f.status else sum(counts.values())
        where = "user_id = ? AND (image_provider = ? OR video_provider = ?)"
        params: list = [user_id, f.provider, f.provider]
        if f.status:
            where += " AND status = ?"
            params.append(f.status)
        row = store.query_one(f"SELECT coalesce(sum(n), 0) AS n FROM generation_counts WHERE {where}", params)
        return int(row["n"])
    if getattr(store, "backend", "sqlite") == "sqlite" and has_fts5(store) and fts5_tagged(store):
        # Counted in the index alone: its tags carry the user, status and providers (migration 0018).
        row = store.query_one("SELECT count(*) AS n FROM generations_fts WHERE generations_fts MATCH ?",
                              (fts5_match(user_id, f),))
        return int(row["n"])
    where, params = where_clause(store, user_id, f)
    return int(store.query_one(f"SELECT count(*) AS n FROM generations g WHERE {where}", params)["n"])


def page_of(store, columns: str, where: str, params: list, f: Filters, page: int, page_size: int,
            matched: int) -> list[dict]:
    """Page `page` (1-based, at most the last) of the generations matching `where`, in the order of `f`.

    The same rows, in the same order, as ``SELECT columns ... WHERE where ORDER BY order LIMIT page_size
    OFFSET (page - 1) * page_size``, made cheap on deep pages: the OFFSET is walked in an index that holds
    the order's columns and the id (no table row read for the rows skipped; PostgreSQL's index-only
    scan), and only the page's rows are then read by id. A page in the second half is walked from the
    other end (its OFFSET counted from the last match, `matched` being how many match), so no page walks
    more than half of them. The page's few rows are sorted here, not by the database.
    """
    start = (page - 1) * page_size
    n = min(page_size, matched - start)
    order = order_clause(f)
    limit, offset = page_size, start
    if n > 0 and matched - start - n < start:
        order, limit, offset = order_clause(f, reverse=True), n, matched - start - n
    inner = f"SELECT g.id FROM generations g WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
    rows = store.query(f"SELECT {columns} FROM generations g WHERE g.id IN ({inner})", (*params, limit, offset))
    rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=f.order != "oldest")
    return rows
