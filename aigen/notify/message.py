"""What a notification says: built once per delivery, rendered by each channel.

The text is built at send time from the generation as it is then, so a
generation that failed at 17:00 and was retried to completion before its
18:00 notification is announced as Completed.
"""

from __future__ import annotations

import html
import io
import logging
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from aigen.config import Home
from aigen.pipeline import retryhint

log = logging.getLogger("aigen.notify")

# Delivered later than this after its due time, a notification says it is late.
LATE_AFTER = timedelta(seconds=60)
THUMBNAIL_PX = 256
# The largest stored image read to make a thumbnail from (a bigger one: the email goes out without it).
THUMBNAIL_MAX_BYTES = 32 << 20


@dataclass(frozen=True)
class StoredImage:
    """An image in object storage (AIGEN_STORAGE_URL), read through aigen.storage when the email is built."""

    home_path: Path
    key: str
    env: Mapping[str, str] | None = None

    def __str__(self) -> str:
        from aigen.config import stored_location

        return stored_location(self.home_path, self.key, self.env)

    def read(self, cap: int | None = None) -> bytes:
        from aigen.storage import from_config

        cap = THUMBNAIL_MAX_BYTES if cap is None else cap

        storage = from_config(self.home_path, self.env)
        size = storage.size(self.key)
        if size > cap:
            raise ValueError(f"it has {size} bytes, more than the {cap} read for a thumbnail")
        with storage.open_range(self.key, 0, None) as body:
            return body.read(cap)


@dataclass
class Notice:
    generation_id: str
    user_id: str
    prompt: str
    status: str  # Completed | Failed
    title: str  # short, for the desktop and the panel title
    subject: str  # email subject
    made: str  # "5 images and 5 videos" / "9 of 10 assets (4 of 5 images, 5 of 5 videos)"
    failure: str | None  # what failed and why
    retry_command: str | None
    link: str
    link_valid: str  # "7 days"
    folder: str  # where the files are: the folder in the home, or s3://BUCKET/PREFIX/generated_content/...
    due_at: datetime
    now: datetime
    late_by: timedelta | None
    due_text: str  # the due time in local time, for the late note
    thumbnail: "Path | StoredImage | None"  # the image to make the email thumbnail from (a file, or in S3)
    retry_lead: str = "Make the missing assets with:"  # or: every missing asset was refused (--include-refused)

    @property
    def ok(self) -> bool:
        return self.status == "Completed"

    @property
    def late_note(self) -> str | None:
        if self.late_by is None:
            return None
        return f"This notification is late: it was due {self.due_text} and is sent {_duration(self.late_by)} later."

    def lines(self) -> list[str]:
        """The body as lines of plain text, shared by the console, the desktop and the email."""
        out = []
        if self.ok:
            out.append(f"Your generation is ready: {self.made}.")
        else:
            out.append(f"Your generation failed: {self.made} made.")
        out.append(f"Prompt: {self.prompt}")
        out.append(f"Generation {self.generation_id} for {self.user_id}.")
        if self.failure:
            out.append(f"What failed: {self.failure}")
        if self.retry_command:
            out.append(f"{self.retry_lead} {self.retry_command}")
        out.append(f"Files: {self.folder}")
        if self.late_note:
            out.append(self.late_note)
        return out

    def text(self) -> str:
        body = self.lines()
        verb = "Open it" if self.ok else "See what was made"
        body += ["", f"{verb} in the gallery (this link signs you in; it is valid for {self.link_valid}):",
                 self.link]
        return "\n".join(body) + "\n"

    def desktop_text(self) -> str:
        """Short: notification bubbles truncate long bodies."""
        prompt = _excerpt(self.prompt, 80)
        lead = f"{self.made}." if self.ok else f"{self.made} made. {_excerpt(self.failure or '', 120)}"
        parts = [f"“{prompt}”", lead]
        if self.late_by is not None:
            parts.append(f"(late by {_duration(self.late_by)})")
        parts.append(self.link)
        return "\n".join(parts)

    def html(self, thumbnail_cid: str | None = None) -> str:
        e = html.escape
        colour = "#1a7f37" if self.ok else "#cf222e"
        heading = "Your generation is ready" if self.ok else "Your generation failed"
        parts = [
            "<!doctype html><html><body style=\"font-family: sans-serif; line-height: 1.4; color: #1f2328\">",
            f"<h2 style=\"color: {colour}; margin-bottom: 0.2em\">{e(heading)}</h2>",
            f"<p style=\"margin-top: 0\">{e(self.made)}{'' if self.ok else ' made'}.</p>",
            f"<p><b>Prompt:</b> {e(self.prompt)}</p>",
        ]
        if thumbnail_cid:
            parts.append(
                f"<p><a href=\"{e(self.link)}\"><img src=\"cid:{e(thumbnail_cid)}\" alt=\"first image\" "
                "style=\"max-width: 256px; border-radius: 6px\"></a></p>"
            )
        if self.failure:
            parts.append(f"<p><b>What failed:</b> {e(self.failure)}</p>")
        if self.retry_command:
            parts.append(f"<p>{e(self.retry_lead)} <code>{e(self.retry_command)}</code></p>")
        verb = "Open it in the gallery" if self.ok else "See what was made"
        parts.append(
            f"<p><a href=\"{e(self.link)}\" style=\"display: inline-block; padding: 8px 14px; background: {colour}; "
            f"color: #fff; text-decoration: none; border-radius: 6px\">{e(verb)}</a></p>"
        )
        parts.append(
            f"<p style=\"font-size: 90%; color: #57606a\">This link signs you in as {e(self.user_id)} and is valid "
            f"for {e(self.link_valid)}: do not forward it. Generation {e(self.generation_id)}; files in "
            f"<code>{e(self.folder)}</code>.</p>"
        )
        if self.late_note:
            parts.append(f"<p style=\"font-size: 90%; color: #9a6700\">{e(self.late_note)}</p>")
        parts.append("</body></html>")
        return "\n".join(parts)


def compose(home: Home, gen: dict, assets: list[dict], *, link: str, link_valid: str, due_at: datetime,
            now: datetime, tz: tzinfo | None = None, env: Mapping[str, str] | None = None) -> Notice:
    """`env` (default: the process's) says where the files are: AIGEN_STORAGE_URL, as for `aigen generate`."""
    from aigen.config import stored_location

    env = os.environ if env is None else env
    images = [a for a in assets if a["kind"] == "image"]
    videos = [a for a in assets if a["kind"] == "video"]
    ok = gen["status"] == "Completed"
    if ok:
        made = _join([_count(len(images), "image"), _count(len(videos), "video")])
    else:
        done = sum(1 for a in assets if a["status"] == "done")
        kinds = [
            f"{sum(1 for a in group if a['status'] == 'done')} of {len(group)} {name}s"
            for group, name in ((images, "image"), (videos, "video")) if group
        ]
        if len(kinds) > 1:
            made = f"{done} of {len(assets)} assets ({', '.join(kinds)})"
        else:
            made = kinds[0] if kinds else "nothing"
    failure = None if ok else _failure_text(gen, assets)
    retry = None if ok else _retry_command(home, gen["id"], assets)
    late = now - due_at
    prompt_short = _excerpt(gen["prompt"], 50)
    if ok:
        title = f"aigen: ready - {made}"
        subject = f"aigen: “{prompt_short}” is ready ({made})"
    else:
        failed = sum(1 for a in assets if a["status"] == "failed")
        title = f"aigen: failed - {failed} of {len(assets)} assets"
        subject = f"aigen: “{prompt_short}” failed ({failed} of {len(assets)} assets failed)"
    local_due = due_at.astimezone(tz) if tz is not None else due_at.astimezone()
    return Notice(
        generation_id=gen["id"],
        user_id=gen["user_id"],
        prompt=" ".join(gen["prompt"].split()),
        status=gen["status"],
        title=title,
        subject=subject,
        made=made,
        failure=failure,
        retry_command=retry,
        link=link,
        link_valid=link_valid,
        folder=stored_location(home.path, f"generated_content/{gen['user_id']}/{gen['id']}", env),
        due_at=due_at,
        now=now,
        late_by=late if late > LATE_AFTER else None,
        due_text=f"{local_due:%Y-%m-%d %H:%M} {local_due.tzname() or ''}".rstrip(),
        thumbnail=_thumbnail_source(home, assets, env),
        retry_lead=retryhint.lead(assets),
    )


def thumbnail_jpeg(path: "Path | StoredImage", size: int = THUMBNAIL_PX) -> bytes | None:
    """A small JPEG of an image (a file, or read from object storage), or None when it cannot be read
    (an email goes out without it)."""
    try:
        from PIL import Image

        source = io.BytesIO(path.read()) if isinstance(path, StoredImage) else path
        with Image.open(source) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=82, optimize=True)
            return buf.getvalue()
    except Exception as exc:  # a missing or unreadable file must not stop the notification
        log.warning("no thumbnail from %s: %s", path, getattr(exc, "message", None) or exc)
        return None


def _thumbnail_source(home: Home, assets: list[dict], env: Mapping[str, str]) -> "Path | StoredImage | None":
    done = [a for a in assets if a["status"] == "done" and a.get("path")]
    key = None
    for a in sorted((a for a in done if a["kind"] == "image"), key=lambda a: a["idx"]):
        key = a["path"]
        break
    else:
        for a in sorted((a for a in done if a["kind"] == "video" and a.get("poster_path")), key=lambda a: a["idx"]):
            key = a["poster_path"]
            break
    if key is None:
        return None
    url = (env.get("AIGEN_STORAGE_URL") or "").strip()
    if not url:
        return home.path / key  # the home's folder, read as a file (no storage code loaded)
    if url.startswith("file:///"):
        return Path(url[len("file://"):]) / key
    return StoredImage(home.path, key, env)


def _failure_text(gen: dict, assets: list[dict]) -> str:
    failed = [a for a in assets if a["status"] == "failed"]
    if failed:
        return "; ".join(f"{a['kind']} {a['idx']}: {a['error'] or 'unknown error'}" for a in failed)
    return gen.get("error") or "unknown error"


def _retry_command(home: Home, gen_id: str, assets: list[dict]) -> str:
    # Outside the default home a bare `aigen retry` would look in the wrong place.
    base = "aigen retry" if home.source == "default" else f"aigen --home {shlex.quote(str(home.path))} retry"
    return retryhint.retry_command(base, gen_id, assets)


def _count(n: int, noun: str) -> str | None:
    if n == 0:
        return None
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _join(parts: list[str | None]) -> str:
    parts = [p for p in parts if p]
    return " and ".join(parts) if parts else "nothing"


def _excerpt(text: str, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _duration(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60} min"
    if secs < 2 * 86400:
        h, m = divmod(secs // 60, 60)
        return f"{h}h {m:02d}m"
    return f"{secs // 86400} days"
