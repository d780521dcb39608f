"""A local fake of Runway's API, following the documented contract (see PROVIDERS.md §3).

It serves, on 127.0.0.1, what the `runwayml` SDK calls:

* POST /v1/text_to_video, /v1/image_to_video, /v1/text_to_image: checks the
  `Authorization: Bearer <key>` and `X-Runway-Version: 2024-11-06` headers and
  the body (model, ratio, duration, seed, promptText, promptImage as a data URI
  of at most 5 MB), counts the creation, answers `{"id", "estimatedCost"}`;
* GET /v1/tasks/{id}: each GET moves the task one step along its script,
  PENDING -> RUNNING -> SUCCEEDED by default; a task can instead end FAILED
  (with failure and failureCode), CANCELLED, or pass through THROTTLED;
* DELETE /v1/tasks/{id}: cancels;
* GET /files/<token>/<name>: the output, real media (an H.264 mp4 made with
  PyAV, a PNG made with Pillow), with faults on demand: truncated, wrong
  content type, or an expired signed URL (403) until the task is fetched again.

Faults on the API itself (429 with Retry-After, 500s, slow answers) are
scripted with FakeServer.script().
"""

from __future__ import annotations

import base64
import itertools
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fakes.httpfake import FakeServer, Recorded, Reply

API_VERSION = "2024-11-06"
KEY = "key_" + "0123456789abcdef" * 8

_VEO = {"1280:720", "720:1280", "1080:1920", "1920:1080"}
_GEN4_I2V = {"1280:720", "720:1280", "1104:832", "960:960", "832:1104", "1584:672"}
TEXT_TO_VIDEO = {
    "gen4.5": ({"1280:720", "720:1280"}, set(range(2, 11))),
    "veo3.1": (_VEO, {4, 6, 8}),
    "veo3.1_fast": (_VEO, {4, 6, 8}),
}
IMAGE_TO_VIDEO = {
    "gen4.5": (_GEN4_I2V, set(range(2, 11))),
    "gen4_turbo": (_GEN4_I2V, set(range(2, 11))),
    "veo3.1": (_VEO, {4, 6, 8}),
    "veo3.1_fast": (_VEO, {4, 6, 8}),
}
TEXT_TO_IMAGE = {
    "gen4_image": {
        "1024:1024", "1080:1080", "1168:880", "1360:768", "1440:1080", "1080:1440", "1808:768", "1920:1080",
        "1080:1920", "2112:912", "1280:720", "720:1280", "720:720", "960:720", "720:960", "1680:720",
    },
}


# --------------------------------------------------------------------------- media, made once
_media_lock = threading.Lock()
_media: dict[str, bytes] = {}


def sample_mp4(width: int = 128, height: int = 72, frames: int = 12) -> bytes:
    """A small, real H.264 (yuv420p) mp4 with the moov atom first."""
    key = f"mp4:{width}x{height}:{frames}"
    with _media_lock:
        if key not in _media:
            import tempfile

            import av
            import numpy as np

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "sample.mp4"
                out = av.open(str(path), "w", options={"movflags": "faststart"})
                stream = out.add_stream("libx264", rate=12)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                for i in range(frames):
                    a = np.zeros((height, width, 3), np.uint8)
                    a[:, :, 0] = (i * 20) % 256
                    a[:, (i * 8) % width: (i * 8) % width + 8, 1] = 255
                    for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                        out.mux(packet)
                for packet in stream.encode():
                    out.mux(packet)
                out.close()
                _media[key] = path.read_bytes()
        return _media[key]


def sample_png(width: int = 96, height: int = 64, colour=(40, 120, 200)) -> bytes:
    key = f"png:{width}x{height}:{colour}"
    with _media_lock:
        if key not in _media:
            import io

            from PIL import Image

            buf = io.BytesIO()
            Image.new("RGB", (width, height), colour).save(buf, format="PNG")
            _media[key] = buf.getvalue()
        return _media[key]


# --------------------------------------------------------------------------- tasks
@dataclass
class Outcome:
    """How the next created task behaves. `steps` are the statuses shown by successive GETs."""

    steps: tuple[str, ...] = ("PENDING", "RUNNING", "SUCCEEDED")
    failure: str = "The task failed."
    failure_code: str | None = None
    # Download faults for this task's output: "truncate", "wrong_type", "expired" (403 until re-fetched),
    # "gone" (404 always), "webp" (an image answered as WebP, which Runway may do).
    download_fault: str | None = None


@dataclass
class Task:
    id: str
    endpoint: str
    body: dict
    outcome: Outcome
    polls: int = 0
    fetches_after_success: int = 0
    cancelled: bool = False
    tokens: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.cancelled:
            return "CANCELLED"
        steps = self.outcome.steps
        return steps[min(self.polls, len(steps)) - 1] if self.polls else steps[0]


class RunwayFake(FakeServer):
    def __init__(self, key: str = KEY):
        super().__init__()
        self.key = key
        self.tasks: dict[str, Task] = {}
        self.outcomes: list[Outcome] = []  # consumed by the next creations, in order
        self.default_outcome = Outcome()
        # Picks an outcome from the create body (e.g. by seed) when creations run in parallel.
        self.outcome_for = None
        self._ids = itertools.count(1)
        self._tlock = threading.Lock()
        for endpoint in ("text_to_video", "image_to_video", "text_to_image"):
            self.route("POST", f"/v1/{endpoint}", self._create)
        self.route("GET", "/v1/tasks/*", self._retrieve)
        self.route("DELETE", "/v1/tasks/*", self._delete)
        self.route("GET", "/files/*", self._file)

    # -- what tests look at -------------------------------------------------------
    @property
    def creations(self) -> int:
        """Tasks actually created (accepted creates), whatever the endpoint."""
        with self._tlock:
            return sum(1 for t in self.tasks.values() if t.endpoint != "seeded")

    def create_requests(self) -> list[Recorded]:
        return [r for r in self.matching("POST", "/v1/*")]

    def retrieves(self, task_id: str | None = None) -> int:
        return self.count("GET", f"/v1/tasks/{task_id}" if task_id else "/v1/tasks/*")

    def add_task(self, outcome: Outcome | None = None, *, polls: int = 0, task_id: str | None = None) -> str:
        """A task that exists at Runway already (as if created by an earlier run); not counted as a creation."""
        tid = task_id or str(uuid.uuid4())
        with self._tlock:
            self.tasks[tid] = Task(tid, "seeded", {}, outcome or Outcome(), polls=polls)
        return tid

    # -- handlers -------------------------------------------------------------------
    def _auth_error(self, req: Recorded) -> Reply | None:
        if req.headers.get("authorization") != f"Bearer {self.key}":
            return Reply(401, {"error": "Invalid API key"})
        if req.headers.get("x-runway-version") != API_VERSION:
            return Reply(400, {"error": f"X-Runway-Version must be {API_VERSION}"})
        return None

    def _create(self, req: Recorded, srv) -> Reply:
        bad = self._auth_error(req)
        if bad:
            return bad
        endpoint = req.path.rsplit("/", 1)[1]
        try:
            body = req.json()
        except ValueError:
            return Reply(400, {"error": "Body is not JSON"})
        problem = validate(endpoint, body)
        if problem:
            return Reply(400, {"error": problem})
        with self._tlock:
            chosen = self.outcome_for(endpoint, body) if self.outcome_for else None
            outcome = chosen or (self.outcomes.pop(0) if self.outcomes else self.default_outcome)
            tid = str(uuid.UUID(int=next(self._ids)))
            self.tasks[tid] = Task(tid, endpoint, body, outcome)
        return Reply(200, {"id": tid, "estimatedCost": {"credits": 25.0}})

    def _retrieve(self, req: Recorded, srv) -> Reply:
        bad = self._auth_error(req)
        if bad:
            return bad
        tid = req.path.rsplit("/", 1)[1]
        with self._tlock:
            task = self.tasks.get(tid)
            if task is None:
                return Reply(404, {"error": "Task not found"})
            if not task.cancelled and task.polls < len(task.outcome.steps):
                task.polls += 1
            return Reply(200, self._task_json(task))

    def _delete(self, req: Recorded, srv) -> Reply:
        bad = self._auth_error(req)
        if bad:
            return bad
        tid = req.path.rsplit("/", 1)[1]
        with self._tlock:
            task = self.tasks.get(tid)
            if task is None:
                return Reply(404, {"error": "Task not found"})
            task.cancelled = True
        return Reply(204, b"")

    def _task_json(self, task: Task) -> dict:
        status = task.status
        out = {"id": task.id, "status": status, "createdAt": "2026-11-24T09:00:00.000Z"}
        if status in ("PENDING", "THROTTLED", "RUNNING"):
            out["estimatedCost"] = {"credits": 25.0}
        if status == "RUNNING":
            out["progress"] = 0.5
        if status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            out["cost"] = {"credits": 0 if status == "CANCELLED" else 25}
        if status == "FAILED":
            out["failure"] = task.outcome.failure
            if task.outcome.failure_code:
                out["failureCode"] = task.outcome.failure_code
        if status == "SUCCEEDED":
            # Every fetch hands out a fresh signed URL, as Runway does.
            task.fetches_after_success += 1
            token = uuid.uuid4().hex
            task.tokens.append(token)
            ext = "png" if task.endpoint == "text_to_image" else "mp4"
            out["output"] = [f"{self.url}/files/{token}/{task.id}.{ext}?_jwt=signed-{token}"]
        return out

    def _file(self, req: Recorded, srv) -> Reply:
        parts = req.path.split("/")  # ["", "files", token, name]
        if len(parts) != 4:
            return Reply(404, "not found")
        token, name = parts[2], parts[3]
        tid, _, ext = name.rpartition(".")
        with self._tlock:
            task = self.tasks.get(tid)
            if task is None or token not in task.tokens:
                return Reply(404, "<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
            fault = task.outcome.download_fault
            first_url = token == task.tokens[0]
        if fault == "gone":
            return Reply(404, "<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
        if fault == "expired" and first_url:
            return Reply(403, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                         content_type="application/xml")
        data, ctype = (sample_mp4(), "video/mp4") if ext == "mp4" else (sample_png(), "image/png")
        if fault == "webp" and ext == "png":
            import io

            from PIL import Image

            buf = io.BytesIO()
            Image.new("RGB", (80, 48), (10, 200, 90)).save(buf, format="WEBP")
            return Reply(200, buf.getvalue(), content_type="image/webp")
        if fault == "truncate":
            return Reply(200, data, content_type=ctype, truncate_to=len(data) // 3)
        if fault == "wrong_type":
            return Reply(200, "<html><body>Access denied</body></html>", content_type="text/html")
        return Reply(200, data, content_type=ctype)


def validate(endpoint: str, body: dict) -> str | None:
    """What Runway would answer 400 for, as its error string; None when the body is acceptable."""
    model = body.get("model")
    prompt = body.get("promptText")
    if endpoint == "text_to_image":
        table = TEXT_TO_IMAGE
        durations = None
    else:
        table = TEXT_TO_VIDEO if endpoint == "text_to_video" else IMAGE_TO_VIDEO
    if model not in table:
        return f"model: Invalid enum value. Expected one of {sorted(table)}, received {model!r}"
    if endpoint == "text_to_image":
        ratios = table[model]
    else:
        ratios, durations = table[model]
    if body.get("ratio") not in ratios:
        return f"ratio: Invalid enum value for {model}: {body.get('ratio')!r}"
    if durations is not None and body.get("duration") not in durations:
        return f"duration: {body.get('duration')!r} is not allowed for {model}"
    if endpoint != "image_to_video" or model == "gen4.5":
        if not isinstance(prompt, str) or not prompt.strip():
            return "promptText: Required"
    if isinstance(prompt, str) and len(prompt.encode("utf-16-le")) // 2 > 1000:
        return "promptText: String must contain at most 1000 character(s)"
    seed = body.get("seed")
    if seed is not None and not (isinstance(seed, int) and 0 <= seed <= 4294967295):
        return "seed: Number must be between 0 and 4294967295"
    if endpoint == "image_to_video":
        image = body.get("promptImage")
        if not isinstance(image, str) or not image.startswith("data:image/"):
            return "promptImage: expected an HTTPS URL, a runway:// URI or a data URI"
        if len(image) > 5 * 1000 * 1000:
            return "promptImage: data URIs must be at most 5MB"
        header, _, payload = image.partition(",")
        if not header.endswith(";base64"):
            return "promptImage: Invalid data URI."
        try:
            raw = base64.b64decode(payload, validate=True)
        except ValueError:
            return "promptImage: Invalid data URI."
        # Runway decodes the image: bytes that are not the declared image type are refused.
        declared = header[len("data:"):].split(";")[0]
        magic = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",),
                 "image/webp": (b"RIFF",)}
        if declared not in magic or not raw.startswith(magic[declared]):
            return f"promptImage: the data URI is not a valid {declared} image"
    moderation = body.get("contentModeration")
    if moderation is not None and (not isinstance(moderation, dict)
                                   or moderation.get("publicFigureThreshold", "auto") not in ("auto", "low")):
        return "contentModeration.publicFigureThreshold: Invalid enum value. Expected 'auto' | 'low'"
    if "audio" in body and (not isinstance(body["audio"], bool) or not model.startswith("veo3.1")):
        return "audio: Expected boolean (veo3.1 models only)"
    refs = body.get("referenceImages")
    if refs is not None:
        if endpoint != "text_to_image" or not isinstance(refs, list) or len(refs) > 3:
            return "referenceImages: at most 3, text_to_image only"
        for r in refs:
            tag = r.get("tag") if isinstance(r, dict) else None
            if not isinstance(r, dict) or not isinstance(r.get("uri"), str) or (
                    tag is not None and not (isinstance(tag, str) and 3 <= len(tag) <= 16)):
                return "referenceImages: each needs a uri, and a tag of 3-16 characters if any"
    return None


def decoded_prompt_image(body: dict) -> bytes:
    return base64.b64decode(body["promptImage"].partition(",")[2])


__all__ = ["KEY", "Outcome", "RunwayFake", "decoded_prompt_image", "sample_mp4", "sample_png", "validate"]
