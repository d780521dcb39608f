"""ComfyUI API-format workflows: read them, check them, and write one asset's prompt, seed and size into them.

Pure data work, no network: the `comfyui` provider uses it both before anything
is written (to refuse a workflow it could not drive) and for each asset.

An API-format workflow is what ComfyUI's "Export (API)" writes: a dict of node
id -> ``{"class_type": ..., "inputs": {name: value | [source_id, output_index]}}``
(PROVIDERS.md §11), optionally with ``"_meta": {"title": ...}`` per node, which
ComfyUI ignores. Nodes are found in this order:

1. **by title**: a node whose title contains ``aigen:prompt``, ``aigen:negative``,
   ``aigen:seed``, ``aigen:size``, ``aigen:length`` or ``aigen:output`` (the
   shipped templates name theirs this way, and a user can rename nodes in the UI);
2. **by class and links**: the text encoders (any node with a string ``text``,
   ``text_g``, ``text_l``, ``clip_l`` or ``t5xxl`` input) reached from a sampler's
   or guider's ``positive`` (or ``conditioning``) input, going upstream through
   conditioning nodes; every integer ``seed`` / ``noise_seed`` input (KSampler,
   KSamplerAdvanced, RandomNoise, SamplerCustom, ...); every ``*Latent*`` node
   with integer ``width`` and ``height`` (EmptyLatentImage, EmptySD3LatentImage,
   EmptyHunyuanLatentVideo, ...), whose integer ``length`` is the video's frames.

Every asset gets its own seed: ComfyUI answers a graph identical to the previous
one from its cache, with the previous files, so a workflow without a seed input
is refused.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aigen.errors import BadInput

TEMPLATES = {"image": "text_to_image.json", "video": "text_to_video.json"}
TEMPLATE_NAMES = {"image": "text-to-image", "video": "text-to-video"}
MARKERS = ("prompt", "negative", "seed", "size", "length", "output")
TEXT_INPUTS = ("text", "text_g", "text_l", "clip_l", "t5xxl")
SEED_INPUTS = ("seed", "noise_seed")
# The loader whose file `--image-model` / `--video-model` replaces.
LOADER_INPUTS = {
    "CheckpointLoaderSimple": "ckpt_name",
    "CheckpointLoader": "ckpt_name",
    "ImageOnlyCheckpointLoader": "ckpt_name",
    "UNETLoader": "unet_name",
}
# Nodes that set a video's frame rate, and the input that holds it.
FPS_INPUTS = {
    "CreateVideo": "fps",
    "SaveAnimatedWEBP": "fps",
    "SaveAnimatedPNG": "fps",
    "SaveWEBM": "fps",
    "VHS_VideoCombine": "frame_rate",
}
IMAGE_OUTPUT_CLASSES = ("SaveImage", "PreviewImage")
VIDEO_OUTPUT_CLASSES = ("SaveVideo", "VHS_VideoCombine", "SaveWEBM", "SaveAnimatedWEBP", "SaveAnimatedPNG")
# Sampler inputs that `--image-option KEY=VALUE` may set on every sampler node that has them.
SAMPLER_OPTIONS = {"steps": int, "cfg": float, "sampler_name": str, "scheduler": str, "denoise": float}
OPTION_KEYS = ("workflow", "negative_prompt", "fps", *SAMPLER_OPTIONS, "node.ID.INPUT")
# Where check_request keeps the workflow it read and checked (the request then does not depend on the file).
STORED_GRAPH = "workflow_graph"
MAX_WORKFLOW_BYTES = 8 * 1024 * 1024
# Latent sizes: ComfyUI's latent nodes step by 8 (EmptyLatentImage); video latents by 16.
SIZE_STEP = {"image": 8, "video": 16}
SIZE_MIN, SIZE_MAX = 16, 16384
# EmptyHunyuanLatentVideo (Wan, Hunyuan): length is 1 + 4k frames.
LENGTH_STEP = 4


def is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def title(node: dict) -> str:
    meta = node.get("_meta")
    return str(meta.get("title") or "") if isinstance(meta, dict) else ""


def titled(graph: dict, marker: str) -> list[str]:
    tag = f"aigen:{marker}"
    return [nid for nid, node in graph.items() if tag in title(node).lower()]


# --------------------------------------------------------------------------- reading
def load_template(kind: str) -> dict:
    from importlib import resources

    text = resources.files("aigen.providers").joinpath("comfyui_workflows", TEMPLATES[kind]).read_text("utf-8")
    return json.loads(text)


def read_workflow_file(value: Any, flag: str) -> tuple[Path, dict]:
    """The workflow named by `workflow=PATH`: (absolute path, graph), or BadInput saying what is wrong."""
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{flag} workflow= needs the path of an API-format workflow file (.json)")
    path = Path(value).expanduser()
    try:
        path = path.resolve()
        if not path.is_file():
            raise BadInput(f"{flag} workflow={value}: no such file",
                           hint="give the path of a workflow saved with ComfyUI's \"Export (API)\"")
        size = path.stat().st_size
        if size > MAX_WORKFLOW_BYTES:
            raise BadInput(f"{flag} workflow={value}: {size} bytes, over the {MAX_WORKFLOW_BYTES}-byte limit")
        raw = path.read_bytes()
    except OSError as e:
        raise BadInput(f"{flag} workflow={value}: cannot be read ({e.strerror or e})") from None
    try:
        graph = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise BadInput(f"{flag} workflow={value}: not a UTF-8 text file") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{flag} workflow={value}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") \
            from None
    check_api_format(graph, f"{flag} workflow={value}")
    return path, graph


def check_api_format(graph: Any, where: str) -> None:
    """Refuse anything ComfyUI's POST /prompt would not take as a graph, with a message saying why."""
    if isinstance(graph, dict) and isinstance(graph.get("nodes"), list) and "links" in graph:
        raise BadInput(
            f"{where} is a UI-format workflow (it has 'nodes' and 'links'), not the API format",
            hint="in ComfyUI, save it with Workflow > Export (API), and pass that file",
        )
    if isinstance(graph, dict) and isinstance(graph.get("prompt"), dict):
        raise BadInput(f"{where} is a POST /prompt body; pass the graph under its \"prompt\" key on its own")
    if not isinstance(graph, dict) or not graph:
        raise BadInput(f"{where} is not an API-format workflow: expected a JSON object of node id -> node")
    for nid, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise BadInput(f"{where}: node {nid!r} has no class_type, so it is not an API-format workflow",
                           hint="in ComfyUI, save it with Workflow > Export (API)")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise BadInput(f"{where}: node {nid!r} ({node['class_type']}): 'inputs' must be an object")
        for name, value in inputs.items():
            if is_link(value) and str(value[0]) not in graph:
                raise BadInput(f"{where}: node {nid!r} ({node['class_type']}) input {name!r} links to node "
                               f"{value[0]!r}, which is not in the workflow")


# --------------------------------------------------------------------------- finding nodes
@dataclass
class Found:
    prompt: list[tuple[str, str]] = field(default_factory=list)  # (node id, input name)
    negative: list[tuple[str, str]] = field(default_factory=list)
    seed: list[tuple[str, str]] = field(default_factory=list)
    size: list[str] = field(default_factory=list)
    length: list[str] = field(default_factory=list)
    fps: list[tuple[str, str]] = field(default_factory=list)
    loaders: list[tuple[str, str]] = field(default_factory=list)
    samplers: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # preferred first


def _text_inputs(node: dict) -> list[str]:
    inputs = node.get("inputs") or {}
    return [k for k in TEXT_INPUTS if isinstance(inputs.get(k), str)]


def _upstream_texts(graph: dict, start: str, side: str) -> list[tuple[str, str]]:
    """Text inputs reached from node `start` going upstream through `side` ("positive"/"negative") conditioning."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    frontier = [start]
    for _ in range(12):  # conditioning chains are short; a cycle or a huge graph stops here
        nxt = []
        for nid in frontier:
            if nid in seen or nid not in graph:
                continue
            seen.add(nid)
            node = graph[nid]
            texts = _text_inputs(node)
            if texts:
                found += [(nid, k) for k in texts]
                continue
            for name, value in (node.get("inputs") or {}).items():
                if is_link(value) and (name == side or "cond" in name or name == "guider"):
                    nxt.append(str(value[0]))
        if not nxt:
            break
        frontier = nxt
    return found


def find_nodes(graph: dict, kind: str) -> Found:
    f = Found()
    for nid, node in graph.items():
        inputs = node.get("inputs") or {}
        cls = node["class_type"]
        if any(is_link(inputs.get(k)) for k in ("positive", "negative")) or (
                cls == "BasicGuider" and is_link(inputs.get("conditioning"))):
            f.samplers.append(nid)
        if cls in LOADER_INPUTS and isinstance(inputs.get(LOADER_INPUTS[cls]), str):
            f.loaders.append((nid, LOADER_INPUTS[cls]))
        if cls in FPS_INPUTS and _is_number(inputs.get(FPS_INPUTS[cls])):
            f.fps.append((nid, FPS_INPUTS[cls]))

    # The prompt: titled nodes, else the encoders feeding the samplers' positive side.
    marked = titled(graph, "prompt")
    if marked:
        for nid in marked:
            texts = _text_inputs(graph[nid])
            if not texts:
                raise BadInput(f"node {nid!r} ({graph[nid]['class_type']}) is titled aigen:prompt but has no text "
                               f"input ({', '.join(TEXT_INPUTS)}) to write the prompt into")
            f.prompt += [(nid, k) for k in texts]
    else:
        for sid in f.samplers:
            inputs = graph[sid]["inputs"]
            start = inputs.get("positive") if is_link(inputs.get("positive")) else inputs.get("conditioning")
            if is_link(start):
                f.prompt += [t for t in _upstream_texts(graph, str(start[0]), "positive") if t not in f.prompt]
    marked = titled(graph, "negative")
    if marked:
        f.negative = [(nid, k) for nid in marked for k in _text_inputs(graph[nid])]
    else:
        for sid in f.samplers:
            neg = graph[sid]["inputs"].get("negative")
            if is_link(neg):
                f.negative += [t for t in _upstream_texts(graph, str(neg[0]), "negative")
                               if t not in f.negative]
    # A text node on both sides (Flux's ConditioningZeroOut of the prompt) is the prompt.
    prompt_ids = {nid for nid, _ in f.prompt}
    f.negative = [t for t in f.negative if t[0] not in prompt_ids]

    marked = titled(graph, "seed")
    candidates = marked or list(graph)
    for nid in candidates:
        inputs = graph[nid].get("inputs") or {}
        f.seed += [(nid, k) for k in SEED_INPUTS if _is_int(inputs.get(k))]
    if marked and not f.seed:
        raise BadInput(f"node {marked[0]!r} is titled aigen:seed but has no integer seed or noise_seed input")

    marked = titled(graph, "size")
    for nid, node in graph.items():
        inputs = node.get("inputs") or {}
        sized = _is_int(inputs.get("width")) and _is_int(inputs.get("height"))
        if (nid in marked or (not marked and "Latent" in node["class_type"])) and sized:
            f.size.append(nid)
    if marked and not f.size:
        raise BadInput(f"node {marked[0]!r} is titled aigen:size but has no integer width and height inputs")
    marked = titled(graph, "length")
    for nid in marked or f.size:
        if _is_int((graph[nid].get("inputs") or {}).get("length")):
            f.length.append(nid)

    marked = titled(graph, "output")
    preferred = VIDEO_OUTPUT_CLASSES if kind == "video" else IMAGE_OUTPUT_CLASSES
    others = IMAGE_OUTPUT_CLASSES if kind == "video" else VIDEO_OUTPUT_CLASSES
    by_class = [nid for cls in preferred + others for nid, n in graph.items() if n["class_type"] == cls]
    f.outputs = marked + [nid for nid in by_class if nid not in marked]
    return f


def check_drivable(graph: dict, kind: str, where: str) -> Found:
    """The nodes aigen writes into, or BadInput when the prompt or the seed has nowhere to go."""
    found = find_nodes(graph, kind)
    if not found.prompt:
        raise BadInput(
            f"{where}: no node takes the prompt: aigen looks for the text encoder (e.g. CLIPTextEncode) feeding "
            "a sampler's positive input, or a node titled aigen:prompt",
            hint="in ComfyUI, rename the prompt's node to aigen:prompt, then Export (API) again",
        )
    if not found.seed:
        raise BadInput(
            f"{where}: no node takes a seed (an integer seed or noise_seed input, as on KSampler or RandomNoise); "
            "each asset needs its own, because ComfyUI answers a graph it just ran from its cache with the same "
            "files",
            hint="add a sampler with a seed input, or title the node holding it aigen:seed",
        )
    return found


# --------------------------------------------------------------------------- options
def check_options(options: dict, kind: str, flag: str, *, stored: bool = False) -> dict:
    """The `--image-option` / `--video-option` values this provider knows, checked; BadInput for the rest.

    `stored`: the options of a request already written, which may hold the workflow graph aigen kept.
    """
    out = {}
    for key, value in options.items():
        if key == STORED_GRAPH:
            if not stored:
                raise BadInput(f"{flag} {key} is set by aigen itself; pass workflow=PATH")
            continue
        if key == "workflow":
            out[key] = value
        elif key == "negative_prompt":
            if not isinstance(value, str):
                raise BadInput(f"{flag} negative_prompt must be text")
            out[key] = value
        elif key == "fps":
            if kind != "video":
                raise BadInput(f"{flag} fps is for videos")
            if not _is_number(value) or not 1 <= value <= 120:
                raise BadInput(f"invalid {flag} fps={value!r}: a number of frames per second from 1 to 120")
            out[key] = value
        elif key in SAMPLER_OPTIONS:
            want = SAMPLER_OPTIONS[key]
            ok = (_is_int(value) and value >= 1) if want is int else (
                _is_number(value) if want is float else isinstance(value, str) and bool(value))
            if not ok:
                what = {int: "a whole number of at least 1", float: "a number", str: "a name"}[want]
                raise BadInput(f"invalid {flag} {key}={value!r}: {what}")
            out[key] = float(value) if want is float else value
        elif key.startswith("node."):
            parts = key.split(".")
            if len(parts) != 3 or not parts[1] or not parts[2]:
                raise BadInput(f"invalid {flag} {key}: write node.ID.INPUT=VALUE, e.g. node.3.steps=30")
            out[key] = value
        else:
            raise BadInput(f"unknown {flag} {key!r} for comfyui: it takes {', '.join(OPTION_KEYS)}")
    return out


# --------------------------------------------------------------------------- filling in
def snap(value: int, step: int) -> int:
    return max(SIZE_MIN, min(SIZE_MAX, int(round(value / step)) * step))


def frames_for(duration: float, fps: float) -> int:
    """Frames for `duration` seconds at `fps`, as 1 + 4k (what Wan and Hunyuan video latents take)."""
    k = max(0, int(round((duration * fps - 1) / LENGTH_STEP)))
    return 1 + LENGTH_STEP * k


def workflow_fps(graph: dict, found: Found) -> float | None:
    for nid, name in found.fps:
        value = graph[nid]["inputs"][name]
        if _is_number(value) and value > 0:
            return float(value)
    return None


@dataclass
class Filled:
    graph: dict
    width: int | None
    height: int | None
    frames: int | None
    fps: float | None
    model: str | None


def fill(graph: dict, found: Found, *, kind: str, prompt: str, seed: int, width: int, height: int,
         duration: float | None, fps: float | None, model: str | None, options: dict) -> Filled:
    """A copy of `graph` with this asset's prompt, seed, size, length and options written in."""
    g = copy.deepcopy(graph)

    def put(nid: str, name: str, value: Any) -> None:
        g[nid].setdefault("inputs", {})[name] = value

    for nid, name in found.prompt:
        put(nid, name, prompt)
    negative = options.get("negative_prompt")
    if negative is not None:
        for nid, name in found.negative:
            put(nid, name, negative)
    for nid, name in found.seed:
        put(nid, name, int(seed))
    step = SIZE_STEP[kind]
    w = h = None
    if found.size:
        w, h = snap(width, step), snap(height, step)
        for nid in found.size:
            put(nid, "width", w)
            put(nid, "height", h)
            if _is_int(g[nid]["inputs"].get("batch_size")):
                put(nid, "batch_size", 1)  # one asset per prompt
    rate = None
    frames = None
    if kind == "video":
        if options.get("fps") is not None:
            for nid, name in found.fps:
                put(nid, name, options["fps"])
        rate = workflow_fps(g, found) or fps
        if found.length and duration and rate:
            frames = frames_for(duration, rate)
            for nid in found.length:
                put(nid, "length", frames)
    for key, value in options.items():
        if key in SAMPLER_OPTIONS:
            for nid in found.samplers:
                if key in (g[nid].get("inputs") or {}) and not is_link(g[nid]["inputs"][key]):
                    put(nid, key, value)
    if model:
        for nid, name in found.loaders:
            put(nid, name, model)
    used_model = next((g[nid]["inputs"][name] for nid, name in found.loaders), None)
    for key, value in options.items():
        if key.startswith("node."):
            _, nid, name = key.split(".")
            put(nid, name, value)
    return Filled(g, w, h, frames, rate, used_model)


def check_fill_options(graph: dict, found: Found, kind: str, options: dict, model: str | None,
                       flag: str) -> None:
    """Refuse options that have nowhere to go in this workflow (before anything is written)."""
    if options.get("negative_prompt") is not None and not found.negative:
        raise BadInput(f"{flag} negative_prompt: the workflow has no negative prompt node (a text encoder on a "
                       "sampler's negative input, or a node titled aigen:negative)")
    if kind == "video" and options.get("fps") is not None and not found.fps:
        raise BadInput(f"{flag} fps: the workflow has no node that sets the frame rate "
                       f"({', '.join(FPS_INPUTS)})")
    for key in options:
        if key in SAMPLER_OPTIONS and not any(
                key in (graph[nid].get("inputs") or {}) and not is_link(graph[nid]["inputs"][key])
                for nid in found.samplers):
            raise BadInput(f"{flag} {key}: no sampler in the workflow has a {key} input")
    seeds = set(found.seed)
    for key in options:
        if key.startswith("node."):
            _, nid, name = key.split(".")
            if nid not in graph:
                raise BadInput(f"{flag} {key}: the workflow has no node {nid!r}")
            if (nid, name) in seeds:
                raise BadInput(f"{flag} {key}: aigen writes each asset's own seed there (ComfyUI would answer the "
                               "same graph from its cache with the same files); use --seed for reproducible seeds")
    if model and not found.loaders:
        raise BadInput(f"--{kind}-model {model}: the workflow has no loader to take it "
                       f"({', '.join(LOADER_INPUTS)})")


def size_notes(found: Found, kind: str, width: int, height: int) -> list[str]:
    if not found.size:
        return [f"comfyui: the workflow has no latent node with width and height, so it sets the {kind} size "
                f"itself (not the asked {width}x{height})"]
    step = SIZE_STEP[kind]
    w, h = snap(width, step), snap(height, step)
    if (w, h) != (width, height):
        return [f"comfyui {kind} latents step by {step} pixels: {w}x{h} is asked of the workflow for the asked "
                f"{width}x{height}"]
    return []


def length_note(graph: dict, found: Found, duration: float | None, options: dict) -> list[str]:
    """What the video's length and frame rate will be (the workflow's frame rate wins over --fps)."""
    if not found.length:
        return ["comfyui: the workflow has no video latent with a length, so it sets the video's length itself"]
    rate = options.get("fps") or workflow_fps(graph, found)
    if not duration or not rate:
        return []
    frames = frames_for(duration, rate)
    set_by = "--video-option fps" if options.get("fps") else "the workflow (--video-option fps=N changes it)"
    return [f"comfyui videos play at {rate:g} fps, set by {set_by}, not --fps: {frames} frames "
            f"({frames / rate:.2f} s) for the asked {duration:g} s (video latents take 1 + 4k frames)"]
