"""Error types and the exit code each maps to.

Every error a user can cause or meet carries a message that names the value and
the rule, and optionally a hint saying what to do next. The CLI maps them to
exit codes: 2 for bad input (nothing was written), 1 for work that failed.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class AigenError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = EXIT_FAILED
    code = "error"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict:
        d = {"error": self.code, "message": self.message}
        if self.hint:
            d["hint"] = self.hint
        return d


class BadInput(AigenError):
    """The user gave a value that breaks a rule. Nothing has been written."""

    exit_code = EXIT_BAD_INPUT
    code = "bad_input"


class NotFound(BadInput):
    code = "not_found"


class MissingKey(BadInput):
    code = "missing_key"


class Busy(AigenError):
    """Another process is already working on the same generation."""

    code = "busy"


class MediaCheckError(AigenError):
    """A file that should be an image or a video is not a valid one."""

    code = "media_invalid"


class ProviderError(AigenError):
    """A provider call failed.

    ``retryable`` says whether trying again later may help (429, 5xx, network);
    ``provider_code`` carries the vendor's own failure code when there is one.
    """

    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        retryable: bool = False,
        provider_code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, hint)
        self.provider = provider
        self.retryable = retryable
        self.provider_code = provider_code
        self.status = status
        self.retry_after = retry_after


class Refused(ProviderError):
    """The provider refused the prompt or the output (moderation). Never retried."""

    code = "refused"

    def __init__(self, provider: str, reason: str, **kw):
        kw.setdefault("provider_code", "refused")
        super().__init__(f"refused by {provider}: {reason}", provider=provider, retryable=False, **kw)
        self.reason = reason


class QuotaExceeded(ProviderError):
    """The account has no credit or quota left: retrying will not help."""

    code = "quota_exceeded"


class ProviderTimeout(ProviderError):
    code = "timeout"


# -- faults of the machine: full disk, read-only home, broken database ---------

class NoSpace(AigenError):
    """A file or the database could not be written for lack of space (ENOSPC, EDQUOT).

    Exit 1: the work failed, but nothing is lost; what was made is kept and
    `aigen retry` completes the generation once space is freed.
    """

    code = "no_space"


class ReadOnlyHome(BadInput):
    """The home (a read-only mount, a backup copy) cannot be written, and this command must write."""

    code = "read_only_home"


class BrokenDatabase(BadInput):
    """aigen.db is not a usable SQLite database. It is never modified."""

    code = "database_broken"


_SPACE_ERRNOS = {"ENOSPC", "EDQUOT"}


def describe_os_error(e: BaseException, path=None, *, hint: str | None = None) -> AigenError | None:
    """The user-facing error for an OSError met by the machine, or None when it is not one we name.

    ENOSPC/EDQUOT -> NoSpace; EROFS -> ReadOnlyHome. ``path`` (else the
    error's own filename) names where it happened.
    """
    import errno as _errno

    if not isinstance(e, OSError):
        return None
    name = _errno.errorcode.get(e.errno or 0, "")
    where = path if path is not None else (e.filename or "")
    if name == "ENOSPC":
        return NoSpace(f"no space left on the device holding {where}",
                       hint=hint or "free some space on that device, then run the command again")
    if name == "EDQUOT":
        return NoSpace(f"disk quota exceeded on the device holding {where}",
                       hint=hint or "free some space (or raise the quota), then run the command again")
    if name == "EROFS":
        return read_only_home(where)
    return None


def read_only_home(path) -> ReadOnlyHome:
    return ReadOnlyHome(
        f"the home {path} is read-only (a read-only mount or a backup copy?): this command must write to it",
        hint="status, events, providers, keys list, doctor and serve still work there; to write, make it writable "
             "or choose another home with --home DIR or AIGEN_HOME",
    )


def describe_sqlite_error(e: BaseException, db_path) -> AigenError | None:
    """The user-facing error for an sqlite3 error on aigen.db, or None for one that is a bug."""
    import sqlite3

    if not isinstance(e, sqlite3.Error):
        return None
    text = str(e).lower()
    if "database or disk is full" in text or "disk i/o error" in text and "full" in text:
        return NoSpace(f"no space left on the device holding {db_path}",
                       hint="free some space on that device, then run the command again "
                            "(an interrupted generation completes with `aigen retry ID`)")
    if "readonly database" in text or "read-only" in text:
        from pathlib import Path

        return read_only_home(Path(db_path).parent)
    if ("not a database" in text or "malformed" in text or "unable to open database" in text
            or "disk i/o error" in text or "corrupt" in text):
        return broken_database(db_path, str(e))
    return None


def broken_database(db_path, why: str) -> BrokenDatabase:
    return BrokenDatabase(
        f"the database {db_path} cannot be used: {why}. It was not modified",
        hint=f"move it aside (mv {db_path} {db_path}.broken) and restore it from a backup, "
             "or check it with `aigen doctor`; aigen will not overwrite it",
    )


# -- the PostgreSQL store (cluster mode) -------------------------------------------------------------------------

class DatabaseUnavailable(AigenError):
    """The PostgreSQL server could not be reached, or the connection to it was lost (exit 1: try again)."""

    code = "database_unavailable"


class DatabaseRefused(BadInput):
    """The PostgreSQL server refused the configuration: wrong password, unknown user or database (exit 2)."""

    code = "database_refused"


def redact_url(url: str | None) -> str:
    """The database URL without its password (postgresql://user:***@host:port/db), safe to print."""
    if not url:
        return ""
    from urllib.parse import urlsplit, urlunsplit

    try:
        u = urlsplit(url)
        if u.password is None and "password=" not in (u.query or ""):
            return url
        netloc = u.netloc
        if u.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}"
        import re

        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", u.query or "")
        return urlunsplit((u.scheme, netloc, u.path, query, u.fragment))
    except ValueError:
        return "the configured database URL (not shown: it could not be parsed safely)"


def _scrub(text: str, url: str | None) -> str:
    """Remove the URL's password from a driver message, wherever it appears."""
    from urllib.parse import unquote, urlsplit

    text = " ".join(str(text).split())
    try:
        password = urlsplit(url or "").password
    except ValueError:
        password = None
    if password:
        for p in {password, unquote(password)}:
            if p:
                text = text.replace(p, "***")
    if url:
        text = text.replace(url, redact_url(url))
    return text


def describe_pg_error(e: BaseException, url: str | None) -> AigenError | None:
    """The user-facing error for a psycopg error on the PostgreSQL store, or None for one that is a bug.

    The URL's password never appears in the message (see redact_url).
    """
    mod = type(e).__module__ or ""
    if not mod.startswith("psycopg"):
        return None
    import psycopg

    where = redact_url(url) or "the PostgreSQL database"
    text = _scrub(str(e), url)
    low = text.lower()
    hint_env = "the store is set by AIGEN_DATABASE_URL or [cluster] database_url in config.toml"
    if isinstance(e, psycopg.errors.DiskFull) or "no space left" in low:
        return NoSpace(f"the PostgreSQL server at {where} has no space left: {text}",
                       hint="free space on the database server, then run the command again")
    if isinstance(e, psycopg.errors.TooManyConnections) or "too many clients" in low:
        return DatabaseUnavailable(f"PostgreSQL at {where} has too many connections: {text}",
                                   hint="try again later, or raise max_connections on the server")
    if isinstance(e, psycopg.OperationalError) or isinstance(e, psycopg.InterfaceError):
        if "password authentication failed" in low or "no password supplied" in low:
            return DatabaseRefused(f"PostgreSQL at {where} refused the password: {text}",
                                   hint=f"check the user and password in the URL; {hint_env}")
        if "does not exist" in low and ("database" in low or "role" in low):
            return DatabaseRefused(f"PostgreSQL at {where} refused the connection: {text}",
                                   hint=f"create the database (createdb) or fix the URL; {hint_env}")
        if "no pg_hba.conf entry" in low or "permission denied" in low:
            return DatabaseRefused(f"PostgreSQL at {where} refused the connection: {text}",
                                   hint=f"the server does not allow this user from this machine; {hint_env}")
        if ("terminating connection" in low or "server closed the connection" in low
                or "connection is closed" in low or "consuming input failed" in low or "connection is lost" in low
                or "lost" in low or isinstance(e, psycopg.errors.AdminShutdown)):
            return DatabaseUnavailable(f"lost the connection to PostgreSQL at {where}: {text}",
                                       hint="check that the database server is running, then run the command "
                                            "again (an interrupted generation completes with `aigen retry ID`)")
        return DatabaseUnavailable(f"cannot reach PostgreSQL at {where}: {text}",
                                   hint=f"check that the server is running and reachable; {hint_env}")
    if isinstance(e, psycopg.errors.ReadOnlySqlTransaction):
        return DatabaseRefused(f"PostgreSQL at {where} is read-only (a standby?): {text}",
                               hint="point AIGEN_DATABASE_URL at the primary server")
    if isinstance(e, psycopg.errors.InsufficientPrivilege):
        return DatabaseRefused(f"PostgreSQL at {where} refused: {text}",
                               hint="the database user needs the right to create tables and write rows in it")
    return None
