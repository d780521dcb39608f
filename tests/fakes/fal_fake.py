"""A local fake of fal.ai's queue, following the documented contract (PROVIDERS.md §7).

It serves, on 127.0.0.1, what `fal-client` calls (the SDK is pointed at it with
aigen's FAL_BASE_URL; its submit answers name the fake's own status, result and
cancel URLs, which the SDK then follows):

* ``POST /{owner}/{alias}[/{path}]``: checks ``Authorization: Key <key>`` (401
  otherwise) and the model id (404 for one it does not serve), counts the
  submit, answers ``{"status": "IN_QUEUE", "request_id", "response_url",
  "status_url", "cancel_url", "queue_position"}``. Like fal, it accepts any
  input here: a bad one is refused only when the result is fetched (422);
* ``GET /{owner}/{alias}/requests/{id}/status``: each GET moves the request one
  step along its script, IN_QUEUE (202, with ``queue_position``) -> IN_PROGRESS
  (202, with ``logs``) -> COMPLETED (200, with ``logs`` and ``metrics``; ``error``
  and ``error_type`` for a request that failed or was cancelled). Status and
  result URLs drop the model's sub-path, as fal's do;
* ``GET /{owner}/{alias}/requests/{id}``: 400 ``Request is still in progress``
  before completion; then the model output (``images`` / ``video`` with URLs),
  or 422 (bad input, or ``content_policy_violation``), or the failure's 5xx;
* ``PUT .../requests/{id}/cancel``: 202 ``CANCELLATION_REQUESTED`` before
  completion, 400 ``ALREADY_COMPLETED`` after;
* ``GET /files/<token>/<name>``: the media (a real H.264 mp4, a PNG of the asked
  size), with faults on demand (truncated).

Not confirmed by any source, so chosen here: a cancelled request's status is
COMPLETED with ``error_type: "request_cancelled"`` and its result 400; fal's 401
body. Faults of the API itself (429 with Retry-After, 5xx, slow answers) are
scripted with FakeServer.script().
"""

from __future__ import annotations

import itertools
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from fakes.httpfake import FakeServer, Recorded, Reply
from fakes.runway_fake import sample_mp4, sample_png

KEY = "3f9b2c1e-7a4d-4e8b-9c2f-1a2b3c4d5e6f:9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"

_FLUX_SIZES = {"square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"}
_TOL = {"1", "2", "3", "4", "5", "6"}


def _is(t):
    return lambda v: isinstance(v, t) and not (t in (int, float) and isinstance(v, bool))


def _one_of(values):
    return lambda v: v in values and type(v) is type(next(iter(values)))


def _image_size(v) -> bool:
    if isinstance(v, str):
        return v in _FLUX_SIZES
    return (isinstance(v, dict) and set(v) <= {"width", "height"}
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 14142 for x in v.values()))


_FLUX = {"prompt": _is(str), "image_size": _image_size, "num_inference_steps": lambda v: _is(int)(v) and 1 <= v <= 50,
         "seed": _is(int), "guidance_scale": _is((int, float)), "sync_mode": _is(bool),
         "num_images": lambda v: _is(int)(v) and 1 <= v <= 4, "enable_safety_checker": _is(bool),
         "output_format": _one_of({"jpeg", "png"}), "acceleration": _one_of({"none", "regular", "high"})}
_KLING = {"prompt": _is(str), "duration": _one_of({"5", "10"}), "aspect_ratio": _one_of({"16:9", "9:16", "1:1"}),
          "negative_prompt": _is(str), "cfg_scale": lambda v: _is((int, float))(v) and 0 <= v <= 1}
_HAILUO = {"prompt": _is(str), "duration": _one_of({"6", "10"}), "prompt_optimizer": _is(bool)}
_VEO = {"prompt": _is(str), "aspect_ratio": _one_of({"16:9", "9:16"}), "duration": _one_of({"4s", "6s", "8s"}),
        "resolution": _one_of({"720p", "1080p", "4k"}), "generate_audio": _is(bool), "negative_prompt": _is(str),
        "auto_fix": _is(bool), "safety_tolerance": _one_of(_TOL), "seed": _is(int)}
_SEEDANCE = {"prompt": _is(str), "aspect_ratio": _one_of({"21:9", "16:9", "4:3", "1:1", "3:4", "9:16"}),
             "duration": _one_of({str(d) for d in range(2, 13)}), "resolution": _one_of({"480p", "720p", "1080p"}),
             "camera_fixed": _is(bool), "enable_safety_checker": _is(bool), "num_frames": _is(int),
             "seed": _is(int)}

# model id -> (kind, input schema: field -> check). None: anything goes (a model aigen does not know).
MODELS: dict[str, tuple[str, dict[str, Callable[[Any], bool]] | None]] = {
    "fal-ai/flux/dev": ("image", _FLUX),
    "fal-ai/flux/schnell": ("image", _FLUX),
    "fal-ai/flux-pro/v1.1": ("image", {"prompt": _is(str), "image_size": _image_size, "seed": _is(int),
                                       "num_images": _is(int), "output_format": _one_of({"jpeg", "png"}),
                                       "enhance_prompt": _is(bool), "safety_tolerance": _one_of(_TOL),
                                       "sync_mode": _is(bool)}),
    "fal-ai/kling-video/v2.1/master/text-to-video": ("video", _KLING),
    "fal-ai/kling-video/v2.5-turbo/pro/text-to-video": ("video", _KLING),
    "fal-ai/kling-video/v4/text-to-video": ("video", {
        "prompt": _is(str), "duration": lambda v: _is(int)(v) and 3 <= v <= 30,
        "resolution": _one_of({"720p", "1080p"}), "aspect_ratio": _one_of({"auto", "16:9", "9:16", "1:1"}),
        "negative_prompt": _is(str)}),
    "fal-ai/minimax/hailuo-2.3/standard/text-to-video": ("video", _HAILUO),
    "fal-ai/minimax/hailuo-02/standard/text-to-video": ("video", _HAILUO),
    "fal-ai/veo3.1": ("video", _VEO),
    "fal-ai/veo3.1/fast": ("video", _VEO),
    "fal-ai/bytedance/seedance/v1/pro/text-to-video": ("video", _SEEDANCE),
    # A model the fake serves but aigen has no table entry for: the pass-through path.
    "someone/new-video-model": ("video", None),
    "someone/new-image-model": ("image", None),
}


def validate(model: str, body: Any) -> list[dict] | None:
    """fal's 422 ``detail`` list for a bad input, or None when it is accepted."""
    kind, schema = MODELS[model]
    if not isinstance(body, dict):
        return [{"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}]
    if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
        return [{"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}]
    if schema is None:
        return None
    problems = []
    for key, value in body.items():
        check = schema.get(key)
        if check is None:
            problems.append({"loc": ["body", key], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"})
        elif not check(value):
            problems.append({"loc": ["body", key], "msg": f"Input {value!r} is not valid", "type": "value_error",
                             "input": value})
    return problems or None


@dataclass
class Outcome:
    """How a request behaves. ``steps``: the statuses successive status GETs show.

    ``end``: "ok" | "refused" (422 content_policy_violation) | "failed" (a runner
    failure) | "cancelled". ``download_fault``: "truncate" | None.
    """

    steps: tuple[str, ...] = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    end: str = "ok"
    failure: str = "Runner disconnected while processing the request"
    failure_type: str = "runner_disconnected"
    download_fault: str | None = None


@dataclass
class Request:
    id: str
    model: str
    body: Any
    outcome: Outcome
    polls: int = 0
    cancelled: bool = False
    tokens: list[str] = field(default_factory=list)
    seeded: bool = False  # made by add_request, not by a submit

    @property
    def status(self) -> str:
        if self.cancelled:
            return "COMPLETED"
        steps = self.outcome.steps
        return steps[min(self.polls, len(steps)) - 1] if self.polls else steps[0]

    @property
    def end(self) -> str:
        return "cancelled" if self.cancelled else self.outcome.end


def _app(model: str) -> str:
    """owner/alias: the part of a model id fal's status and result URLs keep."""
    return "/".join(model.split("/")[:2])


class FalFake(FakeServer):
    def __init__(self, key: str = KEY):
        super().__init__()
        self.key = key
        self.reqs: dict[str, Request] = {}
        self.outcomes: list[Outcome] = []  # consumed by the next submits, in order
        self.default_outcome = Outcome()
        self._ids = itertools.count(1)
        self._rlock = threading.Lock()
        self.route("POST", "/*", self._submit)
        self.route("GET", "/*", self._get)
        self.route("PUT", "/*", self._cancel)

    # -- what tests look at -------------------------------------------------------
    @property
    def submits(self) -> int:
        """Requests actually queued (accepted submits)."""
        with self._rlock:
            return sum(1 for r in self.reqs.values() if not r.seeded)

    def submit_requests(self) -> list[Recorded]:
        return [r for r in self.matching("POST") if not r.path.startswith("/files/")]

    def status_gets(self, request_id: str | None = None) -> int:
        return self.count("GET", f"*/requests/{request_id or '*'}/status")

    def cancels(self) -> int:
        return self.count("PUT", "*/cancel")

    def add_request(self, model: str, outcome: Outcome | None = None, *, polls: int = 0) -> str:
        """A request queued at fal already (as if by an earlier run); not counted as a submit."""
        rid = str(uuid.uuid4())
        with self._rlock:
            self.reqs[rid] = Request(rid, model, {"prompt": "seeded"}, outcome or Outcome(), polls=polls,
                                     seeded=True)
        return rid

    # -- handlers -------------------------------------------------------------------
    def _auth_error(self, req: Recorded) -> Reply | None:
        if req.headers.get("authorization") != f"Key {self.key}":
            return Reply(401, {"detail": "No user found for Key ID and Secret"})
        return None

    def _urls(self, model: str, rid: str) -> dict:
        base = f"{self.url}/{_app(model)}/requests/{rid}"
        return {"request_id": rid, "response_url": base, "status_url": f"{base}/status",
                "cancel_url": f"{base}/cancel"}

    def _submit(self, req: Recorded, srv) -> Reply:
        bad = self._auth_error(req)
        if bad:
            return bad
        model = req.path.strip("/")
        if model not in MODELS:
            return Reply(404, {"detail": f"Application '{model}' not found"})
        try:
            body = req.json()
        except ValueError:
            return Reply(422, {"detail": [{"loc": ["body"], "msg": "Invalid JSON", "type": "json_invalid"}]})
        with self._rlock:
            outcome = self.outcomes.pop(0) if self.outcomes else self.default_outcome
            rid = str(uuid.UUID(int=next(self._ids)))
            self.reqs[rid] = Request(rid, model, body, outcome)
        return Reply(200, {"status": "IN_QUEUE", "queue_position": 0, **self._urls(model, rid)},
                     headers={"x-fal-request-id": rid})

    def _find(self, req: Recorded) -> tuple[Request | None, str, Reply | None]:
        """(request, what is asked: "status" | "result" | "cancel", an error answer)."""
        parts = req.path.strip("/").split("/")
        # owner/alias/requests/{id}[/status|/cancel]
        if len(parts) < 4 or parts[2] != "requests":
            return None, "", Reply(404, {"detail": "Not found"})
        rid = parts[3]
        what = parts[4] if len(parts) > 4 else "result"
        with self._rlock:
            r = self.reqs.get(rid)
        if r is None or _app(r.model) != "/".join(parts[:2]):
            return None, what, Reply(404, {"detail": f"Request {rid} not found"})
        return r, what, None

    def _get(self, req: Recorded, srv) -> Reply:
        if req.path.startswith("/files/"):
            return self._file(req)
        bad = self._auth_error(req)
        if bad:
            return bad
        r, what, err = self._find(req)
        if err:
            return err
        if what == "status":
            if req.query.get("logs") not in (["true"], ["false"]):
                return Reply(422, {"detail": [{"loc": ["query", "logs"], "msg": "must be a boolean",
                                               "type": "bool_parsing"}]})
            with self._rlock:
                if not r.cancelled and r.polls < len(r.outcome.steps):
                    r.polls += 1
                return self._status(r)
        if what != "result":
            return Reply(404, {"detail": "Not found"})
        with self._rlock:
            if r.status != "COMPLETED":
                return Reply(400, {"detail": "Request is still in progress"})
            return self._result(r)

    def _status(self, r: Request) -> Reply:
        out = {"status": r.status, "request_id": r.id, "response_url": self._urls(r.model, r.id)["response_url"]}
        if r.status == "IN_QUEUE":
            out["queue_position"] = 0
            return Reply(202, out)
        out["logs"] = None
        if r.status == "IN_PROGRESS":
            return Reply(202, out)
        out["metrics"] = {"inference_time": 1.5}
        if r.end == "failed":
            out.update(error=r.outcome.failure, error_type=r.outcome.failure_type)
        elif r.end == "cancelled":
            out.update(error="Request was cancelled", error_type="request_cancelled")
        return Reply(200, out)

    def _result(self, r: Request) -> Reply:
        if r.end == "cancelled":
            return Reply(400, {"detail": "Request was cancelled", "error_type": "request_cancelled"})
        if r.end == "failed":
            return Reply(503, {"detail": r.outcome.failure, "error_type": r.outcome.failure_type},
                         headers={"X-Fal-Error-Type": r.outcome.failure_type, "x-fal-request-id": r.id})
        problems = validate(r.model, r.body) if r.model in MODELS else None
        if problems:
            return Reply(422, {"detail": problems}, headers={"X-Fal-Retryable": "false"})
        if r.end == "refused":
            return Reply(422, {"detail": [{"loc": ["body", "prompt"],
                                           "msg": "The content was flagged by a content checker.",
                                           "type": "content_policy_violation",
                                           "categories": ["violence"]}]},
                         headers={"X-Fal-Retryable": "false"})
        token = uuid.uuid4().hex
        r.tokens.append(token)
        kind = MODELS.get(r.model, ("video", None))[0]
        if kind == "image":
            size = r.body.get("image_size") if isinstance(r.body, dict) else None
            w, h = (size["width"], size["height"]) if isinstance(size, dict) else (1024, 768)
            url = f"{self.url}/files/{token}/{r.id}_{w}x{h}.png"
            return Reply(200, {"images": [{"url": url, "width": w, "height": h, "content_type": "image/png"}],
                               "timings": {"inference": 1.2}, "seed": r.body.get("seed", 42),
                               "has_nsfw_concepts": [False], "prompt": r.body.get("prompt")})
        url = f"{self.url}/files/{token}/{r.id}.mp4"
        return Reply(200, {"video": {"url": url, "content_type": "video/mp4", "file_name": "output.mp4",
                                     "file_size": len(sample_mp4())}})

    def _cancel(self, req: Recorded, srv) -> Reply:
        bad = self._auth_error(req)
        if bad:
            return bad
        r, what, err = self._find(req)
        if err:
            return err
        if what != "cancel":
            return Reply(405, {"detail": "Method not allowed"})
        with self._rlock:
            if r.status == "COMPLETED":
                return Reply(400, {"status": "ALREADY_COMPLETED"})
            r.cancelled = True
        return Reply(202, {"status": "CANCELLATION_REQUESTED"})

    def _file(self, req: Recorded) -> Reply:
        parts = req.path.split("/")  # ["", "files", token, name]
        if len(parts) != 4:
            return Reply(404, "not found")
        token, name = parts[2], parts[3]
        with self._rlock:
            r = next((x for x in self.reqs.values() if token in x.tokens), None)
        if r is None:
            return Reply(404, "not found")
        if name.endswith(".png"):
            w, h = (int(x) for x in name.rsplit("_", 1)[1][:-4].split("x"))
            data, ctype = sample_png(min(w, 2048), min(h, 2048)), "image/png"
        else:
            data, ctype = sample_mp4(), "video/mp4"
        if r.outcome.download_fault == "truncate":
            return Reply(200, data, content_type=ctype, truncate_to=len(data) // 2)
        return Reply(200, data, content_type=ctype)
