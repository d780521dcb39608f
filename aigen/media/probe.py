"""Checks that a file really is the image or video it claims to be.

Every asset, from any provider, goes through here before it is kept, so a
truncated download, an HTML error page saved as ``.mp4`` or a half-written file
is caught with a message that says what is wrong, instead of surfacing later as
a broken thumbnail. Images are fully decoded. Videos are read packet by packet
(their count compared with the container's own index, and for H.264 every
packet's NAL units walked) and their first frames decoded; MP4 box sizes are
compared with the file size.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from aigen.errors import MediaCheckError

# probe_image keeps the decoded pixels of a picture up to the previews' own limit only: a larger one gets no
# previews, so the copy would only double what it holds in memory.
from aigen.media.thumbs import MAX_PIXELS as KEEP_PIXELS_MAX

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


@dataclass
class ImageInfo:
    format: str  # "png" | "jpeg" | "webp"
    width: int
    height: int
    # The decoded picture (a loaded PIL image), only when probe_image was asked to keep it.
    pixels: object = field(default=None, compare=False, repr=False)


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
    # The decoded frame shown at probe_video's ``frame_at`` (an av.VideoFrame), for a poster.
    frame: object = field(default=None, repr=False, compare=False)


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


def probe_image(path: str | PathLike, *, keep_pixels: bool = False) -> ImageInfo:
    """Verify and fully decode an image; raise MediaCheckError on anything wrong.

    Magic bytes come first so the message can say what the file is instead of
    an opaque decoder error. ``verify()`` checks structure (PNG chunk CRCs) and
    a separate full ``load()`` catches truncated pixel data. With ``keep_pixels``
    the decoded picture comes back in ``ImageInfo.pixels`` (the pipeline makes
    the previews from it instead of decoding the file again).
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
            # load() read the whole file: the copy made here is the same pixels, detached from it. None past
            # KEEP_PIXELS_MAX: a picture that large gets no previews, and a second copy of it is not held.
            pixels = im.copy() if keep_pixels and width * height <= KEEP_PIXELS_MAX else None
    except errors as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason.lower() or isinstance(e, EOFError):
            raise MediaCheckError(f"{p.name} is a truncated {kind.upper()} image: {reason}") from None
        raise MediaCheckError(f"{p.name} is not a valid {kind.upper()} image: {reason}") from None
    if width <= 0 or height <= 0:
        raise MediaCheckError(f"{p.name} has zero size ({width}x{height})")
    return ImageInfo(kind, width, height, pixels)


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


# Frames decoded from the start of every video: the keyframe and the frames that
# depend on it. The rest is demuxed (every packet read, counted and its H.264
# NAL units walked), not decoded: see probe_video.
SAMPLE_FRAMES = 4

# H.264 NAL unit types a coded frame is made of (1-5: slices; 6-12: SEI, parameter
# sets, delimiters, end of sequence/stream, filler; 13-21: extensions).
_AVC_VCL = frozenset(range(1, 6))


def _avc_length_size(extradata: bytes | None) -> int | None:
    """The NAL length prefix size from an avcC record, or None for Annex-B or no record."""
    if not extradata or len(extradata) < 7 or extradata[0] != 1:
        return None
    return (extradata[4] & 3) + 1


def _avc_packet_problem(data: bytes, length_size: int) -> str | None:
    """Walk the length-prefixed NAL units of one H.264 packet; say what is wrong, or None.

    The units must tile the packet exactly, none may be empty, each header's
    forbidden bit must be clear and its type defined, and at least one must be a
    coded slice. This is the damage a decoder refuses with "invalid data"
    (a broken length prefix, a run of zeros or garbage in place of a frame),
    found without decoding a pixel.
    """
    off, n, vcl = 0, len(data), False
    while off < n:
        if off + length_size > n:
            return f"a NAL length prefix is cut off at byte {off} of {n}"
        size = int.from_bytes(data[off:off + length_size], "big")
        off += length_size
        if size == 0:
            return f"an empty NAL unit at byte {off - length_size}"
        if off + size > n:
            return f"a NAL unit of {size} bytes at byte {off} runs past the packet's {n} bytes"
        header = data[off]
        kind = header & 0x1F
        if header & 0x80 or kind == 0 or kind > 21:
            return f"an invalid NAL unit header 0x{header:02x} at byte {off}"
        vcl = vcl or kind in _AVC_VCL
        off += size
    return None if vcl else "no coded slice"


def probe_video(path: str | PathLike, *, full_decode: bool = False,
                frame_at: float | None = None) -> VideoInfo:
    """Open, demux and decode a video; describe it, or raise MediaCheckError if it is not a sound one.

    Every packet of the video stream is read (so media data cut short is found:
    the count read is compared with the count the container's index promises),
    and for H.264 in MP4 the NAL units of every packet are walked
    (:func:`_avc_packet_problem`). Then the first keyframe and the frames after
    it are decoded: ``SAMPLE_FRAMES`` of them, and on through ``frame_at``
    seconds when that is given (the frame shown there is returned as
    ``VideoInfo.frame``, for a poster). ``full_decode`` decodes every frame
    instead, as this check did before the sample (about 7x the time for a 4 s
    720p clip). Neither catches bit errors inside a frame's coded slice data:
    FFmpeg's decoder conceals those without an error, so a full decode did not
    either.
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
    chosen = None
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
        length_size = _avc_length_size(cc.extradata) if codec == "h264" and kind == "mp4" else None
        if full_decode:
            stream.thread_type = "AUTO"
        # Decode while demuxing, until the sample is complete; after that, only read.
        sampling = True
        want = SAMPLE_FRAMES
        packets = decoded = 0
        # On the way to frame_at, after the first SAMPLE_FRAMES, frames no other frame refers to
        # (H.264's non-reference B-frames) are not decoded: they show before frame_at, and the frame
        # found there is the same without them. Only when the clip runs past frame_at (else its
        # last frame is the one wanted).
        skip_before = None
        if frame_at is not None and not full_decode and stream.time_base and fps and duration >= frame_at + 2 / fps:
            skip_before = (stream.start_time or 0) + int(frame_at / stream.time_base)
        skipping = False
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                if packet.is_corrupt:  # FFmpeg flags a packet it could not read in full
                    raise MediaCheckError(f"{p.name} is truncated: frame {packets + 1} of {promised or '?'} "
                                          "is cut short (the media data ends inside it)")
                if length_size is not None:
                    problem = _avc_packet_problem(bytes(packet), length_size)
                    if problem:
                        raise MediaCheckError(f"{p.name} is corrupt: frame {packets + 1} of {promised or '?'}: "
                                              f"{problem}")
                if packets == 0 and not packet.is_keyframe:
                    raise MediaCheckError(f"{p.name} is corrupt: its first frame is not a keyframe")
                packets += 1
                if sampling:
                    if skip_before is not None:
                        skip = packets > want and packet.pts is not None and packet.pts < skip_before
                        if skip != skipping:
                            cc.skip_frame = "NONREF" if skip else "DEFAULT"
                            skipping = skip
                    for frame in cc.decode(packet):
                        decoded += 1
                        chosen = _pick(chosen, frame, frame_at)
                    if not full_decode and decoded >= want and (frame_at is None or _past(chosen, frame_at)):
                        sampling = False
            if sampling:
                for frame in cc.decode(None):  # the frames still in the decoder's delay
                    decoded += 1
                    chosen = _pick(chosen, frame, frame_at)
        except av.FFmpegError as e:
            raise MediaCheckError(f"{p.name} is corrupt: decoding failed after {decoded} frames "
                                  f"({packets} read): {e}") from None
    finally:
        container.close()
    if decoded == 0:
        raise MediaCheckError(f"{p.name}: the video stream has no decodable frames")
    if promised and packets < promised:
        raise MediaCheckError(f"{p.name} is truncated: read {packets} of {promised} frames")
    if full_decode and decoded < packets:
        raise MediaCheckError(f"{p.name} is truncated: decoded {decoded} of {packets} frames")
    if not fps and duration:
        fps = packets / duration
    if not duration and fps:
        duration = packets / fps
    return VideoInfo(
        codec=codec,
        profile=profile,
        pix_fmt=pix_fmt,
        width=width,
        height=height,
        duration=duration,
        frames=packets,
        fps=fps,
        faststart=moov_before_mdat(p) if kind == "mp4" else False,
        frame=chosen if frame_at is not None else None,
    )


def _pick(chosen, frame, at: float | None):
    """Keep the frame shown at ``at`` seconds: the first at or after it, else the latest so far."""
    if at is None:
        return None
    if chosen is not None and _past(chosen, at):
        return chosen
    return frame


def _past(frame, at: float) -> bool:
    return frame is not None and frame.time is not None and frame.time >= at - 1e-6


def check_video(
    path: str | PathLike,
    *,
    width: int | None = None,
    height: int | None = None,
    duration: float | None = None,
    frames: int | None = None,
    tolerance: float = 0.25,
    require_h264: bool = True,
    frame_at: float | None = None,
    full_decode: bool = False,
) -> VideoInfo:
    """Probe a video and compare it with what was asked for; the error names every mismatch.

    ``frames`` is the exact frame count expected (for a renderer that makes
    exactly ``round(duration * fps)``); ``frame_at`` and ``full_decode`` are
    passed to :func:`probe_video`.
    """
    info = probe_video(path, frame_at=frame_at, full_decode=full_decode)
    problems = []
    if require_h264 and info.codec != "h264":
        problems.append(f"codec is {info.codec}, expected h264")
    if (width is not None and info.width != width) or (height is not None and info.height != height):
        want = f"{width if width is not None else '*'}x{height if height is not None else '*'}"
        problems.append(f"size is {info.width}x{info.height}, expected {want}")
    if duration is not None and abs(info.duration - duration) > tolerance:
        problems.append(f"duration is {info.duration:.2f}s, expected {duration:.2f}s (±{tolerance}s)")
    if frames is not None and info.frames != frames:
        problems.append(f"{info.frames} frames, expected {frames}")
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
    return save_poster(chosen, poster_path, max_width)


def save_poster(frame, poster_path: str | PathLike, max_width: int = 640) -> tuple[int, int]:
    """Write a decoded frame (an ``av.VideoFrame``) as a JPEG poster at most ``max_width`` wide.
    Returns the poster's (width, height)."""
    img = poster_image(frame, max_width)
    write_poster(img, poster_path)
    return img.size


def poster_image(frame, max_width: int = 640):
    """A decoded frame (an ``av.VideoFrame``) as the poster's RGB picture (PIL), at most ``max_width`` wide.

    The frame is scaled and converted to RGB in one swscale pass (Lanczos), ~1.5 ms
    for 1280x720 -> 640x360, where converting it at full size and resizing with
    Pillow took ~13 ms.
    """
    w, h = frame.width, frame.height
    if max_width and w > max_width:
        w, h = max_width, max(1, round(h * max_width / w))
    return frame.reformat(width=w, height=h, format="rgb24", interpolation="LANCZOS").to_image()


def write_poster(img, poster_path: str | PathLike) -> None:
    """Write a poster picture (from poster_image) as the JPEG the gallery shows."""
    img.save(poster_path, format="JPEG", quality=85, optimize=True)
