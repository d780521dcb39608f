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
from pathlib import Path

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".mp4": "video/mp4",
}
CHUNK = 256 * 1024
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@functools.lru_cache(maxsize=16)
def _real_root(home_path: str) -> str:
    return os.path.realpath(home_path)


def resolve_in_home(home_path: Path, rel: str | None) -> Path | None:
    """The file a row points to, or None if it is missing or lies outside the home.

    os.path rather than pathlib, and the home resolved once: this runs for
    every Range request of a video, and pathlib's resolve() was a third of
    the cost of one (bench/fig4_gallery.py).
    """
    if not rel or "\x00" in rel:
        return None
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", rel):
        return None
    root = _real_root(str(home_path))
    full = os.path.realpath(os.path.join(root, rel))
    if not full.startswith(root + os.sep):
        return None
    return Path(full) if os.path.isfile(full) else None


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """One byte range as (start, end inclusive); "unsatisfiable"; or None to send the whole file.

    Several ranges in one header are answered with the whole file, which
    RFC 9110 allows and which no browser media element asks for anyway.
    """
    if not header:
        return None
    m = _RANGE_RE.match(header)
    if not m:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # syntactically invalid: ignored, the whole file is sent
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    # Weak comparison, as If-None-Match requires: W/"x" matches "x".
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return etag in tags


def _read(path: Path, start: int, length: int):
    with open(path, "rb") as fh:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            block = fh.read(min(CHUNK, remaining))
            if not block:
                break
            remaining -= len(block)
            yield block


def file_response(path: Path, environ: dict, *, etag_seed: str | None = None, download_name: str | None = None,
                  cache_control: str = "private, no-cache"):
    """Build a bottle HTTPResponse for `path` honouring conditional and Range requests.

    Returns (response, byte_range) where byte_range is (start, end) of what is
    sent, or None for a 304/416, so the caller can tell a first fetch from the
    continuation of a video.
    """
    from bottle import HTTPResponse

    st = path.stat()
    size = st.st_size
    # A strong ETag: from the content hash recorded in the database when there
    # is one, else from size and modification time.
    seed = etag_seed[:32] if etag_seed else f"{size:x}-{st.st_mtime_ns:x}"
    etag = f'"{seed}"'
    headers = {
        "Content-Type": CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": http_date(st.st_mtime),
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
        parsed = email.utils.parsedate_tz(ims)
        not_modified = parsed is not None and int(st.st_mtime) <= email.utils.mktime_tz(parsed)
    else:
        not_modified = False
    if not_modified:
        for h in ("Content-Type", "Content-Disposition"):
            headers.pop(h, None)
        return HTTPResponse(status=304, headers=headers), None

    rng = parse_range(environ.get("HTTP_RANGE"), size)
    if_range = environ.get("HTTP_IF_RANGE")
    if rng is not None and if_range:
        # The client's copy changed since it got the first part: send it all.
        if if_range.startswith('"') or if_range.startswith("W/"):
            if if_range.strip() != etag:
                rng = None
        else:
            parsed = email.utils.parsedate_tz(if_range)
            if parsed is None or email.utils.mktime_tz(parsed) < int(st.st_mtime):
                rng = None
    if rng == "unsatisfiable":
        headers.pop("Content-Disposition", None)
        headers["Content-Range"] = f"bytes */{size}"
        headers["Content-Type"] = "text/plain; charset=utf-8"
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
        body = []
    elif _server_sends_files(environ):
        # Hand waitress the open file, positioned at the start of the range: it
        # sends exactly Content-Length bytes from there straight to the socket,
        # without copying every block through its output buffer (which spills
        # to a temporary file past 1 MiB). Measured in bench/fig4_gallery.py.
        fh = open(path, "rb")
        fh.seek(start)
        body = fh
    else:
        body = _read(path, start, length)
    return HTTPResponse(body=body, status=status, headers=headers), (start, end)


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
