"""`comfyui`: images and videos from a ComfyUI server the user runs (plain `requests`).

The server is ``AIGEN_COMFYUI_URL`` (default ``http://127.0.0.1:8188``, where
``python main.py`` listens); it takes no key. One asset is one prompt:

1. the workflow (a shipped API-format template for text-to-image or text-to-video,
   or the user's own with ``--image-option workflow=PATH``) gets this asset's
   prompt, seed, size and length written into its nodes (comfyui_workflow.py);
2. ``POST /prompt`` with a client id and a prompt id of our own; the id is saved
   on the asset at once;
3. ``GET /history/{id}`` is polled (it answers ``{}`` until the prompt is done),
   with ``GET /queue`` to tell "queued or running" from "unknown";
4. the output file is fetched with ``GET /view?filename=&subfolder=&type=`` through
   the shared, checked download; a video that is not H.264 MP4 (animated WebP,
   GIF, WebM, ...) is transcoded here with PyAV, so browsers can play it.

ComfyUI keeps its queue and history in memory: after a restart it no longer
knows a prompt id (``/history`` ``{}``, not in ``/queue``). Such a prompt is
submitted again: it costs nothing (``free``). A resumed asset whose prompt is
still queued or running is polled, not submitted twice.

ComfyUI answers a graph identical to the one it just ran from its cache, with
the same files: each asset writes its own seed, so the assets of a request differ.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aigen.errors import BadInput, MediaCheckError, ProviderError
from aigen.providers import comfyui_workflow as wf
from aigen.providers.base import AssetOutput, AssetRequest, Provider, Reporter
from aigen.providers.jobs import PollPolicy, poll_job

log = logging.getLogger("aigen.providers.comfyui")

URL_VAR = "AIGEN_COMFYUI_URL"
DEFAULT_URL = "http://127.0.0.1:8188"
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_VIDEO_BYTES = 1024 * 1024 * 1024
# Seconds a whole JSON answer (history carries the graph) may take once its headers came.
ANSWER_DEADLINE = 120.0
# A prompt forgotten by a restarting server mid-wait is submitted again, at most this often per asset.
MAX_RESUBMITS = 3
IMAGE_EXTS = {"png", "jpg", "jpeg", "webp"}
VIDEO_EXTS = {"mp4", "webm", "mov", "mkv", "webp", "gif"}
# The model files the shipped templates load (README: ComfyUI section).
TEMPLATE_FILES = {
    "image": "models/checkpoints/sd_xl_base_1.0.safetensors",
    "video": "models/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors, "
             "models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors, models/vae/wan_2.1_vae.safetensors",
}


def comfyui_url(env: dict) -> str:
    """The server's base URL from AIGEN_COMFYUI_URL (http or https, host required), or BadInput."""
    raw = (env.get(URL_VAR) or "").strip() or DEFAULT_URL
    try:
        parts = urlsplit(raw)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        ok = False
    if not ok or parts.query or parts.fragment:
        raise BadInput(f"invalid {URL_VAR} {raw!r}: expected a URL such as {DEFAULT_URL}",
                       hint="the address ComfyUI prints at start-up (python main.py --listen HOST --port PORT)")
    return raw.rstrip("/")


class ComfyUIProvider(Provider):
    name = "comfyui"
    kinds = frozenset({"image", "video"})
    description = ("a ComfyUI server you run (AIGEN_COMFYUI_URL): shipped API-format workflows for text-to-image "
                   "(SDXL) and text-to-video (Wan 2.1), or your own with --image-option/--video-option workflow=PATH")
    key_env = ()
    base_url_env = URL_VAR
    default_base_url = DEFAULT_URL
    # Shown by `aigen providers`: the models the shipped templates load. A request without --image-model /
    # --video-model keeps whatever its workflow loads (model_for returns None).
    default_models = {"image": "sd_xl_base_1.0.safetensors", "video": "wan2.1_t2v_1.3B_bf16.safetensors"}
    # ComfyUI runs one prompt at a time; two in its queue keep the GPU busy without a gap between prompts.
    concurrency = 2
    free = True  # the user's own GPU: a prompt submitted again costs nothing
    takes_options = True

    def __init__(self, env: dict | None = None, home: Path | None = None):
        super().__init__(env=env, home=home)
        self._local = threading.local()
        # One client id per process: ComfyUI routes its /ws messages by it and keeps it with each prompt.
        self.client_id = f"aigen-{uuid.uuid4().hex}"

    # -- checks before anything is written ------------------------------------
    @property
    def base_url(self) -> str:
        return comfyui_url(self.env)

    def check_ready(self, kind: str) -> None:
        super().check_ready(kind)
        comfyui_url(self.env)

    def model_for(self, kind: str, requested: str | None) -> str | None:
        if requested is None:
            return None  # the workflow's own loader file
        name = requested.strip()
        if not name or len(name) > 255 or any(ord(c) < 32 for c in name):
            raise BadInput(f"invalid --{kind}-model {requested!r}: give a model file name as ComfyUI lists it "
                           "(e.g. sd_xl_base_1.0.safetensors)")
        return name

    def _workflow(self, kind: str, options: dict | None) -> tuple[dict, str, bool]:
        """(graph, where, is_template) for a request's options; reads a workflow file if it was not stored."""
        flag = f"--{kind}-option"
        opts = self.pass_options(kind, options)
        graph = opts.get(wf.STORED_GRAPH)
        if isinstance(graph, dict):
            return graph, f"the workflow {Path(str(opts.get('workflow', 'file'))).name}", False
        if opts.get("workflow") is not None:
            path, graph = wf.read_workflow_file(opts["workflow"], flag)
            return graph, f"the workflow {path.name}", False
        return wf.load_template(kind), f"the {wf.TEMPLATE_NAMES[kind]} template", True

    def check_request(self, kind: str, *, prompt: str, model: str | None, width: int, height: int,
                      duration: float | None = None, options: dict | None = None) -> list[str]:
        """Refuse a workflow aigen cannot drive, before anything is written; say what will differ from the ask.

        A workflow file is read and checked here, and kept with the request (so
        `aigen retry`, or a worker on another machine, runs exactly this graph).
        """
        flag = f"--{kind}-option"
        raw = self.pass_options(kind, options)
        opts = wf.check_options(raw, kind, flag)
        graph, where, template = self._workflow(kind, options)
        if not template and options is not None and isinstance(options.get(f"{kind}_options"), dict):
            options[f"{kind}_options"][wf.STORED_GRAPH] = graph
        found = wf.check_drivable(graph, kind, where)
        wf.check_fill_options(graph, found, kind, opts, model, flag)
        notes = wf.size_notes(found, kind, width, height)
        if kind == "video":
            notes += wf.length_note(graph, found, duration, opts)
        if template:
            files = TEMPLATE_FILES[kind] if model is None else f"the model {model}"
            notes.append(f"comfyui runs its {wf.TEMPLATE_NAMES[kind]} template, which needs {files} on the "
                         f"ComfyUI server at {self.base_url}")
        return notes

    def describe_output(self, kind: str, model: str | None, width: int, height: int) -> str:
        step = wf.SIZE_STEP[kind]
        return f"{wf.snap(width, step)}x{wf.snap(height, step)} asked of the workflow"

    # -- HTTP -------------------------------------------------------------------
    def _session(self):
        from aigen.providers.http import make_session, timeout_from_env

        session = getattr(self._local, "session", None)
        if session is None:
            session = make_session(timeout=timeout_from_env(self.env, 60.0))
            self._local.session = session
        return session

    def _policy(self):
        from aigen.providers.http import RetryPolicy

        return RetryPolicy.from_env(self.env)

    def _classify(self, exc: BaseException) -> ProviderError | None:
        """A requests error; a server that is not there is named with its URL and what to do."""
        import requests

        from aigen.providers.http import error_from_requests, never_sent

        err = error_from_requests(exc, provider=self.name, idempotent=True)
        if err is not None and (isinstance(exc, requests.exceptions.ConnectTimeout)
                                or (isinstance(exc, requests.exceptions.ConnectionError) and never_sent(exc))):
            why = "connection refused" if "refused" in str(exc).lower() else "could not connect"
            err.message = (f"comfyui: no ComfyUI server answers at {self.base_url} ({why}); start ComfyUI there "
                           f"(python main.py) or set {URL_VAR} to where it runs")
            err.args = (err.message,)
            err.provider_code = "server_down"
        return err

    def _call(self, method: str, path: str, *, what: str, retries: bool = True, json: Any = None,
              params: dict | None = None, accept: tuple[int, ...] = ()) -> tuple[int, Any]:
        """One API call (JSON in and out); returns (status, body). Statuses in `accept` are returned, not raised.

        Every ComfyUI call may be sent again: polls are reads, and a prompt sent
        twice costs nothing (the second is answered from ComfyUI's cache).
        """
        from aigen.providers.http import BodyLimits, raise_for_response, read_answer, with_retries

        session = self._session()
        url = self.base_url + path
        limits = BodyLimits.from_env(self.env, ANSWER_DEADLINE)

        def once():
            resp = session.request(method, url, json=json, params=params, stream=True)
            body = read_answer(resp, limits=limits, provider=self.name, idempotent=True, what=what)
            if resp.status_code in accept:
                return resp.status_code, body
            raise_for_response(resp, provider=self.name, what=what)
            return resp.status_code, body

        if not retries:
            try:
                return once()
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified, or re-raised when unknown
                err = self._classify(exc)
                if err is None:
                    raise
                raise err from exc
        return with_retries(
            once, policy=self._policy(), provider=self.name, what=what, classify=self._classify,
            on_retry=lambda n, err, delay: log.warning("comfyui %s failed (%s); try %d again in %.1f s",
                                                       what, err.message, n + 1, delay),
        )

    # -- the prompt's life ------------------------------------------------------
    def _submit(self, graph: dict, kind: str) -> str:
        prompt_id = str(uuid.uuid4())
        status, body = self._call("POST", "/prompt", what="prompt submission", accept=(400,),
                                  json={"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id})
        if status == 400:
            raise self._refusal(body, kind)
        if not isinstance(body, dict) or not body.get("prompt_id"):
            raise ProviderError("comfyui: the /prompt answer has no prompt_id", provider=self.name,
                                provider_code="bad_response")
        node_errors = body.get("node_errors") or {}
        if node_errors:
            log.warning("comfyui runs only the valid outputs of prompt %s: %s", body["prompt_id"],
                        _node_errors_text(node_errors))
        return str(body["prompt_id"])

    def _refusal(self, body: Any, kind: str) -> ProviderError:
        """ComfyUI's 400: the prompt was not queued; say which node and input, as ComfyUI does."""
        err = body.get("error") if isinstance(body, dict) else None
        err = err if isinstance(err, dict) else {}
        etype = str(err.get("type") or "invalid_prompt")
        message = str(err.get("message") or "invalid prompt").strip()
        node_errors = body.get("node_errors") if isinstance(body, dict) else None
        detail = _node_errors_text(node_errors) if node_errors else str(err.get("details") or "")
        text = f"comfyui refused the workflow ({etype}): {message}" + (f": {detail}" if detail else "")
        if "value_not_in_list" in text and any(k in text for k in ("ckpt_name", "unet_name", "clip_name",
                                                                    "vae_name", "lora_name")):
            text += (f" (install that model file on the ComfyUI server, or choose one it has with --{kind}-model "
                     f"NAME or a workflow of your own)")
        return ProviderError(text, provider=self.name, provider_code=etype, status=400)

    def _history(self, prompt_id: str, *, retries: bool) -> dict | None:
        _, body = self._call("GET", f"/history/{prompt_id}", what=f"history of prompt {prompt_id}", retries=retries)
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    def _queued(self, prompt_id: str, *, retries: bool) -> tuple[str, int] | None:
        """("running", 0) or ("pending", position), or None when the queue does not hold the prompt."""
        _, body = self._call("GET", "/queue", what="queue", retries=retries)
        body = body if isinstance(body, dict) else {}
        for item in body.get("queue_running") or []:
            if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                return "running", 0
        pending = [i for i in body.get("queue_pending") or [] if isinstance(i, list) and len(i) > 1]
        pending.sort(key=lambda i: i[0] if isinstance(i[0], (int, float)) else 0)
        for pos, item in enumerate(pending, 1):
            if item[1] == prompt_id:
                return "pending", pos
        return None

    def _state(self, prompt_id: str, *, retries: bool = True) -> tuple[str, Any]:
        """("done", history entry) | ("running", 0) | ("pending", position) | ("unknown", None)."""
        entry = self._history(prompt_id, retries=retries)
        if entry is not None:
            return "done", entry
        queued = self._queued(prompt_id, retries=retries)
        if queued is not None:
            return queued
        # It may have finished between the two reads.
        entry = self._history(prompt_id, retries=retries)
        return ("done", entry) if entry is not None else ("unknown", None)

    def _wait(self, prompt_id: str, kind: str, reporter: Reporter) -> tuple[str, Any]:
        timeout = 2 * 3600.0 if kind == "video" else 30 * 60.0
        # Local polls are cheap; 30 failed polls in a row (a minute or more) ride out a restarting server.
        policy = PollPolicy.from_env(self.env, interval=1.0, max_interval=5.0, timeout=timeout,
                                     max_transient_errors=30)

        def update(state) -> None:
            if state[0] == "running":
                reporter.progress(0.3)
            elif state[0] == "pending":
                reporter.progress(0.05)

        return poll_job(
            lambda: self._state(prompt_id, retries=False),
            lambda state: state[0] in ("done", "unknown"),
            policy=policy, reporter=reporter, provider=self.name, what=f"comfyui prompt {prompt_id}",
            on_update=update, first_wait=True,
        )

    # -- generate ---------------------------------------------------------------
    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        kind = req.kind
        opts = wf.check_options(self.pass_options(kind, req.options), kind, f"--{kind}-option", stored=True)
        graph, where, _ = self._workflow(kind, req.options)
        found = wf.check_drivable(graph, kind, where)
        fps = req.fps if kind == "video" else None
        filled = wf.fill(graph, found, kind=kind, prompt=req.prompt, seed=req.seed, width=req.width,
                         height=req.height, duration=req.duration, fps=fps, model=req.model, options=opts)

        prompt_id = req.provider_job_id
        entry = None
        if prompt_id:
            state, data = self._state(prompt_id)
            if state == "done" and _status_str(data) == "success":
                entry = data
            elif state == "done":
                log.warning("comfyui prompt %s had ended with %s; submitting it again", prompt_id,
                            _status_str(data) or "no status")
                prompt_id = None
            elif state == "unknown":
                log.warning("the ComfyUI server at %s no longer knows prompt %s (restarted?); submitting it again",
                            self.base_url, prompt_id)
                prompt_id = None
        resubmits = 0
        while entry is None:
            if prompt_id is None:
                prompt_id = self._submit(filled.graph, kind)
                reporter.save_job_id(prompt_id)
                reporter.progress(0.02)
                log.info("comfyui prompt %s queued for %s %d", prompt_id, kind, req.index)
            state, data = self._wait(prompt_id, kind, reporter)
            if state == "done":
                entry = data
                break
            resubmits += 1
            if resubmits > MAX_RESUBMITS:
                raise ProviderError(
                    f"comfyui: the server at {self.base_url} forgot prompt {prompt_id} {resubmits} times (is it "
                    "restarting again and again?)", provider=self.name, provider_code="prompt_lost", retryable=True)
            log.warning("the ComfyUI server at %s forgot prompt %s while it was queued (restarted?); submitting it "
                        "again", self.base_url, prompt_id)
            prompt_id = None
        self._raise_if_failed(entry, prompt_id)
        item = self._pick_output(entry, found, kind, prompt_id)
        reporter.progress(0.9)
        fmt = self._fetch(item, kind, dest, reporter, fps=filled.fps)
        return AssetOutput(format=fmt, model=filled.model, cost=0.0)

    def _raise_if_failed(self, entry: dict, prompt_id: str) -> None:
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        status_str = status.get("status_str")
        messages = status.get("messages") or []
        events = {m[0]: m[1] for m in messages if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)}
        if "execution_error" in events or status_str == "error":
            e = events.get("execution_error") or {}
            if e or "execution_interrupted" not in events:
                where = f"node {e.get('node_id')} ({e.get('node_type')})" if e.get("node_id") else "a node"
                what = " ".join(str(e.get("exception_message") or "no message").split())
                kind = f"{e.get('exception_type')}: " if e.get("exception_type") else ""
                raise ProviderError(
                    f"comfyui prompt {prompt_id} failed at {where}: {kind}{what[:400]}", provider=self.name,
                    provider_code="execution_error",
                    hint="see the ComfyUI server's console; `aigen retry` submits the prompt again",
                )
        if "execution_interrupted" in events:
            e = events["execution_interrupted"]
            raise ProviderError(
                f"comfyui prompt {prompt_id} was interrupted at node {e.get('node_id')} ({e.get('node_type')}) "
                "(someone pressed Cancel in ComfyUI, or it was asked to stop)", provider=self.name,
                provider_code="execution_interrupted", hint="`aigen retry` submits the prompt again")
        if status_str not in (None, "success"):
            raise ProviderError(f"comfyui prompt {prompt_id} ended with status {status_str!r}", provider=self.name,
                                provider_code=str(status_str))

    def _pick_output(self, entry: dict, found: wf.Found, kind: str, prompt_id: str) -> dict:
        """The file to keep: from the node titled aigen:output, else the first save node of the right kind."""
        outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
        order = [n for n in found.outputs if n in outputs] + sorted(
            (n for n in outputs if n not in found.outputs), key=lambda n: (len(n), n))
        exts = VIDEO_EXTS if kind == "video" else IMAGE_EXTS
        candidates = []
        for nid in order:
            ui = outputs.get(nid)
            if not isinstance(ui, dict):
                continue
            for key in ("videos", "gifs", "images", "video"):
                for item in ui.get(key) or []:
                    if isinstance(item, dict) and isinstance(item.get("filename"), str):
                        ext = item["filename"].rsplit(".", 1)[-1].lower()
                        if ext in exts:
                            candidates.append(item)
        if kind == "video":
            # A still picture is not a video: an image output counts only when animated (webp, gif).
            candidates = [c for c in candidates if not (c["filename"].lower().endswith(".webp")
                                                        and not _animated(outputs, c))] or candidates
        saved = [c for c in candidates if c.get("type", "output") == "output"]
        chosen = (saved or candidates or [None])[0]
        if chosen is None:
            names = sorted({i.get("filename") for ui in outputs.values() if isinstance(ui, dict)
                            for v in ui.values() if isinstance(v, list) for i in v if isinstance(i, dict)} - {None})
            raise ProviderError(
                f"comfyui prompt {prompt_id} finished without {'a video' if kind == 'video' else 'an image'} among "
                f"its outputs ({', '.join(names) if names else 'none'})", provider=self.name,
                provider_code="no_output",
                hint="the workflow needs a save node (SaveImage, SaveVideo, ...), or title the right one aigen:output")
        return chosen

    def _fetch(self, item: dict, kind: str, dest: Path, reporter: Reporter, *, fps: float | None) -> str:
        from aigen.providers.http import download, sniff, timeout_from_env

        params = {"filename": item["filename"], "subfolder": item.get("subfolder") or "",
                  "type": item.get("type") or "output"}
        url = f"{self.base_url}/view?{urlencode(params)}"
        ext = item["filename"].rsplit(".", 1)[-1].lower()
        video = kind == "video"
        target = dest if not video else dest.with_name(dest.name + ".source")
        try:
            got = download(
                url, target, timeout=timeout_from_env(self.env, 60.0),
                max_bytes=MAX_VIDEO_BYTES if video else MAX_IMAGE_BYTES,
                allowed_types=("video/", "image/webp", "image/gif") if video else ("image/png", "image/jpeg",
                                                                                     "image/webp"),
                expect_kind="image" if (not video or ext in ("webp", "gif")) else "video",
                provider=self.name, session=self._session(), deadline=1800.0 if video else 600.0, env=self.env,
                policy=self._policy(),
                progress=lambda n, total: reporter.progress(0.9 + 0.09 * (n / total if total else 0.5)),
            )
            if not video:
                if got.format == "webp":
                    from aigen.providers.runway import to_png

                    to_png(dest)
                    return "png"
                if got.format not in ("png", "jpeg"):
                    raise MediaCheckError(f"comfyui image {item['filename']} is {got.format}, not PNG or JPEG")
                return got.format
            with open(target, "rb") as fh:
                head = fh.read(64)
            if sniff(head) == "mp4" and _is_browser_h264(target):
                os.replace(target, dest)
            else:
                to_h264(target, dest, fps=fps)
            return "mp4"
        finally:
            if video:
                target.unlink(missing_ok=True)


# --------------------------------------------------------------------------- answers
def _status_str(entry: Any) -> str | None:
    status = entry.get("status") if isinstance(entry, dict) else None
    return status.get("status_str") if isinstance(status, dict) else None


def _animated(outputs: dict, item: dict) -> bool:
    for ui in outputs.values():
        if isinstance(ui, dict) and item in (ui.get("images") or []):
            return bool(ui.get("animated")) and all(ui.get("animated"))
    return False


def _node_errors_text(node_errors: Any, limit: int = 600) -> str:
    """ComfyUI's node_errors as one line: node 4 (CheckpointLoaderSimple): value_not_in_list: ckpt_name: ..."""
    parts = []
    if isinstance(node_errors, dict):
        for nid, ne in node_errors.items():
            if not isinstance(ne, dict):
                continue
            errs = []
            for e in ne.get("errors") or []:
                if isinstance(e, dict):
                    text = str(e.get("details") or e.get("message") or "")
                    errs.append(f"{e.get('type', 'error')}: {text}" if text else str(e.get("type", "error")))
            parts.append(f"node {nid} ({ne.get('class_type', '?')}): {'; '.join(errs) or 'invalid'}")
    text = " ".join("; ".join(parts).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- videos browsers play
def _is_browser_h264(path: Path) -> bool:
    """An MP4 whose first video stream is H.264 in yuv420p (what every browser decodes)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return False
            cc = container.streams.video[0].codec_context
            return cc.name == "h264" and (cc.pix_fmt or "") in ("yuv420p", "yuvj420p")
    except (av.FFmpegError, OSError, ValueError):
        return False


def to_h264(src: Path, dest: Path, *, fps: float | None = None) -> int:
    """Re-encode a workflow's video (animated WebP or GIF, WebM, another codec) as H.264 yuv420p MP4.

    Frames are streamed one at a time; an odd width or height loses its last
    pixel row or column (yuv420p needs even sizes). Returns the frame count.
    """
    import av
    import numpy as np

    from aigen.media.video import encode_frames
    from aigen.providers.http import sniff

    with open(src, "rb") as fh:
        fmt = sniff(fh.read(64))

    def even(arr):
        h, w = arr.shape[:2]
        return np.ascontiguousarray(arr[: h - h % 2, : w - w % 2, :3])

    if fmt in ("webp", "gif"):
        from PIL import Image, ImageSequence

        try:
            with Image.open(src) as im:
                n = getattr(im, "n_frames", 1)
                durations = []
                for frame in ImageSequence.Iterator(im):
                    durations.append(frame.info.get("duration") or 0)
                w, h = im.size
        except (OSError, ValueError) as e:
            raise MediaCheckError(f"comfyui video ({fmt}) cannot be read: {e}") from None
        if n < 2:
            raise MediaCheckError(f"comfyui video output is a still {fmt.upper()} image, not an animation")
        ms = sorted(d for d in durations if d) or [0]
        rate = 1000.0 / ms[len(ms) // 2] if ms[0] else (fps or 16)

        def frames():
            with Image.open(src) as im:
                for frame in ImageSequence.Iterator(im):
                    yield even(np.asarray(frame.convert("RGB")))

        if w < 2 or h < 2:
            raise MediaCheckError(f"comfyui video is {w}x{h}: too small to encode")
        try:
            return encode_frames(frames(), dest, w - w % 2, h - h % 2, max(1, round(rate)), total=n)
        except (OSError, ValueError) as e:
            raise MediaCheckError(f"comfyui video ({fmt}) could not be re-encoded as H.264: {e}") from None
    try:
        container = av.open(str(src))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaCheckError(f"comfyui video ({fmt or 'unknown format'}) cannot be opened: {e}") from None
    try:
        if not container.streams.video:
            raise MediaCheckError("comfyui video has no video stream")
        stream = container.streams.video[0]
        w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if w < 2 or h < 2:
            raise MediaCheckError(f"comfyui video is {w}x{h}: too small to encode")
        rate = stream.average_rate or stream.guessed_rate
        rate = float(rate) if rate else (fps or 16)

        def frames():
            for frame in container.decode(stream):
                yield even(frame.to_ndarray(format="rgb24"))

        try:
            return encode_frames(frames(), dest, w - w % 2, h - h % 2, max(1, round(rate)),
                                 total=int(stream.frames or 0) or None)
        except av.FFmpegError as e:
            raise MediaCheckError(f"comfyui video ({fmt}) could not be decoded: {e}") from None
        except ValueError as e:
            raise MediaCheckError(f"comfyui video ({fmt}) could not be re-encoded as H.264: {e}") from None
    finally:
        container.close()


__all__ = ["ComfyUIProvider", "comfyui_url", "to_h264"]
