"""A fake ComfyUI server on 127.0.0.1, strict about its contract (PROVIDERS.md §11).

Routes (bare and under ``/api``, as ComfyUI has both):

* ``POST /prompt {"prompt", "client_id"?, "prompt_id"?, ...}``: validated the way
  ComfyUI's ``validate_prompt`` does: no ``prompt`` -> 400 ``no_prompt``; a node
  without ``class_type`` or of a class the server does not have -> 400
  ``invalid_prompt`` with empty ``node_errors``; no output node -> 400
  ``prompt_no_outputs``; per output, every node it depends on is checked
  (``required_input_missing``, ``bad_linked_input``, ``return_type_mismatch``,
  ``invalid_input_type``, ``value_smaller_than_min`` / ``value_bigger_than_max``,
  ``value_not_in_list`` for model files the server does not have, a link to a
  missing node as ``exception_during_inner_validation``); no valid output -> 400
  ``prompt_outputs_failed_validation`` with ``node_errors``; some valid -> 200 with
  the rest in ``node_errors``, and only the valid outputs run. A ``prompt_id`` that
  is not a canonical lowercase UUID -> 400 ``invalid_prompt_id``; a body that is not
  JSON -> 500 text.
* ``GET /queue``, ``GET /prompt``, ``GET /history[/{id}]`` (``{}`` while queued or
  running, and for an unknown id), ``GET /view?filename=&subfolder=&type=``
  (400/403/404 as ComfyUI), ``GET /system_stats``.

The queue lives in memory and runs one prompt at a time; it advances one step
on every ``GET /history/{id}`` (a prompt is taken from the queue on one step and
finished on the next, ``run_steps`` in all), so tests never wait for a clock.
``paused`` stops it. Executing writes real files: SaveImage a PNG whose colour
follows the seed and the prompt text, SaveVideo an H.264 MP4, SaveAnimatedWEBP an
animated WebP, SaveWEBM a VP9 WebM, PreviewImage into ``temp``. The cache is
ComfyUI's classic one for a whole graph: the same graph twice in a row runs
nothing and answers with the previous files (no new file written).

Bad days: ``restart()`` forgets every prompt id (queue, history, cache; files
stay), ``fail_next`` scripts execution errors (``execution_error`` in history),
``interrupt_next`` an interruption, and the FakeServer's ``script`` 5xx, slow or
cut-off answers. ``submits`` counts the prompts queued.
"""

from __future__ import annotations

import json
import mimetypes
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakes.httpfake import FakeServer, Recorded, Reply

INT_MAX = 0xFFFFFFFFFFFFFFFF
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "uni_pc", "ddim", "lcm"]
SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"]


def i(lo: int = -INT_MAX, hi: int = INT_MAX) -> tuple:
    return ("INT", lo, hi)


def f(lo: float = -1e9, hi: float = 1e9) -> tuple:
    return ("FLOAT", lo, hi)


S = ("STRING",)
B = ("BOOLEAN",)


def lst(name: str) -> tuple:
    return ("LIST", name)


def link(typ: str) -> tuple:
    return ("LINK", typ)


# class -> (required inputs, optional inputs, output types, is output node); input specs from nodes.py and
# comfy_extras as PROVIDERS.md §11 names them (only the classes aigen's templates and tests use).
NODES: dict[str, tuple[dict, dict, list[str], bool]] = {
    "CheckpointLoaderSimple": ({"ckpt_name": lst("checkpoints")}, {}, ["MODEL", "CLIP", "VAE"], False),
    "UNETLoader": ({"unet_name": lst("diffusion_models"), "weight_dtype": lst("weight_dtype")}, {}, ["MODEL"], False),
    "CLIPLoader": ({"clip_name": lst("text_encoders"), "type": lst("clip_type")}, {"device": lst("device")},
                   ["CLIP"], False),
    "VAELoader": ({"vae_name": lst("vae")}, {}, ["VAE"], False),
    "CLIPTextEncode": ({"text": S, "clip": link("CLIP")}, {}, ["CONDITIONING"], False),
    "ConditioningZeroOut": ({"conditioning": link("CONDITIONING")}, {}, ["CONDITIONING"], False),
    "EmptyLatentImage": ({"width": i(16, 16384), "height": i(16, 16384), "batch_size": i(1, 4096)}, {},
                         ["LATENT"], False),
    "EmptySD3LatentImage": ({"width": i(16, 16384), "height": i(16, 16384), "batch_size": i(1, 4096)}, {},
                            ["LATENT"], False),
    "EmptyHunyuanLatentVideo": ({"width": i(16, 16384), "height": i(16, 16384), "length": i(1, 16384),
                                 "batch_size": i(1, 4096)}, {}, ["LATENT"], False),
    "KSampler": ({"model": link("MODEL"), "seed": i(0, INT_MAX), "steps": i(1, 10000), "cfg": f(0.0, 100.0),
                  "sampler_name": lst("samplers"), "scheduler": lst("schedulers"), "positive": link("CONDITIONING"),
                  "negative": link("CONDITIONING"), "latent_image": link("LATENT"), "denoise": f(0.0, 1.0)}, {},
                 ["LATENT"], False),
    "VAEDecode": ({"samples": link("LATENT"), "vae": link("VAE")}, {}, ["IMAGE"], False),
    "EmptyImage": ({"width": i(1, 16384), "height": i(1, 16384), "batch_size": i(1, 4096), "color": i(0, 0xFFFFFF)},
                   {}, ["IMAGE"], False),
    "CreateVideo": ({"images": link("IMAGE"), "fps": f(1.0, 120.0)}, {"audio": link("AUDIO")}, ["VIDEO"], False),
    "SaveImage": ({"images": link("IMAGE"), "filename_prefix": S}, {}, [], True),
    "PreviewImage": ({"images": link("IMAGE")}, {}, [], True),
    "SaveVideo": ({"video": link("VIDEO"), "filename_prefix": S, "format": lst("video_format"),
                   "codec": lst("video_codec")}, {}, [], True),
    "SaveAnimatedWEBP": ({"images": link("IMAGE"), "filename_prefix": S, "fps": f(0.01, 1000.0), "lossless": B,
                          "quality": i(0, 100), "method": lst("webp_method")}, {}, [], True),
    "SaveWEBM": ({"images": link("IMAGE"), "filename_prefix": S, "codec": lst("webm_codec"), "fps": f(0.01, 1000.0),
                  "crf": f(0, 63.0)}, {}, [], True),
}

DEFAULT_MODELS = {
    "checkpoints": ["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"],
    "diffusion_models": ["wan2.1_t2v_1.3B_bf16.safetensors"],
    "text_encoders": ["umt5_xxl_fp8_e4m3fn_scaled.safetensors"],
    "vae": ["wan_2.1_vae.safetensors", "pixel_space"],
}
FIXED_LISTS = {
    "weight_dtype": ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],
    "clip_type": ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
                  "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image"],
    "device": ["default", "cpu"],
    "samplers": SAMPLERS,
    "schedulers": SCHEDULERS,
    "video_format": ["auto", "mp4"],
    "video_codec": ["auto", "h264"],
    "webp_method": ["default", "fastest", "slowest"],
    "webm_codec": ["vp9", "av1"],
}


def _err(etype: str, message: str, details: str = "", **extra) -> dict:
    return {"type": etype, "message": message, "details": details, "extra_info": extra}


def _is_link(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2


@dataclass
class Item:
    number: int
    prompt_id: str
    prompt: dict
    extra_data: dict
    outputs: list[str]
    steps: int = 0


@dataclass
class Execution:
    """A scripted outcome for the next prompt to run."""

    error: str | None = None  # exception message of an execution_error
    node: str | None = None  # the node it happens at (default: the first sampler or output)
    interrupted: bool = False


class ComfyUIFake(FakeServer):
    def __init__(self, root: Path, *, models: dict | None = None, run_steps: int = 2):
        super().__init__()
        self.root = Path(root)
        self.output_dir = self.root / "output"
        self.temp_dir = self.root / "temp"
        self.input_dir = self.root / "input"
        for d in (self.output_dir, self.temp_dir, self.input_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.models = {k: list(v) for k, v in (models or DEFAULT_MODELS).items()}
        self.run_steps = max(1, run_steps)
        self.paused = False
        self.fail_next: list[Execution] = []
        self.submits = 0
        self.executions = 0  # prompts that ran (a cached one runs nothing)
        self.files_written: list[str] = []
        self.restarts = 0
        self.accepted: list[dict] = []
        self._qlock = threading.RLock()
        self._reset_memory()
        for prefix in ("", "/api"):
            self.route("POST", f"{prefix}/prompt", self._post_prompt)
            self.route("GET", f"{prefix}/prompt", self._get_prompt)
            self.route("GET", f"{prefix}/queue", self._get_queue)
            self.route("GET", f"{prefix}/history", self._get_history_all)
            self.route("GET", f"{prefix}/history/*", self._get_history)
            self.route("GET", f"{prefix}/view", self._view)
            self.route("GET", f"{prefix}/system_stats", self._stats)

    def _reset_memory(self) -> None:
        with self._qlock:
            self.pending: list[Item] = []
            self.running: Item | None = None
            self.history: dict[str, dict] = {}
            self.number = 0
            self.last: tuple[str, dict] | None = None  # (graph JSON, outputs) of the previous prompt that ran

    # -- test controls ----------------------------------------------------------
    def restart(self) -> None:
        """ComfyUI stopped and started again: every prompt id is forgotten; files on disk stay."""
        self._reset_memory()
        self.restarts += 1

    def run_all(self) -> None:
        """Run everything queued to the end (as a server left alone would)."""
        with self._qlock:
            paused, self.paused = self.paused, False
            while self.pending or self.running:
                self._step()
            self.paused = paused

    def knows(self, prompt_id: str) -> bool:
        with self._qlock:
            return (prompt_id in self.history or any(x.prompt_id == prompt_id for x in self.pending)
                    or (self.running is not None and self.running.prompt_id == prompt_id))

    def submitted(self) -> list[dict]:
        """The graphs of every accepted POST /prompt, in order."""
        with self._qlock:
            return list(self.accepted)

    # -- validation ---------------------------------------------------------------
    def _choices(self, name: str) -> list[str]:
        return self.models.get(name) or FIXED_LISTS.get(name) or []

    def _validate_node(self, prompt: dict, nid: str, seen: dict) -> list[dict]:
        """ComfyUI's validate_inputs for one node and (recursively) its upstream; errors of this node only."""
        if nid in seen:
            return seen[nid]
        seen[nid] = []
        node = prompt[nid]
        required, optional, _, _ = NODES[node["class_type"]]
        inputs = node.get("inputs") or {}
        errors = []
        for name, spec in {**required, **optional}.items():
            if name not in inputs:
                if name in required:
                    errors.append(_err("required_input_missing", "Required input is missing", name,
                                       input_name=name))
                continue
            value = inputs[name]
            if _is_link(value):
                src = str(value[0])
                if src not in prompt:
                    errors.append(_err("exception_during_inner_validation", "Exception when validating inner node",
                                       repr(src), input_name=name, exception_message=repr(src),
                                       exception_type="KeyError"))
                    continue
                src_cls = prompt[src].get("class_type")
                outs = NODES[src_cls][2] if src_cls in NODES else []
                idx = value[1]
                if not isinstance(idx, int) or not 0 <= idx < len(outs):
                    errors.append(_err("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                       "[node_id, slot_index]", f"{name}, {value}", input_name=name))
                    continue
                want = spec[1] if spec[0] == "LINK" else spec[0]
                if outs[idx] != want:
                    errors.append(_err("return_type_mismatch", "Return type mismatch between linked nodes",
                                       f"{name}, received_type({outs[idx]}) mismatch input_type({want})",
                                       input_name=name))
                    continue
                self._validate_node(prompt, src, seen)  # an upstream fault is reported on that node
                continue
            kind = spec[0]
            if kind == "LINK":
                errors.append(_err("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                   "[node_id, slot_index]", f"{name}, {value!r}", input_name=name))
            elif kind in ("INT", "FLOAT"):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                if kind == "INT" and isinstance(value, float) and not value.is_integer():
                    ok = False
                if not ok:
                    errors.append(_err("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                                       f"{name}, {value!r}", input_name=name))
                elif value < spec[1]:
                    errors.append(_err("value_smaller_than_min", f"Value {value} smaller than min of {spec[1]}",
                                       f"{name}", input_name=name))
                elif value > spec[2]:
                    errors.append(_err("value_bigger_than_max", f"Value {value} bigger than max of {spec[2]}",
                                       f"{name}", input_name=name))
            elif kind == "STRING":
                if not isinstance(value, str):
                    errors.append(_err("invalid_input_type", "Failed to convert an input value to a STRING value",
                                       f"{name}, {value!r}", input_name=name))
            elif kind == "BOOLEAN":
                if not isinstance(value, bool):
                    errors.append(_err("invalid_input_type", "Failed to convert an input value to a BOOLEAN value",
                                       f"{name}, {value!r}", input_name=name))
            elif kind == "LIST":
                choices = self._choices(spec[1])
                if value not in choices:
                    shown = choices if len(choices) <= 20 else f"(list of length {len(choices)})"
                    errors.append(_err("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {shown}",
                                       input_name=name))
        seen[nid] = errors
        return errors

    def _validate(self, prompt: Any) -> tuple[int, dict]:
        if not isinstance(prompt, dict):
            return 400, {"error": _err("invalid_prompt", "Cannot execute because the prompt is not an object."),
                         "node_errors": {}}
        for nid, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return 400, {"error": _err("invalid_prompt", "Cannot execute because a node is missing the "
                                           "class_type property.", f"Node ID '#{nid}'"), "node_errors": {}}
            if node["class_type"] not in NODES:
                return 400, {"error": _err("invalid_prompt", f"Cannot execute because node {node['class_type']} "
                                           "does not exist.", f"Node ID '#{nid}'"), "node_errors": {}}
        outputs = sorted((nid for nid, n in prompt.items() if NODES[n["class_type"]][3]), key=str)
        if not outputs:
            return 400, {"error": _err("prompt_no_outputs", "Prompt has no outputs"), "node_errors": {}}
        seen: dict = {}
        good, node_errors, reasons = [], {}, []
        for out in outputs:
            own = self._validate_node(prompt, out, seen)
            bad_nodes = {n for n, errs in seen.items() if errs and n != out and self._upstream(prompt, out, n)}
            if not own and not bad_nodes:
                good.append(out)
                continue
            if own:
                reasons.append(f"{prompt[out]['class_type']}: " + ", ".join(e["message"] for e in own))
            for n in bad_nodes | ({out} if own else set()):
                entry = node_errors.setdefault(n, {"errors": seen[n], "dependent_outputs": [],
                                                   "class_type": prompt[n]["class_type"]})
                entry["dependent_outputs"].append(out)
        if not good:
            return 400, {"error": _err("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                       "\n".join(reasons)), "node_errors": node_errors}
        return 200, {"outputs": good, "node_errors": node_errors}

    def _upstream(self, prompt: dict, out: str, target: str) -> bool:
        stack, seen = [out], set()
        while stack:
            n = stack.pop()
            if n == target:
                return True
            if n in seen or n not in prompt:
                continue
            seen.add(n)
            stack += [str(v[0]) for v in (prompt[n].get("inputs") or {}).values() if _is_link(v)]
        return False

    # -- routes -------------------------------------------------------------------
    def _post_prompt(self, req: Recorded, srv) -> Reply:
        try:
            body = json.loads(req.body.decode() or "null")
        except (UnicodeDecodeError, ValueError):
            return Reply(500, "500 Internal Server Error\n\nServer got itself in trouble", content_type="text/plain")
        if not isinstance(body, dict) or "prompt" not in body:
            return Reply(400, {"error": _err("no_prompt", "No prompt provided", "No prompt provided"),
                               "node_errors": {}})
        pid = body.get("prompt_id")
        if pid is not None and (not isinstance(pid, str) or not UUID_RE.fullmatch(pid)):
            return Reply(400, {"error": _err("invalid_prompt_id", "prompt_id must be a valid UUID",
                                             str(pid)), "node_errors": {}})
        status, answer = self._validate(body["prompt"])
        if status != 200:
            return Reply(status, answer)
        extra = dict(body.get("extra_data") or {})
        if body.get("client_id") is not None:
            extra["client_id"] = body["client_id"]
        with self._qlock:
            pid = pid or str(uuid.uuid4())
            number = self.number
            self.number += 1
            self.pending.append(Item(number, pid, body["prompt"], extra, answer["outputs"]))
            self.submits += 1
            self.accepted.append(body["prompt"])
        return Reply(200, {"prompt_id": pid, "number": number, "node_errors": answer["node_errors"]})

    def _get_prompt(self, req, srv) -> Reply:
        with self._qlock:
            n = len(self.pending) + (1 if self.running else 0)
        return Reply(200, {"exec_info": {"queue_remaining": n}})

    def _get_queue(self, req, srv) -> Reply:
        with self._qlock:
            def row(x: Item) -> list:
                return [x.number, x.prompt_id, x.prompt, x.extra_data, x.outputs]

            return Reply(200, {"queue_running": [row(self.running)] if self.running else [],
                               "queue_pending": [row(x) for x in self.pending]})

    def _get_history(self, req, srv) -> Reply:
        pid = req.path.rsplit("/", 1)[-1]
        with self._qlock:
            self._step()
            entry = self.history.get(pid)
            return Reply(200, {pid: entry} if entry is not None else {})

    def _get_history_all(self, req, srv) -> Reply:
        with self._qlock:
            return Reply(200, dict(self.history))

    def _stats(self, req, srv) -> Reply:
        return Reply(200, {"system": {"os": "posix", "comfyui_version": "0.3.64-fake", "python_version": "3",
                                      "embedded_python": False, "argv": ["main.py"]},
                           "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 0,
                                        "vram_free": 0}]})

    def _view(self, req: Recorded, srv) -> Reply:
        q = {k: v[0] for k, v in req.query.items()}
        name = q.get("filename", "")
        typ = q.get("type", "output")
        sub = q.get("subfolder", "")
        base = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}.get(typ)
        if not name or name.startswith("/") or ".." in name or base is None:
            return Reply(400, b"")
        folder = (base / sub).resolve()
        if not str(folder).startswith(str(base.resolve())):
            return Reply(403, b"")
        path = folder / name
        if not path.is_file():
            return Reply(404, b"")
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".webp"):
            ctype = "image/webp"
        return Reply(200, path.read_bytes(), content_type=ctype,
                     headers={"Content-Disposition": f'filename="{name}"'})

    # -- the executor -------------------------------------------------------------
    def _step(self) -> None:
        """One step of the single prompt worker: take the next prompt, or advance/finish the running one."""
        if self.paused:
            return
        if self.running is None:
            if not self.pending:
                return
            self.pending.sort(key=lambda x: x.number)
            self.running = self.pending.pop(0)
            self.running.steps = 1
            if self.running.steps < self.run_steps:
                return
        else:
            self.running.steps += 1
            if self.running.steps < self.run_steps:
                return
        item, self.running = self.running, None
        self._execute(item)

    def _execute(self, item: Item) -> None:
        now = int(time.time() * 1000)
        msgs: list = [["execution_start", {"prompt_id": item.prompt_id, "timestamp": now}]]
        meta = {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in item.prompt}
        scripted = self.fail_next.pop(0) if self.fail_next else None
        key = json.dumps(item.prompt, sort_keys=True)
        if scripted is not None:
            node = scripted.node or next((n for n, x in item.prompt.items() if x["class_type"] == "KSampler"),
                                         item.outputs[0])
            if scripted.interrupted:
                msgs.append(["execution_interrupted", {"prompt_id": item.prompt_id, "node_id": node,
                                                       "node_type": item.prompt[node]["class_type"], "executed": [],
                                                       "timestamp": now}])
            else:
                msgs.append(["execution_error", {
                    "prompt_id": item.prompt_id, "node_id": node, "node_type": item.prompt[node]["class_type"],
                    "executed": [], "exception_message": scripted.error or "boom",
                    "exception_type": "torch.OutOfMemoryError", "traceback": ["  File \"execution.py\"\n"],
                    "current_inputs": {}, "current_outputs": {}, "timestamp": now}])
            self.last = None
            self.history[item.prompt_id] = {
                "prompt": [item.number, item.prompt_id, item.prompt, item.extra_data, item.outputs],
                "outputs": {}, "status": {"status_str": "error", "completed": False, "messages": msgs},
                "meta": meta}
            return
        if self.last is not None and self.last[0] == key:
            # ComfyUI's classic cache: nothing runs, the previous files come back.
            outputs = self.last[1]
            msgs.append(["execution_cached", {"nodes": sorted(item.prompt), "prompt_id": item.prompt_id,
                                              "timestamp": now}])
        else:
            msgs.append(["execution_cached", {"nodes": [], "prompt_id": item.prompt_id, "timestamp": now}])
            outputs = {out: self._run_output(item.prompt, out) for out in item.outputs}
            self.executions += 1
            self.last = (key, outputs)
        msgs.append(["execution_success", {"prompt_id": item.prompt_id, "timestamp": now}])
        self.history[item.prompt_id] = {
            "prompt": [item.number, item.prompt_id, item.prompt, item.extra_data, item.outputs],
            "outputs": outputs, "status": {"status_str": "success", "completed": True, "messages": msgs},
            "meta": meta}

    # -- making files ----------------------------------------------------------------
    def _find(self, prompt: dict, nid: str, pred) -> dict | None:
        stack, seen = [nid], set()
        while stack:
            n = stack.pop()
            if n in seen or n not in prompt:
                continue
            seen.add(n)
            if pred(prompt[n]):
                return prompt[n]
            stack += [str(v[0]) for v in (prompt[n].get("inputs") or {}).values() if _is_link(v)]
        return None

    def _look(self, prompt: dict, out: str) -> tuple[int, int, int, tuple[int, int, int]]:
        """(width, height, frames, colour) of what an output node would save: from its upstream nodes."""
        sized = self._find(prompt, out, lambda n: "width" in (n.get("inputs") or {}))
        w = int(sized["inputs"]["width"]) if sized else 64
        h = int(sized["inputs"]["height"]) if sized else 64
        frames = int(sized["inputs"].get("length", 1)) if sized else 1
        sampler = self._find(prompt, out, lambda n: n["class_type"] == "KSampler")
        seed = sampler["inputs"]["seed"] if sampler else 0
        texts = sorted(n["inputs"]["text"] for n in prompt.values() if n["class_type"] == "CLIPTextEncode")
        h8 = uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}|{texts}").bytes
        return w, h, frames, (h8[0], h8[1], h8[2])

    def _save_path(self, base: Path, prefix: str, ext: str) -> tuple[Path, str, str]:
        sub, _, stem = prefix.rpartition("/")
        folder = base / sub
        folder.mkdir(parents=True, exist_ok=True)
        counter = 1
        pat = re.compile(re.escape(stem) + r"_(\d{5})_\.")
        for p in folder.iterdir():
            m = pat.match(p.name)
            if m:
                counter = max(counter, int(m.group(1)) + 1)
        name = f"{stem}_{counter:05}_.{ext}"
        return folder / name, name, sub

    def _run_output(self, prompt: dict, out: str) -> dict:
        node = prompt[out]
        cls = node["class_type"]
        inputs = node["inputs"]
        w, h, frames, colour = self._look(prompt, out)
        if cls in ("SaveImage", "PreviewImage"):
            from PIL import Image

            base = self.output_dir if cls == "SaveImage" else self.temp_dir
            prefix = inputs.get("filename_prefix", "ComfyUI") if cls == "SaveImage" else "ComfyUI_temp_abcde"
            path, name, sub = self._save_path(base, prefix, "png")
            Image.new("RGB", (w, h), colour).save(path, format="PNG")
            self.files_written.append(name)
            return {"images": [{"filename": name, "subfolder": sub,
                                "type": "output" if cls == "SaveImage" else "temp"}]}
        fps = float(self._find(prompt, out, lambda n: "fps" in (n.get("inputs") or {}))["inputs"]["fps"])
        if cls == "SaveVideo":
            path, name, sub = self._save_path(self.output_dir, inputs["filename_prefix"], "mp4")
            path.write_bytes(_encode(w, h, frames, fps, colour, "mp4"))
        elif cls == "SaveWEBM":
            path, name, sub = self._save_path(self.output_dir, inputs["filename_prefix"], "webm")
            path.write_bytes(_encode(w, h, frames, fps, colour, "webm"))
        else:  # SaveAnimatedWEBP
            from PIL import Image

            path, name, sub = self._save_path(self.output_dir, inputs["filename_prefix"], "webp")
            ims = [Image.new("RGB", (w, h), tuple((c + 12 * k) % 256 for c in colour)) for k in range(frames)]
            ims[0].save(path, format="WEBP", save_all=True, append_images=ims[1:],
                        duration=int(round(1000 / fps)), loop=0, lossless=bool(inputs.get("lossless")))
        self.files_written.append(name)
        return {"images": [{"filename": name, "subfolder": sub, "type": "output"}], "animated": [True]}


def _encode(w: int, h: int, frames: int, fps: float, colour, container: str) -> bytes:
    """A real H.264 MP4 (what SaveVideo writes) or VP9 WebM (SaveWEBM) of `frames` frames."""
    import tempfile
    from fractions import Fraction

    import av
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"v.{container}"
        out = av.open(str(path), "w", options={"movflags": "faststart"} if container == "mp4" else {})
        rate = Fraction(fps).limit_denominator(1000)
        stream = out.add_stream("libx264" if container == "mp4" else "libvpx-vp9", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k in range(frames):
            a = np.zeros((h, w, 3), np.uint8)
            a[:, :] = colour
            a[:, (k * 4) % w:(k * 4) % w + 4, 1] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        out.close()
        return path.read_bytes()


__all__ = ["ComfyUIFake", "DEFAULT_MODELS", "Execution", "NODES"]
