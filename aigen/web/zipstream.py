"""Download all: a generation's files as one zip, written while it is sent.

``zipfile`` writes into a sink that only collects what it was given since the last chunk was sent;
the generator hands each chunk to the WSGI server as soon as it exists. So the memory used is one
read buffer (64 KiB) and the zip's small central directory, whatever the size of the files: nothing is
built in memory or on disk first. Media are stored as they are (ZIP_STORED: PNG, JPEG and MP4 are
compressed already); the `prompt.txt` beside them is deflated. The files are read from the Storage
(the home's folder or S3), so the zip works the same for both.
"""

from __future__ import annotations

import logging
import re
import zipfile
from datetime import datetime, timezone

log = logging.getLogger("aigen.web")

CHUNK = 1 << 16


class _Sink:
    """A write-only, non-seekable file for zipfile: it keeps what was written until taken."""

    def __init__(self):
        self._parts: list[bytes] = []
        self._pos = 0

    def write(self, data) -> int:
        b = bytes(data)
        self._parts.append(b)
        self._pos += len(b)
        return len(b)

    def tell(self) -> int:  # zipfile asks where it is; it never seeks (the stream is not seekable)
        return self._pos

    def flush(self) -> None:
        pass

    def seekable(self) -> bool:
        return False

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _zip_time(iso_text: str | None) -> tuple:
    try:
        t = datetime.fromisoformat(iso_text).astimezone(timezone.utc) if iso_text else None
    except ValueError:
        t = None
    t = t or datetime(1980, 1, 1, tzinfo=timezone.utc)
    return (max(t.year, 1980), t.month, t.day, t.hour, t.minute, t.second)


_SLUG_RE = re.compile(r"[^A-Za-z0-9]+")


def zip_name(gen: dict) -> str:
    """`aigen-<first words of the prompt>-<id>.zip`, in characters that need no quoting anywhere."""
    slug = "-".join(_SLUG_RE.sub(" ", gen["prompt"]).split()[:6]).lower()[:60]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", f"aigen-{slug + '-' if slug else ''}{gen['id']}.zip")[:120]
    return cleaned


def members(gen: dict, assets: list[dict]) -> list[tuple[str, str, dict]]:
    """(name in the zip, storage key, asset) for every made file: `image_1.png`, ..., `video_5.mp4`."""
    out = []
    for a in sorted(assets, key=lambda a: (a["kind"] != "image", a["idx"])):
        if a["status"] != "done" or not a.get("path"):
            continue
        name = a["path"].rsplit("/", 1)[-1]
        out.append((name, a["path"], a))
    return out


def check_members(storage, gen: dict, files: list[tuple[str, str, dict]]) -> None:
    """Before a byte is sent: every file is in the generation's own folder (a tampered row raises BadKey, never
    another file is read, as for /media) and is in the storage (ObjectMissing; StorageError when it cannot say)."""
    from aigen.pipeline.delete import generation_prefix
    from aigen.storage import BadKey, validate_key

    own_prefix = generation_prefix(gen)
    for _, key, _a in files:
        if not validate_key(key).startswith(own_prefix):
            raise BadKey(f"{key!r} is not in the generation's own folder")
        storage.stat(key)


def stream_zip(storage, gen: dict, files: list[tuple[str, str, dict]], folder: str):
    """Yield the zip of `files` (see members()) under `folder/`, chunk by chunk."""
    sink = _Sink()
    streams = []
    try:
        with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            info = zipfile.ZipInfo(f"{folder}/prompt.txt", date_time=_zip_time(gen.get("created_at")))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (gen["prompt"] + "\n").encode("utf-8"))
            yield sink.take()  # never empty: the first chunk tells the server the answer has begun
            for name, key, a in files:
                info = zipfile.ZipInfo(f"{folder}/{name}", date_time=_zip_time(a.get("finished_at")))
                info.compress_type = zipfile.ZIP_STORED
                info.file_size = a.get("bytes") or 0
                src = storage.open(key)
                streams.append(src)
                # force_zip64 when the size is not known to be small: zipfile must decide before it writes.
                with zf.open(info, mode="w", force_zip64=(a.get("bytes") or 1 << 32) >= 1 << 31) as dst:
                    while True:
                        chunk = src.read(CHUNK)
                        if not chunk:
                            break
                        dst.write(chunk)
                        out = sink.take()
                        if out:
                            yield out
                src.close()
                streams.remove(src)
        yield sink.take()  # the central directory
    finally:
        for s in streams:
            try:
                s.close()
            except Exception:  # pragma: no cover - closing after a failure
                log.debug("could not close a zip source", exc_info=True)
