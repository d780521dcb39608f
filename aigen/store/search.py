"""Find generations: prompt words, status, provider, order; the same rules on SQLite and PostgreSQL.

The words of a search are taken from the user's text as runs of letters and digits (everything else,
FTS syntax included: quotes, `*`, `NEAR(`, `-`, `:`, parentheses, is a separator), and each must
appear in the prompt as a whole word, in any case. On SQLite they are matched by the FTS5 table
`generations_fts` (migration 0014; accents ignored), each word sent as a quoted string so nothing the
user types is read as FTS syntax; on PostgreSQL by ``aigen_search_doc(user_id, status, prompt) @@
plainto_tsquery('simple', words) && 'u <user_id>'`` on its GIN index (the prompt's to_tsvector('simple')
and the user's tokens: pg_schema 0020). Both use no stemming and no stop words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STATUSES = ("Processing", "Completed", "Failed")
ORDERS = ("newest", "oldest")
MAX_WORDS = 16
MAX_QUERY = 200
# Generations of one millisecond that get a key in created_at order (aigen.store.migrations 0020).
SEARCH_KEY_SLOTS = 256
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


def tsquery_lexeme(text: str) -> str:
    """A PostgreSQL tsquery of one lexeme, exactly `text` (spaces and all): quoted, quotes and backslashes doubled."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def fts5_query(words: list[str], column: str | None = None) -> str:
    """An FTS5 MATCH expression that means "all these words" (in `column`): each a quoted string, never syntax."""
    prefix = f"{column} : " if column else ""
    return " AND ".join(prefix + '"' + w.replace('"', '""') + '"' for w in words)


def fts5_match(user_id: str, f: "Filters", in_order: bool = False) -> str:
    """The MATCH of a search in generations_fts: the words in the prompt, and the tags of the user, the status
    and the provider asked for (migration 0018: 'u' + hex of the user id, 's' + the status in lower case,
    'i'/'v' + hex of the image/video provider; the tokenizer folds case). `in_order`: the index of migration
    0020, which also has 'q' + the status + hex of the user id."""
    user = user_id.encode().hex()
    if f.status and in_order:
        # One list: this user's generations in this status (migration 0020).
        parts = [f'tags : "q{f.status.lower()}{user}"']
    else:
        parts = [f'tags : "u{user}"']
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


def _remembered(store, name: str, compute) -> bool:
    """`compute()` once per store, kept on it as attribute `name` (asked again each time of a store that
    takes no attributes)."""
    cached = getattr(store, name, None)
    if cached is None:
        cached = compute()
        try:
            setattr(store, name, cached)
        except AttributeError:
            pass
    return cached


def has_fts5(store) -> bool:
    """Whether the SQLite store has the FTS5 index (an SQLite built without FTS5 has none: LIKE is used)."""
    def compute() -> bool:
        row = store.query_one("SELECT count(*) AS n FROM sqlite_master WHERE name = 'generations_fts'")
        return bool(row and row["n"])

    return _remembered(store, "_aigen_has_fts5", compute)


def fts5_tagged(store) -> bool:
    """Whether generations_fts has the tags of migration 0018 (a store whose 0014 index was made again
    after it, by hand, has the older layout: searched by words alone, as before 0018)."""
    def compute() -> bool:
        row = store.query_one("SELECT sql FROM sqlite_master WHERE name = 'generations_fts'")
        return bool(row and "tags" in (row["sql"] or "") and "generations_fts_docs" in (row["sql"] or ""))

    return _remembered(store, "_aigen_fts5_tagged", compute)


def fts5_in_order(store) -> bool:
    """Whether generations_fts is migration 0020's: row keys in created_at order, the user-and-status tag."""
    def compute() -> bool:
        row = store.query_one("SELECT count(*) AS n FROM sqlite_master WHERE name = 'generations_fts_unordered'")
        return bool(row and row["n"]) and fts5_tagged(store)

    return _remembered(store, "_aigen_fts5_in_order", compute)


def _sqlite_fts(store) -> bool:
    return getattr(store, "backend", "sqlite") == "sqlite" and has_fts5(store) and fts5_tagged(store)


def where_clause(store, user_id: str, f: Filters, alias: str = "g", *, to_count: bool = False) -> tuple[str, list]:
    """(SQL condition, parameters) selecting the user's generations that match `f`.

    `to_count`: for counting them, on PostgreSQL with words, the user and the status are left to the
    search index's tokens, which say the same: with them also written out, the planner ANDs the GIN
    index with the user's B-tree index (100,000 entries at fig5's scale) for nothing. A page keeps them,
    so that its first rows can come from walking the user's index in order.
    """
    a = alias
    pg_words = bool(f.words) and getattr(store, "backend", "sqlite") == "postgresql"
    where, params = [], []
    if not (to_count and pg_words):
        where.append(f"{a}.user_id = ?")
        params.append(user_id)
        if f.status:
            where.append(f"{a}.status = ?")
            params.append(f.status)
    if f.provider:
        where.append(f"({a}.image_provider = ? OR {a}.video_provider = ?)")
        params += [f.provider, f.provider]
    if f.words:
        if pg_words:
            # The GIN index of aigen_search_doc (pg_schema 0020): the words, and the user's token (with the
            # status when one is asked for), so the index finds only the user's matches.
            token = f"q {f.status.lower()} {user_id}" if f.status else f"u {user_id}"
            where.append(f"aigen_search_doc({a}.user_id, {a}.status, {a}.prompt) @@ "
                         "(plainto_tsquery('simple'::regconfig, ?) && ?::tsquery)")
            params += [" ".join(f.words), tsquery_lexeme(token)]
        elif has_fts5(store) and not fts5_tagged(store):
            where.append(f"{a}.id IN (SELECT gen_id FROM generations_fts WHERE generations_fts MATCH ?)")
            params.append(fts5_query(f.words))
        elif has_fts5(store):
            # The user's (and the filters') matches only, from the index itself (migration 0018).
            where.append(f"{a}.id IN (SELECT d.gen_id FROM generations_fts_docs d WHERE d.k IN "
                         "(SELECT rowid FROM generations_fts WHERE generations_fts MATCH ?))")
            params.append(fts5_match(user_id, f, fts5_in_order(store)))
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
    if _sqlite_fts(store):
        # Counted in the index alone: its tags carry the user, status and providers (migration 0018).
        row = store.query_one("SELECT count(*) AS n FROM generations_fts WHERE generations_fts MATCH ?",
                              (fts5_match(user_id, f, fts5_in_order(store)),))
        return int(row["n"])
    where, params = where_clause(store, user_id, f, to_count=True)
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


def _key_order(f: Filters, reverse: bool) -> str:
    return "DESC" if (f.order == "oldest") == reverse else "ASC"


def fts5_page(store, columns: str, user_id: str, f: Filters, page: int, page_size: int,
              matched: int) -> list[dict] | None:
    """Page `page` of a search with words, from the SQLite index alone (migration 0020); None when it cannot
    say exactly (the caller then uses page_of).

    The index's row keys follow created_at (to the millisecond, then a slot per generation of that
    millisecond), so a MATCH read in key order, newest or oldest first, is in the gallery's order and
    stops after the page: the rows before it (its OFFSET) are walked in the index's lists, nothing else
    read. Exact when every generation of the user has a key that follows its created_at (none counted
    in generations_fts_unordered) and no millisecond is split by the page's edges (the order within one
    millisecond is by id, which the keys do not follow): the key just before and just after the page
    are read too and compared. A page in the second half is read from the other end, as in page_of.
    """
    if not f.words or not _sqlite_fts(store) or not fts5_in_order(store):
        return None
    row = store.query_one("SELECT n FROM generations_fts_unordered WHERE user_id = ?", (user_id,))
    if row is not None and row["n"] > 0:
        return None
    start = (page - 1) * page_size
    n = min(page_size, matched - start)
    if n <= 0:
        return []
    reverse, offset = False, start
    if matched - start - n < start:
        reverse, offset = True, matched - start - n
    before = 1 if offset > 0 else 0
    keys = [r["k"] for r in store.query(
        "SELECT rowid AS k FROM generations_fts WHERE generations_fts MATCH ? "
        f"ORDER BY rowid {_key_order(f, reverse)} LIMIT ? OFFSET ?",
        (fts5_match(user_id, f, True), n + before + 1, offset - before))]
    page_keys = keys[before:before + n]
    if len(page_keys) != n:
        return None  # the index changed since the count: the general way
    ms = SEARCH_KEY_SLOTS
    if before and keys[0] // ms == page_keys[0] // ms:
        return None
    if len(keys) > before + n and keys[before + n] // ms == page_keys[-1] // ms:
        return None
    marks = ",".join("?" for _ in page_keys)
    rows = store.query(f"SELECT {columns} FROM generations g WHERE g.id IN "
                       f"(SELECT gen_id FROM generations_fts_docs WHERE k IN ({marks}))", page_keys)
    if len(rows) != n:
        return None
    rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=f.order != "oldest")
    return rows
