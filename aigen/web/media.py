"""Serve one file that the database named: Range (206), ETag, Last-Modified.

The caller has already looked the asset up by id and checked its owner; this
module only turns a path relative to the home into a response, refusing any
path that would leave the home (a tampered row must not serve /etc/passwd).
"""

from __future__ import annotations

import email.utils
import functools
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
}
CHUNK = 256 * 1024
# One range, matched in full (re.fullmatch, so no trailing newline slips
# through a "$"), ASCII digits only (\d would take other scripts' digits).
_RANGE_RE = re.compile(r"[ \t]*bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*", re.IGNORECASE)
# Longer numbers are not converted (int() of thousands of digits is slow and
# refused past 4300 digits): any of them is beyond every file there is.
_MAX_DIGITS = 18
_HUGE = 10 ** _MAX_DIGITS
# The three HTTP-date forms a recipient must accept (RFC 9110 5.6.7), in full.
_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                       "dec"), start=1)}
_MON = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_IMF_RE = re.compile(r"[A-Za-z]{3}, ([0-9]{2}) " + _MON + r" ([0-9]{4}) " + _TIME + r" GMT")
_RFC850_RE = re.compile(r"[A-Za-z]{6,9}, ([0-9]{2})-" + _MON + r"-([0-9]{2}) " + _TIME + r" GMT")
_ASCTIME_RE = re.compile(r"[A-Za-z]{3} " + _MON + r" ([0-9 ][0-9]) " + _TIME + r" ([0-9]{4})")


@functools.lru_cache(maxsize=16)
def _real_root(home_path: str) -> str:
    return os.path.realpath(home_path)


def real_path_in_home(home_path: Path, rel: str | None) -> str | None:
    """The real path (symbolic links resolved) of what a row names, or None if it would lie outside the home.

    os.path rather than pathlib, and the home resolved once: pathlib's
    resolve() was a third of the cost of a Range request. The gallery keeps
    the answer for a few seconds per session and asset (MediaGrants), so a
    video's Range requests resolve it once.
    """
    if not rel or "\x00" in rel:
        return None
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", rel):
        return None
    root = _real_root(str(home_path))
    full = os.path.realpath(os.path.join(root, rel))
    if not full.startswith(root + os.sep):
        return None
    return full


def resolve_in_home(home_path: Path, rel: str | None) -> Path | None:
    """The file a row points to, or None if it is missing or lies outside the home."""
    full = real_path_in_home(home_path, rel)
    return Path(full) if full is not None and os.path.isfile(full) else None


@dataclass(frozen=True)
class Grant:
    """What one session was found allowed to fetch of one asset: the asset's row (with its owner), the key
    the row names for the file asked for, and (files in the home) that file's real path."""

    row: dict
    rel: str
    path: str | None = None


class MediaGrants:
    """(session, asset, variant) -> Grant, for TTL_S seconds at most: the ownership lookup and the path
    checks of /media done once for a video's many Range requests, not for each.

    Never trusted alone. The session is still checked on every request
    (its row in `sessions`, Gallery.current_user) before this is looked at,
    so a session ended anywhere (logout, a new login, `aigen user code
    --rotate/--revoke`, `aigen user sessions --revoke-all`, another gallery
    process) fetches nothing more at once; the gallery also drops a session's
    grants when it ends it or finds it ended. Each request opens the file
    again (a deleted generation's files are gone before its rows: a 404 at
    once), and a delete, Retry or Resume in this process drops the
    generation's grants. What is left to the TTL is only a change made by
    another process that leaves the file in place, which no aigen command
    makes to a done asset.
    """

    TTL_S = 5.0
    MAX = 20_000

    def __init__(self, monotonic: Callable[[], float] = time.monotonic, ttl_s: float = TTL_S, size: int = MAX):
        self.monotonic, self.ttl_s, self.size = monotonic, ttl_s, size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_key: str, asset_id: int, variant: str | None) -> Grant | None:
        key = (session_key, asset_id, variant)
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            expires, grant = item
            if self.monotonic() >= expires:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return grant

    def put(self, session_key: str, asset_id: int, variant: str | None, grant: Grant) -> None:
        with self._lock:
            self._items[(session_key, asset_id, variant)] = (self.monotonic() + self.ttl_s, grant)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def _drop(self, keep: Callable[[tuple, Grant], bool]) -> int:
        with self._lock:
            gone = [k for k, (_, grant) in self._items.items() if not keep(k, grant)]
            for k in gone:
                del self._items[k]
            return len(gone)

    def drop(self, session_key: str, asset_id: int, variant: str | None) -> None:
        with self._lock:
            self._items.pop((session_key, asset_id, variant), None)

    def drop_session(self, session_key: str) -> int:
        return self._drop(lambda k, g: k[0] != session_key)

    def drop_generation(self, generation_id: str) -> int:
        return self._drop(lambda k, g: g.row["generation_id"] != generation_id)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """One byte range as (start, end inclusive); "unsatisfiable"; or None to send the whole file.

    Several ranges in one header are answered with the whole file, which
    RFC 9110 allows and which no browser media element asks for anyway.
    Anything else that is not one well-formed byte range (garbage, another
    unit, a negative or reversed range) is ignored, as RFC 9110 says, and the
    whole file is sent; numbers too long to be an offset count as "beyond the
    end". Never raises.
    """
    if not header:
        return None
    m = _RANGE_RE.fullmatch(header)
    if not m:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        n = _number(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = _number(first)
    end = _number(last) if last else size - 1
    if last and end < start:
        return None  # syntactically invalid: ignored, the whole file is sent
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > _MAX_DIGITS else int(digits)


def parse_http_date(value: str | None) -> int | None:
    """An HTTP-date header as a Unix time; None when it is not a real date in one of the three forms.

    Strict, unlike email.utils.parsedate_tz, which takes "32 Dec", a year of
    99999 or an offset of 10**20 hours and then fails (or overflows) when the
    tuple is turned into a time: here such a date is simply not a date, and
    the header that carries it is ignored.
    """
    if not value or len(value) > 64:
        return None
    value = value.strip(" \t")
    if m := _IMF_RE.fullmatch(value):
        day, mon, year, hh, mm, ss = m.groups()
    elif m := _RFC850_RE.fullmatch(value):
        day, mon, yy, hh, mm, ss = m.groups()
        # Two-digit years (RFC 9110): within 50 years of now; 1970-2069 is
        # as good for file times, and needs no clock.
        year = str(1900 + int(yy) if int(yy) >= 70 else 2000 + int(yy))
    elif m := _ASCTIME_RE.fullmatch(value):
        mon, day, hh, mm, ss, year = m.groups()
    else:
        return None
    try:
        # Second 60 is a leap second, allowed by the grammar.
        when = datetime(int(year), _MONTHS[mon.lower()], int(day), int(hh), int(mm), min(int(ss), 59),
                        tzinfo=timezone.utc)
    except ValueError:
        return None  # day 31 of a 30-day month, hour 25, year 0...
    return int(when.timestamp())


def http_date(ts: float) -> str:
    return _http_date(int(ts))


@functools.lru_cache(maxsize=1024)
def _http_date(ts: int) -> str:
    # A file's Last-Modified, again for each of its Range requests: formatted once.
    return email.utils.formatdate(ts, usegmt=True)


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    # Weak comparison, as If-None-Match requires: W/"x" matches "x".
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return etag in tags


class _FileRange:
    """`length` bytes of an open file from `start`, as a WSGI body the server closes (no ``read``: see _Body)."""

    def __init__(self, fh, start: int, length: int):
        self._fh, self._start, self._length = fh, start, length

    def __iter__(self):
        fh = self._fh
        fh.seek(self._start)
        remaining = self._length
        while remaining > 0:
            block = fh.read(min(CHUNK, remaining))
            if not block:
                break
            remaining -= len(block)
            yield block

    def close(self) -> None:
        self._fh.close()


def file_response(path: Path | str, environ: dict, *, etag_seed: str | None = None,
                  download_name: str | None = None, cache_control: str = "private, no-cache", raw: bool = False):
    """Build a bottle HTTPResponse for `path` honouring conditional and Range requests.

    Returns (response, byte_range) where byte_range is (start, end) of what is
    sent, or None for a 304/416, so the caller can tell a first fetch from the
    continuation of a video. Raises FileNotFoundError when `path` is not a
    regular file (any more): the file is opened once, and what is sent is
    what was opened. `raw`: ((status, headers, content), byte_range) instead of a bottle response
    (see _respond).
    """
    try:
        # Unbuffered: what is sent is sent by waitress (os.sendfile) or read in large blocks, and a
        # buffered reader costs an isatty() and a few seeks per request.
        fh = open(path, "rb", buffering=0)
    except IsADirectoryError:
        raise FileNotFoundError(path) from None
    try:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(path)
        used = []

        def body(start: int, length: int):
            used.append(True)
            if _server_sends_files(environ):
                # Hand waitress the open file, positioned at the start of the range: it
                # sends exactly Content-Length bytes from there to the socket (with
                # os.sendfile, aigen.web.server), without copying every block through its
                # output buffer (which spills to a temporary file past 1 MiB).
                fh.seek(start)
                return fh
            return _FileRange(fh, start, length)

        # A strong ETag: from the content hash recorded in the database when there
        # is one, else from size and modification time.
        result = _respond(environ, size=st.st_size, mtime=st.st_mtime, mtime_ns=st.st_mtime_ns,
                          suffix=os.path.splitext(path)[1], etag_seed=etag_seed, download_name=download_name,
                          cache_control=cache_control, body=body, raw=raw)
    except BaseException:
        fh.close()
        raise
    if not used:
        fh.close()  # a 304, a 416, a HEAD: nothing of it is sent
    return result


def _respond(environ: dict, *, size: int, mtime: float, mtime_ns: int, suffix: str, etag_seed: str | None,
             download_name: str | None, cache_control: str, body, raw: bool = False):
    """HTTP's rules for one file whatever holds it: ETag and Last-Modified, 304, one Range, If-Range, 416, HEAD.

    ``body(start, length)`` gives the bytes to send (a seeked file, a generator, a stream). Returns
    (bottle HTTPResponse, byte_range); `raw`: ((status code, headers dict, content), byte_range), for a
    caller that answers without bottle (Gallery.media_fast).
    """
    if raw:
        def HTTPResponse(body=(), status=200, headers=None):  # noqa: N802 - stands in for bottle's class
            return status, headers, body
    else:
        from bottle import HTTPResponse

    seed = etag_seed[:32] if etag_seed else f"{size:x}-{mtime_ns:x}"
    etag = f'"{seed}"'
    headers = {
        "Content-Type": CONTENT_TYPES.get(suffix.lower(), "application/octet-stream"),
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": http_date(mtime),
        "Cache-Control": cache_control,
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if download_name:
        headers["Content-Disposition"] = f'attachment; filename="{download_name}"'

    inm = environ.get("HTTP_IF_NONE_MATCH")
    ims = environ.get("HTTP_IF_MODIFIED_SINCE")
    if inm is not None:
        not_modified = _etag_matches(inm, etag)
    elif ims:
        # Not a valid date: the header is ignored (RFC 9110 13.1.3).
        since = parse_http_date(ims)
        not_modified = since is not None and int(mtime) <= since
    else:
        not_modified = False
    if not_modified:
        # Last-Modified too, as bottle leaves it out of every 304 (a response made without it: the same).
        for h in ("Content-Type", "Content-Disposition", "Last-Modified"):
            headers.pop(h, None)
        return HTTPResponse(status=304, headers=headers), None

    rng = parse_range(environ.get("HTTP_RANGE"), size)
    # An empty If-Range is no If-Range.
    if_range = (environ.get("HTTP_IF_RANGE") or "").strip(" \t")
    if rng is not None and if_range:
        # The client's copy changed since it got the first part: send it all.
        if if_range.startswith('"') or if_range.startswith("W/"):
            if if_range != etag:
                rng = None
        else:
            # A date that is not one (or not this file's time) validates nothing.
            since = parse_http_date(if_range)
            if since is None or since < int(mtime):
                rng = None
    if rng == "unsatisfiable":
        headers.pop("Content-Disposition", None)
        headers["Content-Range"] = f"bytes */{size}"
        headers["Content-Type"] = "text/plain; charset=utf-8"
        headers["Content-Length"] = "0"
        return HTTPResponse(body=b"", status=416, headers=headers), None
    if rng is None:
        start, end, status = 0, size - 1, 200
    else:
        start, end = rng
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    length = end - start + 1 if size else 0
    headers["Content-Length"] = str(length)
    if environ.get("REQUEST_METHOD") == "HEAD" or length == 0:
        content = []
    else:
        content = body(start, length)
    return HTTPResponse(body=content, status=status, headers=headers), (start, end)


def _server_sends_files(environ: dict) -> bool:
    """True when wsgi.file_wrapper is waitress's, which honours Content-Length.

    Bottle hands any file-like body to wsgi.file_wrapper; a generic wrapper
    (wsgiref's, Bottle's own) would read to the end of the file and send more
    than the range, so only waitress's is trusted with a seeked file.
    """
    wrapper = environ.get("wsgi.file_wrapper")
    return wrapper is not None and getattr(wrapper, "__module__", "").startswith("waitress")


def safe_download_name(name: str) -> str:
    """A Content-Disposition filename: only characters that need no quoting anywhere."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:120]
    return cleaned or "download"


class _Body:
    """An object's bytes as a WSGI body: iterated in chunks, closed by the server when it is done.

    Deliberately no ``read``: Bottle would hand anything with one to the
    server's file wrapper, which is only trusted with real files.
    """

    def __init__(self, stream):
        self._stream = stream

    def __iter__(self):
        return iter(self._stream)

    def close(self) -> None:
        self._stream.close()


def storage_response(storage, key: str, environ: dict, *, etag_seed: str | None = None,
                     download_name: str | None = None, cache_control: str = "private, no-cache"):
    """The response for an object of a Storage backend, streamed through this server (AIGEN_MEDIA_DELIVERY=stream).

    The same rules as file_response (one _respond for both); the bytes come
    from ``storage.open_range``. Returns (response, byte_range) like
    file_response. Raises ObjectMissing when the object is gone (the caller
    answers 404).
    """
    size, mtime = storage.stat(key)
    return _respond(environ, size=size, mtime=mtime, mtime_ns=int(mtime * 1e9), suffix=os.path.splitext(key)[1],
                    etag_seed=etag_seed, download_name=download_name, cache_control=cache_control,
                    body=lambda start, length: _Body(storage.open_range(key, start, start + length - 1)))


def first_byte_asked(header: str | None) -> tuple[int, int] | None:
    """Where a Range header starts, without knowing the object's size (for the redirect's view log):
    (start, start), or None when it asks from the beginning or is not one range."""
    rng = parse_range(header, _HUGE)
    if not isinstance(rng, tuple):
        return None
    return rng[0], rng[0]
