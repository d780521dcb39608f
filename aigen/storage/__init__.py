"""Where generated files are kept: a folder in the home, or S3-compatible object storage.

This is the ``Storage`` seam of the cluster shape (see DESIGN.md, "Two shapes").
The pipeline (aigen.pipeline.run), the gallery's media route and `aigen doctor`
go through it; with the default LocalStorage they do exactly what they did
before it existed (files renamed into place in the home, served from there).
`aigen --help` and `aigen status` never import it.

Keys mirror today's layout, ``generated_content/<user>/<generation>/<file>``,
relative to the home (local) or to the bucket's prefix (S3). User ids are
untrusted, so every key is checked by ``validate_key`` before any backend
touches it: no empty, ``.`` or ``..`` segment, no leading or trailing slash,
no backslash, no control character.

The contract both backends keep:

- ``put_file(tmp, key)`` places an already checked local temporary file under
  ``key``. A reader sees either no object or the whole file, never part of it.
  On success the temporary file is gone (moved into place, or uploaded and
  removed); on failure it is left where it was, so nothing paid for is lost.
- ``exists``/``size``/``open_range``/``delete``/``list`` as named;
  ``open_range(key, start, end)`` reads bytes ``start..end`` inclusive, like an
  HTTP Range (``end=None``: to the end).
- ``stat(key)`` is (size, modification time).
- ``presigned_url(key, expires_s)`` is a URL anyone holding it may GET until it
  expires, or ``None`` when the backend has no URLs (local: stream the file).

Every failure is an ``AigenError`` with a message for the user (bad
credentials, missing bucket, unreachable endpoint, ...), never a traceback.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping

from ..errors import AigenError, BadInput

CONTENT_PREFIX = "generated_content"
MAX_KEY_BYTES = 1024


class StorageError(AigenError):
    """The storage backend failed (unreachable, refused the credentials, no such bucket, ...)."""

    code = "storage_error"

    def __init__(self, message: str, hint: str | None = None, *, retryable: bool = False):
        super().__init__(message, hint)
        self.retryable = retryable


class ObjectMissing(StorageError):
    """No object is stored under the key."""

    code = "storage_missing"


class BadKey(BadInput):
    """A storage key that breaks the rules (traversal, absolute, control characters)."""

    code = "bad_storage_key"


class BadRange(BadInput):
    code = "bad_range"


def validate_key(key: object) -> str:
    """Return ``key`` if it is a safe relative object key, else raise BadKey naming the rule it breaks."""
    if not isinstance(key, str):
        raise BadKey(f"a storage key must be text, not {type(key).__name__}")
    shown = repr(key) if len(key) <= 120 else repr(key[:120]) + "..."
    if not key:
        raise BadKey("a storage key cannot be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise BadKey(f"the storage key {shown} is longer than {MAX_KEY_BYTES} bytes")
    for ch in key:
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in "\u2028\u2029":
            raise BadKey(f"the storage key {shown} contains a control character ({ch!r})")
    if "\\" in key:
        raise BadKey(f"the storage key {shown} contains a backslash")
    if key.startswith("/"):
        raise BadKey(f"the storage key {shown} starts with '/': keys are relative")
    if key.endswith("/"):
        raise BadKey(f"the storage key {shown} ends with '/': a key names a file")
    for seg in key.split("/"):
        if seg in ("", ".", ".."):
            raise BadKey(f"the storage key {shown} has an empty, '.' or '..' segment")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: '' (everything), or a key's beginning (may end with '/')."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def content_key(user: str, generation: str | int, filename: str) -> str:
    """The key of one generated file: ``generated_content/<user>/<generation>/<filename>``.

    Each part must be one path segment (no '/'), so a user id cannot climb out
    of its own folder.
    """
    parts = [str(user), str(generation), str(filename)]
    for name, part in zip(("user", "generation", "file name"), parts):
        if "/" in part or part in ("", ".", ".."):
            raise BadKey(f"the {name} {part!r} cannot be used in a storage key (one path segment, not '.' or '..')")
    return validate_key("/".join([CONTENT_PREFIX, *parts]))


class ByteStream:
    """A read-only stream over part of an object: ``read(n)``, iteration by chunks, a context manager."""

    def __init__(self, raw, length: int, *, on_error=None, chunk_size: int = 1 << 16):
        self._raw = raw
        self.length = length
        self._left = length
        self._on_error = on_error
        self._chunk = chunk_size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n is None or n < 0 else min(n, self._left)
        try:
            data = self._raw.read(want)
        except Exception as e:  # noqa: BLE001 - mapped to an AigenError by the backend
            if self._on_error is None:
                raise
            raise self._on_error(e) from None
        self._left -= len(data)
        return data

    def __iter__(self):
        while True:
            chunk = self.read(self._chunk)
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        close = getattr(self._raw, "close", None)
        if close is not None:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Storage:
    """The interface both backends implement (see the module docstring for the contract)."""

    #: whether presigned_url returns URLs (S3) or None (local: stream the bytes instead)
    has_urls = False

    def put_file(self, local_tmp_path, key: str) -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def size(self, key: str) -> int:
        raise NotImplementedError

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> ByteStream:
        raise NotImplementedError

    def open(self, key: str) -> ByteStream:
        return self.open_range(key, 0, None)

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as s:
            return s.read()

    def stat(self, key: str) -> tuple[int, float]:
        """(size in bytes, modification time as a Unix time) of the object; ObjectMissing if there is none."""
        raise NotImplementedError

    def presigned_url(self, key: str, expires_s: int = 300, *, download_name: str | None = None) -> str | None:
        """A URL to GET the object until it expires; with download_name, the answer carries
        ``Content-Disposition: attachment; filename="..."`` (a name that needs no quoting)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def check_range(key: str, size: int, start: int, end: int | None) -> tuple[int, int]:
    """Clamp an inclusive byte range to an object's size; (start, length). Raise BadRange if unsatisfiable."""
    if not isinstance(start, int) or start < 0 or (end is not None and (not isinstance(end, int) or end < start)):
        raise BadRange(f"bad byte range {start}-{'' if end is None else end} for {key}")
    if size == 0 and start == 0:
        return 0, 0
    if start >= size:
        raise BadRange(f"byte range starts at {start} but {key} has only {size} bytes")
    last = size - 1 if end is None else min(end, size - 1)
    return start, last - start + 1


def check_expiry(expires_s: int) -> int:
    if not isinstance(expires_s, int) or not 1 <= expires_s <= 7 * 24 * 3600:
        raise BadInput(f"a presigned URL's lifetime must be 1 s to 7 days, not {expires_s!r}")
    return expires_s


def from_config(home, env: Mapping[str, str] | None = None) -> Storage:
    """The storage chosen by configuration: ``AIGEN_STORAGE_URL=s3://BUCKET/PREFIX`` or, by default, the home.

    ``AIGEN_STORAGE_URL`` may also be ``file:///abs/path`` (a local root other
    than the home).
    """
    env = os.environ if env is None else env
    url = (env.get("AIGEN_STORAGE_URL") or "").strip()
    if not url:
        from .local import LocalStorage

        return LocalStorage(home)
    if url.startswith("s3://"):
        from .s3 import S3Storage

        return S3Storage.from_url(url, env)
    if url.startswith("file://"):
        from .local import LocalStorage

        path = url[len("file://"):]
        if not path.startswith("/"):
            raise BadInput(f"AIGEN_STORAGE_URL={url!r}: a file:// URL needs an absolute path (file:///srv/aigen)")
        return LocalStorage(path)
    raise BadInput(f"AIGEN_STORAGE_URL={url!r} is not understood",
                   hint="use s3://BUCKET/PREFIX for object storage, or leave it unset to keep files in the home")


__all__ = [
    "BadKey", "BadRange", "ByteStream", "CONTENT_PREFIX", "ObjectMissing", "Storage", "StorageError",
    "content_key", "from_config", "validate_key", "validate_prefix",
]
