"""Checks that a file really is the image or video it claims to be.

Every asset, from any provider, goes through here before it is kept, so a
truncated download, an HTML error page saved as ``.mp4`` or a half-written file
is caught with a message that says what is wrong, instead of surfacing later as
a broken thumbnail. Checks are deliberately thorough: images are fully decoded,
videos are fully decoded and their frame count compared with the container's
own index, and MP4 box sizes are compared with the file size.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from aigen.errors import MediaCheckError

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


@dataclass
class ImageInfo:
    format: str  # "png" | "jpeg" | "webp"
    width: int
    height: int


@dataclass
class VideoInfo:
    codec: str
    profile: str | None
    pix_fmt: str
    width: int
    height: int
    duration: float
    frames: int
    fps: float
    faststart: bool


def _head(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def sniff_kind(path: str | PathLike) -> str | None:
    """"png", "jpeg", "webp" or "mp4" from the first bytes; None for anything else.

    Only magic bytes are read, so this is cheap and never trusts the file name.
    A missing or unreadable file is None too: it is not any of these kinds.
    """
    try:
        head = _head(Path(path))
    except OSError:
        return None
    if head.startswith(_PNG):
        return "png"
    if head.startswith(_JPEG):
        return "jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "mp4"
    return None


def _require_file(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MediaCheckError(f"{path}: no such file") from None
    except OSError as e:
        raise MediaCheckError(f"{path}: cannot be read: {e}") from None
    if not path.is_file():
        raise MediaCheckError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise MediaCheckError(f"{path.name}: the file is empty (0 bytes)")
    return st.st_size


def _describe_head(path: Path) -> str:
    head = _head(path, 12)
    if head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml")):
        return "it looks like an HTML/XML page"
    if head.lstrip().startswith((b"{", b"[")):
        return "it looks like JSON text"
    return f"it starts with {head.hex(' ')}"


def probe_image(path: str | PathLike) -> ImageInfo:
    """Verify and fully decode an image; raise MediaCheckError on anything wrong.

    Magic bytes come first so the message can say what the file is instead of
    an opaque decoder error. ``verify()`` checks structure (PNG chunk CRCs) and
    a separate full ``load()`` catches truncated pixel data.
    """
    from PIL import Image, ImageFile, UnidentifiedImageError

    p = Path(path)
    _require_file(p)
    kind = sniff_kind(p)
    if kind == "mp4":
        raise MediaCheckError(f"{p.name} is an MP4 video, not an image")
    if kind not in ("png", "jpeg", "webp"):
        raise MediaCheckError(f"{p.name} is not a PNG, JPEG or WebP image: {_describe_head(p)}")
    pil_format = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[kind]
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone in this process asked Pillow to accept truncated files; that
        # would defeat the check below, so refuse to vouch for anything.
        raise MediaCheckError("cannot check images: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is enabled")
    errors = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error,
              Image.DecompressionBombError)
    try:
        with Image.open(p, formats=[pil_format]) as im:
            im.verify()
        with Image.open(p, formats=[pil_format]) as im:
            im.load()
            width, height = im.size
    except errors as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason.lower() or isinstance(e, EOFError):
            raise MediaCheckError(f"{p.name} is a truncated {kind.upper()} image: {reason}") from None
        raise MediaCheckError(f"{p.name} is not a valid {kind.upper()} image: {reason}") from None
    if width <= 0 or height <= 0:
        raise MediaCheckError(f"{p.name} has zero size ({width}x{height})")
    return ImageInfo(kind, width, height)


# ----------------------------------------------------------------------------
# MP4 boxes


def _boxes(path: Path) -> Iterator[tuple[bytes, int, int, int]]:
    """Yield (type, offset, size, file_size) of top-level boxes, reading only their headers.

    A box may claim more bytes than the file has; the caller decides whether
    that is fatal. Stops at a header that cannot be read in full.
    """
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        off = 0
        while off + 8 <= file_size:
            f.seek(off)
            header = f.read(8)
            size, typ = struct.unpack(">I4s", header)
            header_len = 8
            if size == 1:  # 64-bit "largesize" follows the type
                large = f.read(8)
                if len(large) < 8:
                    return
                size = struct.unpack(">Q", large)[0]
                header_len = 16
            elif size == 0:  # the box runs to the end of the file
                size = file_size - off
            if size < header_len:
                yield typ, off, -1, file_size
                return
            yield typ, off, size, file_size
            off += size


def _check_mp4_structure(path: Path) -> None:
    """Top-level boxes must tile the file exactly, and moov and mdat must both exist."""
    seen: list[bytes] = []
    end = 0
    file_size = 0
    for typ, off, size, file_size in _boxes(path):
        if size < 0:
            raise MediaCheckError(f"{path.name}: invalid MP4 box {typ!r} at byte {off}")
        seen.append(typ)
        end = off + size
        if end > file_size:
            raise MediaCheckError(
                f"{path.name} is truncated: its {typ.decode('latin-1')!r} box needs {end} bytes "
                f"but the file has {file_size}"
            )
    if end < file_size and file_size - end >= 8:
        raise MediaCheckError(f"{path.name}: unreadable data after byte {end} of {file_size}")
    if b"moov" not in seen:
        raise MediaCheckError(
            f"{path.name} has no moov box: the file is incomplete (missing its tail) or was never finalised"
        )
    if b"mdat" not in seen:
        raise MediaCheckError(f"{path.name} has no mdat box: it holds no media data")


def moov_before_mdat(path: str | PathLike) -> bool:
    """True when the moov (index) box precedes the mdat (media) box: "faststart".

    Browsers can then start playback from the first bytes. Only box headers are
    read, so this costs a few reads whatever the file size.
    """
    try:
        for typ, _off, size, _fs in _boxes(Path(path)):
            if size < 0:
                return False
            if typ == b"moov":
                return True
            if typ == b"mdat":
                return False
    except OSError:
        return False
    return False


# ----------------------------------------------------------------------------
# Video


def probe_video(path: str | PathLike) -> VideoInfo:
    """Open, fully decode and describe a video; raise MediaCheckError if it is not a sound one.

    Decoding every frame is the only check that catches a file whose index is
    intact but whose media data is cut short, so the decoded count is compared
    with the count the container promises.
    """
    import av

    p = Path(path)
    _require_file(p)
    kind = sniff_kind(p)
    if kind in ("png", "jpeg", "webp"):
        raise MediaCheckError(f"{p.name} is a {kind.upper()} image, not a video")
    if kind == "mp4":
        _check_mp4_structure(p)
    try:
        container = av.open(str(p), mode="r")
    except (av.FFmpegError, OSError, ValueError) as e:
        detail = _describe_head(p) if kind is None else str(e)
        raise MediaCheckError(f"{p.name} cannot be opened as a video: {detail}") from None
    try:
        if not container.streams.video:
            raise MediaCheckError(f"{p.name} has no video stream")
        stream = container.streams.video[0]
        cc = stream.codec_context
        codec = cc.name or "unknown"
        profile = cc.profile or None
        width, height = int(cc.width or 0), int(cc.height or 0)
        if width <= 0 or height <= 0:
            raise MediaCheckError(f"{p.name}: the video stream has no frame size ({width}x{height})")
        pix_fmt = cc.pix_fmt or "unknown"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        promised = int(stream.frames or 0)
        duration = 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        stream.thread_type = "AUTO"
        decoded = 0
        try:
            for _frame in container.decode(stream):
                decoded += 1
        except av.FFmpegError as e:
            raise MediaCheckError(f"{p.name} is corrupt: decoding failed after {decoded} frames: {e}") from None
    finally:
        container.close()
    if decoded == 0:
        raise MediaCheckError(f"{p.name}: the video stream has no decodable frames")
    if promised and decoded < promised:
        raise MediaCheckError(f"{p.name} is truncated: decoded {decoded} of {promised} frames")
    if not fps and duration:
        fps = decoded / duration
    if not duration and fps:
        duration = decoded / fps
    return VideoInfo(
        codec=codec,
        profile=profile,
        pix_fmt=pix_fmt,
        width=width,
        height=height,
        duration=duration,
        frames=decoded,
        fps=fps,
        faststart=moov_before_mdat(p) if kind == "mp4" else False,
    )


def check_video(
    path: str | PathLike,
    *,
    width: int | None = None,
    height: int | None = None,
    duration: float | None = None,
    tolerance: float = 0.25,
    require_h264: bool = True,
) -> VideoInfo:
    """Probe a video and compare it with what was asked for; the error names every mismatch."""
    info = probe_video(path)
    problems = []
    if require_h264 and info.codec != "h264":
        problems.append(f"codec is {info.codec}, expected h264")
    if (width is not None and info.width != width) or (height is not None and info.height != height):
        want = f"{width if width is not None else '*'}x{height if height is not None else '*'}"
        problems.append(f"size is {info.width}x{info.height}, expected {want}")
    if duration is not None and abs(info.duration - duration) > tolerance:
        problems.append(f"duration is {info.duration:.2f}s, expected {duration:.2f}s (±{tolerance}s)")
    if problems:
        raise MediaCheckError(f"{Path(path).name}: " + "; ".join(problems))
    return info


def make_poster(
    video_path: str | PathLike,
    poster_path: str | PathLike,
    at_seconds: float = 1.0,
    max_width: int = 640,
) -> tuple[int, int]:
    """Save the frame at ``at_seconds`` (or the last one, for shorter clips) as a JPEG poster.

    The poster is what a gallery shows before playback, so it is taken a moment
    in rather than at frame 0 (often a fade or a blank). It is written to
    exactly ``poster_path`` with an explicit format, so a temporary name works.
    Returns the poster's (width, height).
    """
    import av
    from PIL import Image

    vp = Path(video_path)
    _require_file(vp)
    chosen = None
    try:
        with av.open(str(vp), mode="r") as container:
            if not container.streams.video:
                raise MediaCheckError(f"{vp.name} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if at_seconds > 0 and stream.time_base:
                start = stream.start_time or 0
                target = int(at_seconds / stream.time_base) + start
                try:
                    container.seek(target, stream=stream, backward=True, any_frame=False)
                except av.FFmpegError:
                    container.seek(0, stream=stream)
            for frame in container.decode(stream):
                chosen = frame
                if frame.time is not None and frame.time >= at_seconds - 1e-6:
                    break
            if chosen is None:  # the seek went past the end: take the last frame from the start
                container.seek(0, stream=stream)
                for frame in container.decode(stream):
                    chosen = frame
    except av.FFmpegError as e:
        raise MediaCheckError(f"{vp.name}: cannot decode a poster frame: {e}") from None
    if chosen is None:
        raise MediaCheckError(f"{vp.name}: the video has no decodable frames")
    img = chosen.to_image()
    if img.mode != "RGB":
        img = img.convert("RGB")
    if max_width and img.width > max_width:
        new_h = max(1, round(img.height * max_width / img.width))
        img = img.resize((max_width, new_h), Image.Resampling.LANCZOS)
    img.save(poster_path, format="JPEG", quality=85, optimize=True)
    return img.size
