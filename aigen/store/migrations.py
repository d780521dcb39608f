"""Named, add-only schema migrations, applied when the store is opened.

A migration is never edited once released: a change of schema is a new
function appended here. sqlite-utils' ``Migrations`` records each applied name
in ``_sqlite_migrations`` and runs each one in a transaction.
"""

from __future__ import annotations

from typing import Any, Callable


class _Migrations:
    """sqlite-utils' ``Migrations("aigen")``, made when first used, with the names known before that.

    The functions below register here in order; the store compares ``names()`` with the table
    ``_sqlite_migrations`` in plain SQL, and builds the real ``Migrations`` (which imports sqlite-utils)
    only when something is pending. Everything else (``pending``, ``applied``, ``apply``) is the real
    object's.
    """

    migrations_table = "_sqlite_migrations"

    def __init__(self, name: str):
        self.name = name
        self._registered: list[tuple[str, Callable, bool]] = []
        self._real = None

    def __call__(self, *, name: str, transactional: bool = True) -> Callable:
        def inner(fn: Callable) -> Callable:
            if name in self.names():
                raise ValueError(f"Migration '{name}' is already registered in set '{self.name}'")
            self._registered.append((name, fn, transactional))
            if self._real is not None:
                self._real(name=name, transactional=transactional)(fn)
            return fn

        return inner

    def names(self) -> list[str]:
        """Every migration's name, in the order they are applied."""
        return [name for name, _, _ in self._registered]

    def real(self):
        if self._real is None:
            from sqlite_utils.migrations import Migrations

            real = Migrations(self.name)
            for name, fn, transactional in self._registered:
                real(name=name, transactional=transactional)(fn)
            self._real = real
        return self._real

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in ("_real", "_registered"):
            raise AttributeError(attr)
        return getattr(self.real(), attr)


migrations = _Migrations("aigen")


@migrations(name="0001_initial")
def m0001_initial(db):
    db["users"].create(
        {
            "user_id": str,
            "email": str,
            "created_at": str,
            "last_login_at": str,
        },
        pk="user_id",
        if_not_exists=True,
    )
    db["generations"].create(
        {
            "id": str,
            "user_id": str,
            "prompt": str,
            "status": str,
            "video_paths": str,  # JSON list of paths relative to the home
            "image_paths": str,  # JSON list of paths relative to the home
            "created_at": str,
            "updated_at": str,
            "generated_at": str,
            "image_provider": str,
            "video_provider": str,
            "image_model": str,
            "video_model": str,
            "image_count": int,
            "video_count": int,
            "seed": int,
            "options": str,  # JSON: sizes, duration, fps and provider options
            "notify_at": str,
            "notify_via": str,  # JSON list of channels
            "notify_email": str,
            "notified_at": str,
            "notify_status": str,
            "notify_error": str,
            "error": str,
        },
        pk="id",
        not_null={"user_id", "prompt", "status", "created_at"},
        defaults={"video_paths": "[]", "image_paths": "[]"},
        if_not_exists=True,
    )
    db["assets"].create(
        {
            "id": int,
            "generation_id": str,
            "kind": str,  # "image" | "video"
            "idx": int,  # 1-based index within its kind
            "provider": str,
            "model": str,
            "seed": int,
            "width": int,
            "height": int,
            "duration": float,
            "fps": int,
            "provider_job_id": str,
            "status": str,  # queued | running | done | failed
            "path": str,
            "poster_path": str,
            "bytes": int,
            "sha256": str,
            "attempts": int,
            "error": str,
            "error_code": str,
            "cost": float,
            "created_at": str,
            "started_at": str,
            "finished_at": str,
            "updated_at": str,
        },
        pk="id",
        foreign_keys=[("generation_id", "generations", "id")],
        not_null={"generation_id", "kind", "idx", "status"},
        defaults={"attempts": 0},
        if_not_exists=True,
    )
    db["events"].create(
        {
            "id": int,
            "at": str,
            "kind": str,
            "user_id": str,
            "ok": int,
            "reason": str,
            "address": str,
            "user_agent": str,
            "session_id": str,
            "generation_id": str,
            "asset_id": int,
            "detail": str,
        },
        pk="id",
        not_null={"at", "kind"},
        if_not_exists=True,
    )
    db["assets"].create_index(["generation_id", "kind", "idx"], unique=True, if_not_exists=True)
    # aigen status --user X / the gallery: newest first per user
    db["generations"].create_index(["user_id", "created_at"], if_not_exists=True)
    # aigen status (all users): newest first
    db["generations"].create_index(["created_at"], if_not_exists=True)
    # the notify daemon and "what is processing"
    db["generations"].create_index(["status", "notify_at"], if_not_exists=True)
    db["events"].create_index(["user_id", "at"], if_not_exists=True)
    db["events"].create_index(["kind", "at"], if_not_exists=True)


@migrations(name="0002_run_tracking")
def m0002_run_tracking(db):
    # Added after 0001 shipped: detached runs write a log file, and the status
    # view shows how far a running asset has got.
    gens = db["generations"]
    if "log_path" not in gens.columns_dict:
        gens.add_column("log_path", str)
    if "worker_pid" not in gens.columns_dict:
        gens.add_column("worker_pid", int)
    assets = db["assets"]
    if "progress" not in assets.columns_dict:
        assets.add_column("progress", float)


@migrations(name="0003_web_access")
def m0003_web_access(db):
    # The gallery: a per-user access code (only a salted scrypt hash is kept)
    # for logins on an address other than loopback, and an index that lets
    # the media route tell "first fetch of this asset in this session" from
    # the next Range request of the same video without scanning all events.
    users = db["users"]
    if "access_code_hash" not in users.columns_dict:
        users.add_column("access_code_hash", str)
    if "access_code_created_at" not in users.columns_dict:
        users.add_column("access_code_created_at", str)
    db["events"].create_index(["session_id", "asset_id"], if_not_exists=True)


@migrations(name="0004_notify_deliveries")
def m0004_notify_deliveries(db):
    # One row per generation per channel: each channel (desktop, email,
    # console) succeeds, retries and fails on its own, so each needs its own
    # claim, attempt count and error; the generation keeps a summary
    # (notify_status, notified_at, notify_channel, notify_error) for `status`.
    db["notifications"].create(
        {
            "id": int,
            "generation_id": str,
            "channel": str,  # what was asked for: desktop | email | console
            "recipient": str,  # email address, for the email channel
            "due_at": str,  # UTC ISO: the later of notify_at and completion
            "status": str,  # pending | sending | retrying | sent | failed
            "attempts": int,
            "first_attempt_at": str,
            "next_attempt_at": str,  # set while retrying (backoff)
            "claimed_by": str,  # host:pid:nonce of the process sending it
            "claimed_at": str,
            "lease_until": str,  # a claim older than this is taken over
            "sent_at": str,
            "delivered_via": str,  # what was used: console when desktop was unavailable
            "late_s": float,  # seconds after due_at that it was delivered
            "note": str,
            "error": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        foreign_keys=[("generation_id", "generations", "id")],
        not_null={"generation_id", "channel", "due_at", "status"},
        defaults={"attempts": 0, "status": "pending"},
        if_not_exists=True,
    )
    db["notifications"].create_index(["generation_id", "channel"], unique=True, if_not_exists=True)
    # The daemon's "what is due" scan.
    db["notifications"].create_index(["status", "due_at"], if_not_exists=True)
    gens = db["generations"]
    if "notify_channel" not in gens.columns_dict:
        gens.add_column("notify_channel", str)
    # Generations that are final but not yet planned: a partial index keeps
    # that scan small however many generations have already been notified.
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_generations_notify_unplanned "
        "ON generations (generated_at) WHERE notify_status IS NULL"
    )
    # Generations finished before notifications existed asked for nothing
    # explicit: mark them so the first daemon does not flood the user with
    # old news. Those with an explicit notify_at still get it (late).
    db.execute(
        "UPDATE generations SET notify_status = 'none' WHERE notify_status IS NULL "
        "AND notify_at IS NULL AND status IN ('Completed', 'Failed')"
    )


@migrations(name="0005_listing_indexes")
def m0005_listing_indexes(db):
    # Found by bench/fig5_scale.py (100,000 generations, 10,000 of one user):
    # counting a user's generations by status read every one of their rows
    # from the table and sorted them (12 ms, growing with the user), and every
    # newest-first list sorted on the `id` tie-break ("TEMP B-TREE FOR RIGHT
    # PART OF ORDER BY"), which made deep gallery pages cost a sort of all the
    # rows before them. Indexes that end with the whole ORDER BY (created_at,
    # id) let each list walk an index and stop after its LIMIT; (user_id,
    # status, ...) also answers the per-user counts from the index alone.
    # The older (user_id, created_at) and (created_at) indexes are prefixes of
    # these; migrations only add, so they stay.
    gens = db["generations"]
    gens.create_index(["user_id", "status", "created_at", "id"], if_not_exists=True)
    gens.create_index(["user_id", "created_at", "id"], if_not_exists=True)
    gens.create_index(["status", "created_at", "id"], if_not_exists=True)
    gens.create_index(["created_at", "id"], if_not_exists=True)


@migrations(name="0006_asset_notes")
def m0006_asset_notes(db):
    # A paid file of another size or length than asked is kept (issue 9, item
    # 2): `note` says how it differs ("asked 1024x1024, got 512x512"). A
    # refusal (moderation) is marked so that `aigen retry` does not submit the
    # same prompt again unless asked (item 3): providers report refusals with
    # their own codes (Runway SAFETY.*, Pictory's), so the code alone cannot
    # tell. Assets refused before this migration carry the "refused by ..."
    # message every Refused error has, or Runway's SAFETY.* code.
    assets = db["assets"]
    if "note" not in assets.columns_dict:
        assets.add_column("note", str)
    if "refused" not in assets.columns_dict:
        assets.add_column("refused", int)
    db.execute(
        "UPDATE assets SET refused = 1 WHERE status = 'failed' AND "
        "(error_code = 'refused' OR error_code LIKE 'SAFETY.%' OR error LIKE 'refused by %')"
    )


@migrations(name="0007_web_sessions")
def m0007_web_sessions(db):
    # Gallery sessions kept on the server, so that logging out, rotating or
    # revoking an access code, and `aigen user sessions --revoke-all` end a
    # session at once, whatever the cookie says. `id` is the SHA-256 of the
    # random session id the signed cookie carries: the database alone is not
    # enough to build a cookie.
    db["sessions"].create(
        {
            "id": str,
            "user_id": str,
            "kind": str,  # code | loopback | magic
            "created_at": str,
            "last_seen": str,  # touched at most once a minute
            "expires_at": str,
            "revoked_at": str,
            "revoked_why": str,  # logout | code rotated | code revoked | revoked by admin
            "address": str,
            "user_agent": str,
        },
        pk="id",
        not_null={"user_id", "kind", "created_at", "expires_at"},
        if_not_exists=True,
    )
    db["sessions"].create_index(["user_id", "created_at"], if_not_exists=True)
    # Magic links already used: a link opens one session, once. Kept until
    # the link would have expired anyway.
    db["spent_links"].create(
        {
            "token_hash": str,
            "user_id": str,
            "spent_at": str,
            "expires_at": str,
            "session_id": str,
        },
        pk="token_hash",
        not_null={"user_id", "spent_at", "expires_at"},
        if_not_exists=True,
    )
    db["spent_links"].create_index(["expires_at"], if_not_exists=True)


@migrations(name="0008_notify_unconfirmed_sends")
def m0008_notify_unconfirmed_sends(db):
    # Sends of an email whose end of DATA got a temporary error (or no answer):
    # the server may have stored the message, so it is sent again at most once
    # more (same Message-ID), never once per retry step.
    notes = db["notifications"]
    if "unconfirmed_sends" not in notes.columns_dict:
        notes.add_column("unconfirmed_sends", int, not_null_default=0)


@migrations(name="0010_sessions_ended_at")
def m0010_sessions_ended_at(db):
    # When all of a user's gallery sessions were last ended (code rotated or
    # revoked, `aigen user sessions --revoke-all`): a magic link made before
    # then is refused too, so a link still waiting in a mailbox cannot open a
    # new session after the user's access was taken back.
    users = db["users"]
    if "sessions_ended_at" not in users.columns_dict:
        users.add_column("sessions_ended_at", str)


@migrations(name="0012_login_failures")
def m0012_login_failures(db):
    # Failed gallery logins, one row each, so that every gallery process
    # sharing the database counts them alike (the limit is per address per
    # window, see aigen.web.auth.LoginLimiter). Rows older than the window are
    # deleted as new failures come in.
    db["login_failures"].create(
        {
            "id": int,
            "address": str,
            "at": str,
        },
        pk="id",
        not_null={"address", "at"},
        if_not_exists=True,
    )
    db["login_failures"].create_index(["address", "at"], if_not_exists=True)
    db["login_failures"].create_index(["at"], if_not_exists=True)


@migrations(name="0013_notify_daemons")
def m0013_notify_daemons(db):
    # Cluster mode: notify daemons run on several machines, so "is a daemon running?" (asked by
    # `aigen generate` on a laptop) cannot be answered by a lock file in one home. Each daemon on the
    # PostgreSQL store keeps its row here fresh (seen_at, every 30 s); the embedded store keeps using
    # the lock files in the home (the table stays empty there).
    db["notify_daemons"].create(
        {
            "owner": str,  # the claimant name: daemon@HOST:PID:NONCE
            "host": str,
            "pid": int,
            "home": str,
            "started_at": str,
            "seen_at": str,
            "stopped_at": str,
        },
        pk="owner",
        not_null={"host", "started_at", "seen_at"},
        if_not_exists=True,
    )
    # No index beyond the key: one row per daemon ever started on the cluster, read whole.


@migrations(name="0011_cluster_workers")
def m0011_cluster_workers(db):
    # `aigen worker` processes (cluster mode): one row per executor id, its
    # heartbeat every few seconds. A worker whose heartbeat is older than
    # AIGEN_WORKER_DEAD_AFTER is claimed by another one (state alive -> dead,
    # in one UPDATE, so exactly one worker recovers it), which then recovers
    # that executor's pending DBOS workflows.
    db["workers"].create(
        {
            "executor_id": str,
            "host": str,
            "pid": int,
            "started_at": str,
            "heartbeat_at": str,
            "state": str,  # alive | draining | stopped | dead
            "providers": str,  # comma-separated; empty: every provider
            "jobs": int,  # asset jobs running in it now
            "recovered_by": str,  # the executor that took over its workflows (state dead)
            "recovered_at": str,
        },
        pk="executor_id",
        not_null={"host", "pid", "started_at", "heartbeat_at", "state"},
        if_not_exists=True,
    )
    db["workers"].create_index(["state", "heartbeat_at"], if_not_exists=True)
    # `aigen cancel ID`: when the cancel was asked; running provider calls see
    # it at their next check (the reporter's should_stop) and stop.
    gens = db["generations"]
    if "cancel_requested_at" not in gens.columns_dict:
        gens.add_column("cancel_requested_at", str)


@migrations(name="0014_prompt_search")
def m0014_prompt_search(db):
    # Search by prompt text in the gallery: an FTS5 index of generations.prompt, kept in sync by triggers (a
    # prompt never changes, but the update trigger keeps the index right if one ever does). It stores its
    # own copy of the id and the prompt rather than pointing at the generations' rowids (an "external
    # content" table): generations has a text key, so its rowids may be renumbered by a VACUUM, which
    # would silently point the index at the wrong rows. PostgreSQL has a GIN index on to_tsvector instead
    # (pg_schema.py). A future migration that rebuilds `generations` (sqlite-utils' transform) must
    # create these triggers again. Without FTS5 in this SQLite (rare builds) the index is left out and
    # the search falls back to a LIKE scan (aigen.store.search).
    conn = db.conn
    try:
        conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS generations_fts USING fts5("
                     "gen_id UNINDEXED, prompt, tokenize = 'unicode61 remove_diacritics 2')")
    except Exception as e:  # sqlite3.OperationalError: no such module: fts5
        if "fts5" not in str(e):
            raise
        return
    conn.execute("""CREATE TRIGGER IF NOT EXISTS generations_fts_insert AFTER INSERT ON generations BEGIN
        INSERT INTO generations_fts (gen_id, prompt) VALUES (new.id, new.prompt);
    END""")
    conn.execute("""CREATE TRIGGER IF NOT EXISTS generations_fts_delete AFTER DELETE ON generations BEGIN
        DELETE FROM generations_fts WHERE gen_id = old.id;
    END""")
    conn.execute("""CREATE TRIGGER IF NOT EXISTS generations_fts_update AFTER UPDATE OF id, prompt ON generations
    BEGIN
        DELETE FROM generations_fts WHERE gen_id = old.id;
        INSERT INTO generations_fts (gen_id, prompt) VALUES (new.id, new.prompt);
    END""")
    # Backfill the generations made before this migration.
    conn.execute("INSERT INTO generations_fts (gen_id, prompt) SELECT id, prompt FROM generations "
                 "WHERE id NOT IN (SELECT gen_id FROM generations_fts)")


@migrations(name="0015_deleted_generations")
def m0015_deleted_generations(db):
    # A generation deleted from the gallery or by `aigen delete` leaves this line (no prompt, no files):
    # the daily asset limit of a user (config.toml [limits] assets_per_day) counts what was asked for,
    # so deleting what was made does not give the quota back.
    db["deleted_generations"].create(
        {
            "id": str,
            "user_id": str,
            "created_at": str,
            "deleted_at": str,
            "assets": int,  # image_count + video_count asked for
        },
        pk="id",
        not_null={"user_id", "created_at", "deleted_at"},
        if_not_exists=True,
    )
    db["deleted_generations"].create_index(["user_id", "created_at"], if_not_exists=True)


@migrations(name="0016_asset_thumbnails")
def m0016_asset_thumbnails(db):
    # The gallery's tiles show small previews (issue 11, item 1), not the full
    # file: a WebP 256 px (1x) and 512 px (2x) on the long side, made with each
    # image (and from each video's poster frame) and stored beside it. NULL: not
    # made yet (the gallery makes it when first shown; `aigen doctor --thumbnails`
    # makes them all).
    assets = db["assets"]
    if "thumb_path" not in assets.columns_dict:
        assets.add_column("thumb_path", str)
    if "thumb2x_path" not in assets.columns_dict:
        assets.add_column("thumb2x_path", str)


@migrations(name="0017_generation_counts")
def m0017_generation_counts(db):
    # Found by bench/fig5_scale.py at 1,000,000 generations (100,000 of one user): the gallery page and
    # `aigen status --user` counted the user's generations per status on every view (a walk of 100,000
    # index entries), the search form's provider list read every one of the user's rows, and a search
    # narrowed by status or provider counted its matches the same way. This table keeps those numbers per
    # (user, status, image provider, video provider), kept in step by triggers in the same transaction as
    # the change, so each of them reads a handful of rows whatever the number of generations. A provider
    # that is NULL is '' here (a key column cannot be NULL on PostgreSQL). Rows are never deleted (a count
    # may go back to 0); readers skip n = 0. A future migration that rebuilds `generations` must create
    # these triggers again (as those of 0014).
    conn = db.conn
    conn.execute("""CREATE TABLE IF NOT EXISTS generation_counts (
        user_id TEXT NOT NULL,
        status TEXT NOT NULL,
        image_provider TEXT NOT NULL DEFAULT '',
        video_provider TEXT NOT NULL DEFAULT '',
        n INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, status, image_provider, video_provider)
    )""")
    add = ("INSERT INTO generation_counts (user_id, status, image_provider, video_provider, n) "
           "VALUES (new.user_id, new.status, coalesce(new.image_provider, ''), coalesce(new.video_provider, ''), 1) "
           "ON CONFLICT (user_id, status, image_provider, video_provider) DO UPDATE SET n = n + 1;")
    remove = ("UPDATE generation_counts SET n = n - 1 WHERE user_id = old.user_id AND status = old.status "
              "AND image_provider = coalesce(old.image_provider, '') "
              "AND video_provider = coalesce(old.video_provider, '');")
    conn.execute(f"CREATE TRIGGER IF NOT EXISTS generation_counts_insert AFTER INSERT ON generations BEGIN {add} END")
    conn.execute(f"CREATE TRIGGER IF NOT EXISTS generation_counts_delete AFTER DELETE ON generations BEGIN {remove} END")
    conn.execute(f"""CREATE TRIGGER IF NOT EXISTS generation_counts_update
        AFTER UPDATE OF user_id, status, image_provider, video_provider ON generations
        WHEN old.user_id IS NOT new.user_id OR old.status IS NOT new.status
          OR old.image_provider IS NOT new.image_provider OR old.video_provider IS NOT new.video_provider
        BEGIN {remove} {add} END""")
    # The generations made before this migration.
    conn.execute("DELETE FROM generation_counts")
    conn.execute("INSERT INTO generation_counts (user_id, status, image_provider, video_provider, n) "
                 "SELECT user_id, status, coalesce(image_provider, ''), coalesce(video_provider, ''), count(*) "
                 "FROM generations GROUP BY 1, 2, 3, 4")


SEARCH_TAGS_SQL = ("'u' || hex({r}.user_id) || ' s' || lower({r}.status) || ' i' || hex(coalesce({r}.image_provider, '')) "
                   "|| ' v' || hex(coalesce({r}.video_provider, ''))")


def _drop_search_index(conn) -> bool:
    """Drop generations_fts and its triggers, to make them again; False when there is none (no FTS5 here)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'generations_fts'").fetchone() is None:
        return False
    for t in ("insert", "delete", "update"):
        conn.execute(f"DROP TRIGGER IF EXISTS generations_fts_{t}")
    conn.execute("DROP TABLE generations_fts")
    return True


@migrations(name="0018_search_by_user")
def m0018_search_by_user(db):
    # Found by bench/fig5_scale.py at 1,000,000 generations: a search found the prompt's words among every
    # user's generations (a common word: 180,000 matches), then read each match's id from the index's own
    # copy (one lookup each: ~0.5 s) to keep the user's. Now the index also holds, per generation, tokens
    # for its user, status and providers (`tags`: 'u' + hex of the user id, 's' + the status in lower
    # case, 'i' and 'v' + hex of the image and video provider), so a search asks the index for the
    # user's matches only (and, with filters, only those of that status or provider), and counts them
    # there. Its rows live in generations_fts_docs (an INTEGER PRIMARY KEY, kept by VACUUM, with the
    # generation's id under a unique index): the index is an "external content" FTS5 table on it, so a
    # generation's row is found by its id when it changes or goes, never by a scan (the triggers of 0014
    # scanned the whole index on every delete). The triggers of 0014 and its table are replaced; the
    # name generations_fts stays. Without FTS5 in this SQLite there was no index: the search keeps its
    # LIKE scan (aigen.store.search).
    conn = db.conn
    if not _drop_search_index(conn):
        return
    conn.execute("""CREATE TABLE IF NOT EXISTS generations_fts_docs (
        k INTEGER PRIMARY KEY,
        gen_id TEXT NOT NULL UNIQUE,
        prompt TEXT NOT NULL,
        tags TEXT NOT NULL
    )""")
    conn.execute("CREATE VIRTUAL TABLE generations_fts USING fts5(gen_id UNINDEXED, prompt, tags, "
                 "content = 'generations_fts_docs', content_rowid = 'k', "
                 "tokenize = 'unicode61 remove_diacritics 2')")
    new_tags, old_tags = SEARCH_TAGS_SQL.format(r="new"), SEARCH_TAGS_SQL.format(r="old")
    add = (f"INSERT INTO generations_fts_docs (gen_id, prompt, tags) VALUES (new.id, new.prompt, {new_tags}); "
           "INSERT INTO generations_fts (rowid, gen_id, prompt, tags) "
           "SELECT k, gen_id, prompt, tags FROM generations_fts_docs WHERE gen_id = new.id;")
    remove = ("INSERT INTO generations_fts (generations_fts, rowid, gen_id, prompt, tags) "
              "SELECT 'delete', k, gen_id, prompt, tags FROM generations_fts_docs WHERE gen_id = old.id; "
              "DELETE FROM generations_fts_docs WHERE gen_id = old.id;")
    conn.execute(f"CREATE TRIGGER generations_fts_insert AFTER INSERT ON generations BEGIN {add} END")
    conn.execute(f"CREATE TRIGGER generations_fts_delete AFTER DELETE ON generations BEGIN {remove} END")
    conn.execute(f"""CREATE TRIGGER generations_fts_update
        AFTER UPDATE OF id, prompt, user_id, status, image_provider, video_provider ON generations
        WHEN old.id IS NOT new.id OR old.prompt IS NOT new.prompt OR {old_tags} IS NOT {new_tags}
        BEGIN {remove} {add} END""")
    conn.execute(f"INSERT INTO generations_fts_docs (gen_id, prompt, tags) "
                 f"SELECT id, prompt, {SEARCH_TAGS_SQL.format(r='generations')} FROM generations")
    conn.execute("INSERT INTO generations_fts (generations_fts) VALUES ('rebuild')")


@migrations(name="0019_filter_indexes")
def m0019_filter_indexes(db):
    # Found by bench/fig5_scale.py: a page of the gallery filtered by provider (with or without a status)
    # walked the user's generations in order and read each one's row to test its providers, also for the
    # rows before the page (its OFFSET): 45,000 row reads for a middle page of 90,000 matches. These indexes
    # end with both providers, so the walk and the test stay in the index (on PostgreSQL, an index-only scan).
    # Named by hand: the names sqlite-utils would give are longer than PostgreSQL's 63 characters.
    db.execute("CREATE INDEX IF NOT EXISTS idx_generations_user_status_created_providers ON generations "
               "(user_id, status, created_at, id, image_provider, video_provider)")
    db.execute("CREATE INDEX IF NOT EXISTS idx_generations_user_created_providers ON generations "
               "(user_id, created_at, id, image_provider, video_provider)")


# Migration 0020's tags: those of 0018, and one token for the user and the status together ('q' + the status
# in lower case + hex of the user id), whose list in the index holds only that user's generations in that
# status (the status token of 0018 alone lists most generations of every user).
SEARCH_TAGS_SQL_0020 = (SEARCH_TAGS_SQL + " || ' q' || lower({r}.status) || hex({r}.user_id)")
# The search index's row key of a generation (migration 0020): its created_at as a number that sorts like the
# text (YYYYMMDDhhmmssfff, from the only form aigen writes: iso(), UTC with milliseconds) times 256, plus a slot
# for generations of the same millisecond. NULL for a created_at of another form.
SEARCH_KEY_BASE_SQL = (
    "(CASE WHEN {c} GLOB '[12][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
    ".[0-9][0-9][0-9]+00:00' THEN CAST(substr({c}, 1, 4) || substr({c}, 6, 2) || substr({c}, 9, 2) || "
    "substr({c}, 12, 2) || substr({c}, 15, 2) || substr({c}, 18, 2) || substr({c}, 21, 3) AS INTEGER) * 256 END)")


@migrations(name="0020_search_in_order")
def m0020_search_in_order(db):
    # Found by bench/fig5_scale.py at 1,000,000 generations: a search for the most common word (17,000 of a
    # user's 100,000 generations) took 86 ms, most of it in finding the page: every match's id was read
    # from the index's table and the user's generations were then walked in the page's order to find
    # them. Now the index's row keys (generations_fts_docs.k, the FTS5 rowid) follow the generations'
    # created_at (SEARCH_KEY_BASE_SQL), so the index gives a page of matches in the gallery's order by
    # itself, newest or oldest first, and stops there (aigen.store.search.fts5_page). A generation whose
    # created_at is not aigen's own form (or the 257th of one millisecond) gets the next free key instead:
    # in_order = 0, counted per user in generations_fts_unordered, and that user's searches take the
    # general way (every match, then the page). The user-and-status token (SEARCH_TAGS_SQL_0020) makes a search with a
    # status filter read only that user's list of that status. The update trigger now also follows
    # created_at. The triggers and tables of 0018 are replaced; the names stay.
    conn = db.conn
    if not _drop_search_index(conn):
        return
    conn.execute("DROP TABLE IF EXISTS generations_fts_docs")
    conn.execute("""CREATE TABLE generations_fts_docs (
        k INTEGER PRIMARY KEY,
        gen_id TEXT NOT NULL UNIQUE,
        prompt TEXT NOT NULL,
        tags TEXT NOT NULL,
        in_order INTEGER NOT NULL
    )""")
    conn.execute("""CREATE TABLE IF NOT EXISTS generations_fts_unordered (
        user_id TEXT PRIMARY KEY,
        n INTEGER NOT NULL
    )""")
    conn.execute("CREATE VIRTUAL TABLE generations_fts USING fts5(gen_id UNINDEXED, prompt, tags, "
                 "content = 'generations_fts_docs', content_rowid = 'k', "
                 "tokenize = 'unicode61 remove_diacritics 2')")
    new_tags, old_tags = SEARCH_TAGS_SQL_0020.format(r="new"), SEARCH_TAGS_SQL_0020.format(r="old")
    base = SEARCH_KEY_BASE_SQL.format(c="new.created_at")
    from aigen.store.search import SEARCH_KEY_SLOTS as slots

    # The key: the millisecond's first free slot (after the last one taken), or NULL (the next rowid) when
    # the created_at has no key or its millisecond is full.
    key = (f"(SELECT CASE WHEN b.base IS NULL THEN NULL WHEN m.k IS NULL THEN b.base "
           f"WHEN m.k + 1 < b.base + {slots} THEN m.k + 1 END "
           f"FROM (SELECT {base} AS base) b LEFT JOIN (SELECT max(k) AS k FROM generations_fts_docs "
           f"WHERE k BETWEEN {base} AND {base} + {slots - 1}) m)")
    add = (f"INSERT INTO generations_fts_docs (k, gen_id, prompt, tags, in_order) "
           f"SELECT kk, new.id, new.prompt, {new_tags}, kk IS NOT NULL FROM (SELECT {key} AS kk); "
           "INSERT INTO generations_fts (rowid, gen_id, prompt, tags) "
           "SELECT k, gen_id, prompt, tags FROM generations_fts_docs WHERE gen_id = new.id; "
           "INSERT INTO generations_fts_unordered (user_id, n) SELECT new.user_id, 1 FROM generations_fts_docs "
           "WHERE gen_id = new.id AND in_order = 0 ON CONFLICT (user_id) DO UPDATE SET n = n + 1;")
    remove = ("UPDATE generations_fts_unordered SET n = n - 1 WHERE user_id = old.user_id AND EXISTS "
              "(SELECT 1 FROM generations_fts_docs WHERE gen_id = old.id AND in_order = 0); "
              "INSERT INTO generations_fts (generations_fts, rowid, gen_id, prompt, tags) "
              "SELECT 'delete', k, gen_id, prompt, tags FROM generations_fts_docs WHERE gen_id = old.id; "
              "DELETE FROM generations_fts_docs WHERE gen_id = old.id;")
    conn.execute(f"CREATE TRIGGER generations_fts_insert AFTER INSERT ON generations BEGIN {add} END")
    conn.execute(f"CREATE TRIGGER generations_fts_delete AFTER DELETE ON generations BEGIN {remove} END")
    conn.execute(f"""CREATE TRIGGER generations_fts_update
        AFTER UPDATE OF id, prompt, user_id, status, image_provider, video_provider, created_at ON generations
        WHEN old.id IS NOT new.id OR old.prompt IS NOT new.prompt OR old.created_at IS NOT new.created_at
            OR {old_tags} IS NOT {new_tags}
        BEGIN {remove} {add} END""")
    # Every generation there is: those with a key first, in order (each millisecond's slots by id), then
    # the others, each with the next rowid.
    gbase = SEARCH_KEY_BASE_SQL.format(c="created_at")
    conn.execute(f"""INSERT INTO generations_fts_docs (k, gen_id, prompt, tags, in_order)
        SELECT base + slot, id, prompt, tags, 1 FROM (
            SELECT {gbase} AS base, row_number() OVER (PARTITION BY {gbase} ORDER BY id) - 1 AS slot,
                   id, prompt, {SEARCH_TAGS_SQL_0020.format(r='generations')} AS tags
            FROM generations)
        WHERE base IS NOT NULL AND slot < {slots} ORDER BY base + slot""")
    conn.execute(f"""INSERT INTO generations_fts_docs (gen_id, prompt, tags, in_order)
        SELECT id, prompt, {SEARCH_TAGS_SQL_0020.format(r='generations')}, 0 FROM generations
        WHERE id NOT IN (SELECT gen_id FROM generations_fts_docs)""")
    conn.execute("DELETE FROM generations_fts_unordered")
    conn.execute("""INSERT INTO generations_fts_unordered (user_id, n)
        SELECT g.user_id, count(*) FROM generations_fts_docs d JOIN generations g ON g.id = d.gen_id
        WHERE d.in_order = 0 GROUP BY g.user_id""")
    conn.execute("INSERT INTO generations_fts (generations_fts) VALUES ('rebuild')")
