"""The `comfyui` provider against a strict local fake of a ComfyUI server (requests, AIGEN_COMFYUI_URL)."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from aigen.config import resolve_home
from aigen.errors import BadInput, ProviderError, ProviderTimeout
from aigen.media.probe import probe_image, probe_video
from aigen.pipeline.plan import RequestSpec, prepare
from aigen.providers import comfyui_workflow as wf
from aigen.providers.base import AssetRequest
from aigen.providers.comfyui import ComfyUIProvider
from aigen.store import Store
from fakes.comfyui_fake import ComfyUIFake, Execution
from fakes.httpfake import Reply


class Reporter:
    def __init__(self):
        self.job_ids = []
        self.fractions = []

    def save_job_id(self, job_id):
        self.job_ids.append(job_id)

    def progress(self, fraction):
        self.fractions.append(fraction)


@pytest.fixture
def fake(tmp_path):
    with ComfyUIFake(tmp_path / "comfy") as f:
        yield f


@pytest.fixture
def sleeps(monkeypatch):
    waits = []
    monkeypatch.setattr("aigen.providers.http.sleep", waits.append)
    return waits


@pytest.fixture
def env(fake, home, monkeypatch, sleeps):
    for var in ("AIGEN_HTTP_TIMEOUT", "AIGEN_JOB_TIMEOUT", "AIGEN_DOWNLOAD_DEADLINE"):
        monkeypatch.delenv(var, raising=False)
    values = {"AIGEN_COMFYUI_URL": fake.url, "AIGEN_POLL_INTERVAL": "0.01", "AIGEN_RETRY_ATTEMPTS": "3"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def provider(env, **extra):
    return ComfyUIProvider(env={**env, **extra})


def req(kind="image", **kw):
    base = dict(kind=kind, prompt="a red fox at dawn", index=1, seed=1234, width=128, height=96,
                generation_id="g1", duration=1.0 if kind == "video" else None, fps=24)
    base.update(kw)
    return AssetRequest(**base)


def generate_json(cli, *args):
    r = cli("generate", "a red fox at dawn", "--user", "alice", "--json", *args)
    return r, (json.loads(r.output) if r.output.strip().startswith("{") else None)


def write_workflow(tmp_path, graph, name="wf.json"):
    p = tmp_path / name
    p.write_text(json.dumps(graph))
    return p


# A workflow as a user exports it: other node ids, no aigen titles, nodes found by class and links.
USER_IMAGE = {
    "10": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "11": {"class_type": "CLIPTextEncode", "inputs": {"text": "old positive", "clip": ["10", 1]}},
    "12": {"class_type": "CLIPTextEncode", "inputs": {"text": "old negative", "clip": ["10", 1]}},
    "13": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 4}},
    "14": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "cfg": 8, "sampler_name": "euler",
                                                "scheduler": "normal", "denoise": 1, "model": ["10", 0],
                                                "positive": ["11", 0], "negative": ["12", 0],
                                                "latent_image": ["13", 0]}},
    "15": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["10", 2]}},
    "16": {"class_type": "PreviewImage", "inputs": {"images": ["15", 0]}},
    "17": {"class_type": "SaveImage", "inputs": {"filename_prefix": "mine/fox", "images": ["15", 0]}},
}


def user_video(save: dict) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.1_t2v_1.3B_bf16.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                     "type": "wan"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["2", 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 832, "height": 480, "length": 33,
                                                                  "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 30, "cfg": 6, "sampler_name": "uni_pc",
                                                   "scheduler": "simple", "denoise": 1, "model": ["1", 0],
                                                   "positive": ["4", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["3", 0]}},
        "9": save,
    }


# --------------------------------------------------------------------------- happy paths through the CLI
def test_cli_makes_images_and_videos_from_the_shipped_templates(cli, env, fake):
    r, data = generate_json(cli, "--images", "2", "--videos", "2", "--image-provider", "comfyui",
                            "--video-provider", "comfyui", "--image-size", "256x192", "--video-size", "128x64",
                            "--duration", "1", "--seed", "7")
    assert r.exit_code == 0, r.output
    assert data["status"] == "Completed"
    for p in data["images"]:
        im = probe_image(p)
        assert (im.format, im.width, im.height) == ("png", 256, 192)
    for p in data["videos"]:
        v = probe_video(p)
        assert v.codec == "h264" and (v.width, v.height) == (128, 64)
        assert v.frames == 17 and v.fps == pytest.approx(16)  # 1 + 4k frames at the template's 16 fps
    assert fake.submits == 4 and fake.executions == 4
    graphs = fake.submitted()
    assert all(g["6"]["inputs"]["text"] == "a red fox at dawn" for g in graphs)
    assert len({g["3"]["inputs"]["seed"] for g in graphs}) == 4, "every asset carries its own seed"
    images = [g for g in graphs if "9" in g]
    assert {(g["5"]["inputs"]["width"], g["5"]["inputs"]["height"]) for g in images} == {(256, 192)}
    videos = [g for g in graphs if "40" in g]
    assert {(g["40"]["inputs"]["width"], g["40"]["inputs"]["length"]) for g in videos} == {(128, 17)}
    # Every prompt carried aigen's client id, and the saved job ids are ComfyUI's prompt ids.
    assert {a["provider_job_id"] for a in data["assets"]} == set(fake.history)
    assert all(e["prompt"][3]["client_id"].startswith("aigen-") for e in fake.history.values())
    assert {a["model"] for a in data["assets"] if a["kind"] == "image"} == {"sd_xl_base_1.0.safetensors"}
    assert {a["model"] for a in data["assets"] if a["kind"] == "video"} == {"wan2.1_t2v_1.3B_bf16.safetensors"}
    assert len({hashlib.sha256(open(p, "rb").read()).hexdigest() for p in data["images"]}) == 2


def test_a_mix_with_local(cli, env, fake):
    r, data = generate_json(cli, "--images", "1", "--videos", "1", "--image-provider", "comfyui",
                            "--video-provider", "local", "--image-size", "64x64", "--video-size", "96x64",
                            "--duration", "0.5")
    assert r.exit_code == 0, r.output
    assert data["status"] == "Completed" and fake.submits == 1
    r, data = generate_json(cli, "--images", "1", "--videos", "1", "--image-provider", "local",
                            "--video-provider", "comfyui", "--image-size", "64x64", "--video-size", "96x64",
                            "--duration", "0.5")
    assert r.exit_code == 0, r.output
    assert data["status"] == "Completed" and fake.submits == 2
    assert probe_video(data["videos"][0]).codec == "h264"


def test_a_user_workflow_file_with_options(cli, env, fake, tmp_path):
    path = write_workflow(tmp_path, USER_IMAGE)
    r, data = generate_json(cli, "--images", "2", "--videos", "0", "--image-provider", "comfyui",
                            "--image-size", "200x120", "--image-option", f"workflow={path}",
                            "--image-option", "steps=6", "--image-option", "negative_prompt=dark, blurry",
                            "--image-option", "node.14.cfg=4.5")
    assert r.exit_code == 0, r.output
    graphs = fake.submitted()
    assert len(graphs) == 2
    for g in graphs:
        assert g["11"]["inputs"]["text"] == "a red fox at dawn"
        assert g["12"]["inputs"]["text"] == "dark, blurry"
        assert g["14"]["inputs"]["steps"] == 6 and g["14"]["inputs"]["cfg"] == 4.5
        # Latents step by 8: 200x120 is asked as 200x120, batch 1 (one asset per prompt).
        assert (g["13"]["inputs"]["width"], g["13"]["inputs"]["height"], g["13"]["inputs"]["batch_size"]) == \
            (200, 120, 1)
        assert g["10"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"
    assert graphs[0]["14"]["inputs"]["seed"] != graphs[1]["14"]["inputs"]["seed"]
    # The SaveImage file is kept, not the PreviewImage one (type temp).
    assert all(a["model"] == "v1-5-pruned-emaonly.safetensors" for a in data["assets"])
    assert {probe_image(p).width for p in data["images"]} == {200}
    assert all("/mine/" not in p for p in data["images"])  # stored under aigen's own names


def test_the_workflow_is_kept_with_the_request_so_a_retry_needs_no_file(cli, env, fake, tmp_path):
    path = write_workflow(tmp_path, USER_IMAGE)
    fake.fail_next.append(Execution(error="CUDA out of memory"))
    r, data = generate_json(cli, "--images", "1", "--videos", "0", "--image-provider", "comfyui",
                            "--image-size", "64x64", "--image-option", f"workflow={path}")
    assert r.exit_code == 1 and data["status"] == "Failed"
    path.unlink()
    r = cli("retry", data["id"], "--json")
    assert r.exit_code == 0, r.output
    assert fake.submits == 2 and fake.submitted()[1]["11"]["inputs"]["text"] == "a red fox at dawn"


def test_an_animated_webp_or_webm_output_becomes_h264_mp4(cli, env, fake, tmp_path):
    webp = write_workflow(tmp_path, user_video({"class_type": "SaveAnimatedWEBP", "inputs": {
        "images": ["8", 0], "filename_prefix": "ComfyUI", "fps": 8.0, "lossless": False, "quality": 80,
        "method": "default"}}), "webp.json")
    webm = write_workflow(tmp_path, user_video({"class_type": "SaveWEBM", "inputs": {
        "images": ["8", 0], "filename_prefix": "ComfyUI", "codec": "vp9", "fps": 8.0, "crf": 32.0}}), "webm.json")
    for path, ext in ((webp, ".webp"), (webm, ".webm")):
        r, data = generate_json(cli, "--images", "0", "--videos", "1", "--video-provider", "comfyui",
                                "--video-size", "96x64", "--duration", "1", "--video-option", f"workflow={path}")
        assert r.exit_code == 0, r.output
        assert fake.files_written[-1].endswith(ext)
        v = probe_video(data["videos"][0])
        assert v.codec == "h264" and v.pix_fmt == "yuv420p" and (v.width, v.height) == (96, 64)
        assert v.frames == 9 and v.fps == pytest.approx(8)  # 1 s at the workflow's 8 fps: 1 + 4*2 frames


def test_video_fps_option_and_the_notes_say_what_the_workflow_decides(cli, env, fake):
    r = cli("generate", "fox", "--user", "alice", "--images", "0", "--videos", "1", "--video-provider", "comfyui",
            "--video-size", "100x64", "--duration", "1", "--video-option", "fps=12", "--dry-run")
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "12 fps, set by --video-option fps" in out and "13 frames" in out
    assert "latents step by 16 pixels: 96x64" in out
    assert "$0" in out and fake.requests == []


# --------------------------------------------------------------------------- seeds and the cache
def test_the_same_graph_twice_comes_from_the_cache_so_each_asset_has_its_own_seed(env, fake, tmp_path):
    p = provider(env)
    p.generate(req(seed=1), tmp_path / "a.png", Reporter())
    p.generate(req(seed=1), tmp_path / "b.png", Reporter())
    assert fake.submits == 2 and fake.executions == 1, "the second identical graph ran nothing"
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    p.generate(req(seed=2), tmp_path / "c.png", Reporter())
    assert fake.executions == 2 and (tmp_path / "c.png").read_bytes() != (tmp_path / "a.png").read_bytes()


# --------------------------------------------------------------------------- resume
def test_resume_of_a_known_prompt_polls_it_without_a_new_submit(env, fake, tmp_path):
    fake.paused = True
    rep = Reporter()
    with pytest.raises(ProviderTimeout, match="did not finish"):
        provider(env, AIGEN_JOB_TIMEOUT="0.2").generate(req(), tmp_path / "a.png", rep)
    [pid] = rep.job_ids
    assert fake.knows(pid) and fake.submits == 1
    fake.paused = False
    again = Reporter()
    out = provider(env).generate(req(provider_job_id=pid), tmp_path / "a.png", again)
    assert out.format == "png" and out.cost == 0.0
    assert fake.submits == 1 and again.job_ids == []


def test_resume_after_a_restart_submits_the_prompt_again(env, fake, tmp_path):
    fake.paused = True
    rep = Reporter()
    with pytest.raises(ProviderTimeout):
        provider(env, AIGEN_JOB_TIMEOUT="0.2").generate(req(), tmp_path / "a.png", rep)
    fake.restart()
    fake.paused = False
    again = Reporter()
    out = provider(env).generate(req(provider_job_id=rep.job_ids[0]), tmp_path / "a.png", again)
    assert out.format == "png" and fake.submits == 2
    assert len(again.job_ids) == 1 and again.job_ids[0] != rep.job_ids[0] and fake.knows(again.job_ids[0])


def test_a_restart_while_waiting_submits_the_prompt_again(env, fake, tmp_path):
    def restart_then_answer(request, srv):
        fake.restart()
        return fake._get_history(request, srv)

    fake.script("GET", "/history/*", restart_then_answer)
    rep = Reporter()
    provider(env).generate(req(), tmp_path / "a.png", rep)
    assert fake.submits == 2 and len(rep.job_ids) == 2 and fake.restarts == 1


def test_a_retry_after_a_restart_resubmits_through_the_cli(cli, env, fake, monkeypatch):
    fake.paused = True
    monkeypatch.setenv("AIGEN_JOB_TIMEOUT", "0.2")
    r, data = generate_json(cli, "--images", "1", "--videos", "0", "--image-provider", "comfyui",
                            "--image-size", "64x64")
    assert r.exit_code == 1 and "did not finish" in data["assets"][0]["error"]
    old = data["assets"][0]["provider_job_id"]
    fake.restart()
    fake.paused = False
    monkeypatch.delenv("AIGEN_JOB_TIMEOUT")
    r = cli("retry", data["id"], "--json")
    assert r.exit_code == 0, r.output
    again = json.loads(r.output)
    assert again["status"] == "Completed" and again["assets"][0]["provider_job_id"] != old
    assert fake.submits == 2


def test_a_retry_of_a_prompt_still_known_polls_it(cli, env, fake, monkeypatch):
    fake.paused = True
    monkeypatch.setenv("AIGEN_JOB_TIMEOUT", "0.2")
    r, data = generate_json(cli, "--images", "0", "--videos", "1", "--video-provider", "comfyui",
                            "--video-size", "96x64", "--duration", "0.5")
    assert r.exit_code == 1
    fake.paused = False
    monkeypatch.delenv("AIGEN_JOB_TIMEOUT")
    r = cli("retry", data["id"], "--json")
    assert r.exit_code == 0, r.output
    assert fake.submits == 1 and json.loads(r.output)["assets"][0]["provider_job_id"] == \
        data["assets"][0]["provider_job_id"]


# --------------------------------------------------------------------------- bad days
def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_server_that_is_not_running_is_named_with_its_url(cli, env, monkeypatch, sleeps):
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AIGEN_COMFYUI_URL", url)
    r = cli("generate", "fox", "--user", "alice", "--images", "1", "--videos", "0", "--image-provider", "comfyui",
            "--image-size", "64x64")
    assert r.exit_code == 1
    out = " ".join(r.output.split())
    assert f"no ComfyUI server answers at {url} (connection refused)" in out
    assert "AIGEN_COMFYUI_URL" in out and "Traceback" not in r.output
    assert len(sleeps) == 2, "a server that may be starting is tried again (3 attempts)"


def test_a_bad_url_is_bad_input(cli, env, monkeypatch, fake):
    monkeypatch.setenv("AIGEN_COMFYUI_URL", "ftp://127.0.0.1:8188")
    r = cli("generate", "fox", "--user", "alice", "--images", "1", "--videos", "0", "--image-provider", "comfyui")
    assert r.exit_code == 2 and "invalid AIGEN_COMFYUI_URL" in r.output
    assert fake.requests == []


def test_a_node_error_is_a_clear_failure_and_not_retried(cli, env, fake):
    r, data = generate_json(cli, "--images", "1", "--videos", "0", "--image-provider", "comfyui",
                            "--image-size", "64x64", "--image-model", "missing.safetensors")
    assert r.exit_code == 1
    err = data["assets"][0]["error"]
    assert err.startswith("comfyui refused the workflow (prompt_outputs_failed_validation): Prompt outputs "
                          "failed validation: node 4 (CheckpointLoaderSimple): value_not_in_list: ckpt_name: "
                          "'missing.safetensors' not in")
    assert "install that model file on the ComfyUI server" in err and "--image-model" in err
    assert data["assets"][0]["error_code"] == "prompt_outputs_failed_validation"
    assert fake.count("POST", "/prompt") == 1 and fake.submits == 0


def test_an_execution_error_fails_the_asset_and_a_retry_submits_again(cli, env, fake):
    fake.fail_next.append(Execution(error="CUDA out of memory. Tried to allocate 2.00 GiB"))
    r, data = generate_json(cli, "--images", "1", "--videos", "0", "--image-provider", "comfyui",
                            "--image-size", "64x64")
    assert r.exit_code == 1
    [asset] = data["assets"]
    assert asset["error"] == (f"comfyui prompt {asset['provider_job_id']} failed at node 3 (KSampler): "
                              "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert asset["error_code"] == "execution_error"
    r = cli("retry", data["id"], "--json")
    assert r.exit_code == 0, r.output
    assert fake.submits == 2


def test_an_interrupted_prompt_says_so(env, fake, tmp_path):
    fake.fail_next.append(Execution(interrupted=True))
    with pytest.raises(ProviderError, match="was interrupted at node 3 .KSampler."):
        provider(env).generate(req(), tmp_path / "a.png", Reporter())


def test_5xx_on_submit_and_poll_are_retried(env, fake, sleeps, tmp_path):
    fake.script("POST", "/prompt", Reply(500, "500 Internal Server Error", content_type="text/plain"),
                Reply(503, "busy", content_type="text/plain"))
    fake.script("GET", "/history/*", Reply(502, "bad gateway", content_type="text/plain"))
    out = provider(env).generate(req(), tmp_path / "a.png", Reporter())
    assert out.format == "png" and fake.submits == 1 and len(sleeps) == 2


def test_a_submit_without_an_answer_in_time_is_sent_again_with_the_same_prompt_id(env, fake, sleeps, tmp_path):
    # Free to send again: a prompt that did land would be answered from ComfyUI's cache.
    fake.script("POST", "/prompt", Reply(200, {"prompt_id": "late"}, delay=2.0))
    rep = Reporter()
    provider(env, AIGEN_HTTP_TIMEOUT="0.3").generate(req(), tmp_path / "a.png", rep)
    first, second = [r.json()["prompt_id"] for r in fake.matching("POST", "/prompt")]
    assert first == second == rep.job_ids[0] and fake.submits == 1 and len(sleeps) == 1


def test_a_cut_off_file_is_fetched_again(env, fake, tmp_path):
    from fakes.httpfake import png_bytes

    fake.script("GET", "/view", Reply(200, png_bytes(64, 64), content_type="image/png", truncate_to=40))
    provider(env).generate(req(width=64, height=64), tmp_path / "a.png", Reporter())
    assert probe_image(tmp_path / "a.png").width == 64 and fake.count("GET", "/view") == 2


def test_a_slow_server_answer_is_cut_at_the_deadline(env, fake, tmp_path):
    fake.script("GET", "/view", *[Reply(200, b"\x89PNG\r\n\x1a\n" + b"x" * 4000, content_type="image/png",
                                        trickle=(16, 0.05))] * 3)
    with pytest.raises(ProviderError, match="deadline"):
        provider(env, AIGEN_DOWNLOAD_DEADLINE="0.3").generate(req(), tmp_path / "a.png", Reporter())


def test_a_workflow_without_an_output_of_the_kind_fails_clearly(env, fake, tmp_path):
    graph = dict(USER_IMAGE)
    graph["17"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["15", 0]}}
    p = provider(env)
    opts = {"video_options": {"workflow": str(write_workflow(tmp_path, graph))}}
    with pytest.raises(ProviderError, match="finished without a video among its outputs"):
        p.generate(req("video", options=opts), tmp_path / "v.mp4", Reporter())


# --------------------------------------------------------------------------- checks before anything is written
@pytest.mark.parametrize("content, words", [
    (None, "no such file"),
    ("{not json", "not valid JSON (line 1"),
    (json.dumps({"nodes": [], "links": []}), "UI-format workflow"),
    (json.dumps({"1": {"inputs": {}}}), "has no class_type"),
    (json.dumps({"1": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}}), "links to node '9'"),
    (json.dumps({k: v for k, v in USER_IMAGE.items() if k != "14"} | {
        "15": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["10", 2]}}}),
     "no node takes the prompt"),
    (json.dumps({"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "x"}, "_meta": {"title": "aigen:prompt"}},
                 "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}), "no node takes a seed"),
])
def test_a_workflow_aigen_cannot_drive_is_refused_before_anything_is_written(cli, env, fake, tmp_path, home,
                                                                             content, words):
    path = tmp_path / "wf.json"
    if content is not None:
        path.write_text(content)
    r = cli("generate", "fox", "--user", "alice", "--videos", "0", "--image-provider", "comfyui",
            "--image-option", f"workflow={path}")
    assert r.exit_code == 2, r.output
    assert words in " ".join(r.output.split())
    assert fake.requests == []
    h = resolve_home(home)
    assert not h.db_path.exists() or Store(h.db_path).query("SELECT id FROM generations") == []


@pytest.mark.parametrize("option, words", [
    ("colour=red", "unknown --image-option 'colour' for comfyui"),
    ("steps=0", "invalid --image-option steps=0"),
    ("node.3.seed=5", "aigen writes each asset's own seed there"),
    ("node.99.steps=5", "the workflow has no node '99'"),
    ("fps=8", "fps is for videos"),
    ("workflow_graph={}", "set by aigen itself"),
])
def test_bad_options_are_refused(cli, env, fake, option, words):
    r = cli("generate", "fox", "--user", "alice", "--videos", "0", "--image-provider", "comfyui",
            "--image-option", option)
    assert r.exit_code == 2, r.output
    assert words in " ".join(r.output.split()) and fake.requests == []


def test_a_negative_prompt_needs_a_negative_node(env, tmp_path):
    graph = {k: v for k, v in USER_IMAGE.items() if k != "12"}
    graph["14"] = {**graph["14"], "inputs": {**graph["14"]["inputs"], "negative": ["11", 0]}}
    spec = RequestSpec(user_id="alice", prompt="fox", videos=0, image_provider="comfyui",
                       options={"image_options": {"workflow": str(write_workflow(tmp_path, graph)),
                                                  "negative_prompt": "dark"}})
    with pytest.raises(BadInput, match="no negative prompt node"):
        prepare(spec, env=env, home=tmp_path)


def test_nodes_are_found_through_conditioning_chains_and_titles():
    # A Flux-style graph: the negative side is a ConditioningZeroOut of the prompt; seed on RandomNoise.
    graph = {
        "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "p", "clip": ["9", 0]}},
        "2": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["1", 0], "guidance": 3.5}},
        "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["1", 0]}},
        "4": {"class_type": "KSampler", "inputs": {"seed": 0, "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["5", 0], "model": ["9", 0]}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "6": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-dev-fp8.safetensors"}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "f"}},
    }
    found = wf.check_drivable(graph, "image", "test")
    assert found.prompt == [("1", "text")] and found.negative == []
    assert set(found.seed) == {("4", "seed"), ("6", "noise_seed")} and found.size == ["5"]
    filled = wf.fill(graph, found, kind="image", prompt="a fox", seed=42, width=1000, height=600, duration=None,
                     fps=None, model="other.safetensors", options={})
    g = filled.graph
    assert g["1"]["inputs"]["text"] == "a fox" and g["4"]["inputs"]["seed"] == 42 and \
        g["6"]["inputs"]["noise_seed"] == 42
    assert (g["5"]["inputs"]["width"], g["5"]["inputs"]["height"]) == (1000, 600)
    assert filled.model == "other.safetensors" and graph["1"]["inputs"]["text"] == "p", "the original is untouched"
    # A title wins over discovery.
    graph["6"]["_meta"] = {"title": "aigen:seed"}
    assert wf.find_nodes(graph, "image").seed == [("6", "noise_seed")]


def test_frames_are_one_plus_four_k():
    assert [wf.frames_for(d, 16) for d in (0.5, 1, 4, 5)] == [9, 17, 65, 81]


# --------------------------------------------------------------------------- listing and dry run
def test_providers_lists_comfyui_as_free_with_its_url(cli, env, fake):
    r = cli("providers", "--json")
    assert r.exit_code == 0
    [row] = [p for p in json.loads(r.output)["providers"] if p["name"] == "comfyui"]
    assert row["makes"] == ["image", "video"] and row["key_env"] == [] and row["key_set"]
    assert row["base_url_env"] == "AIGEN_COMFYUI_URL" and row["base_url"] == fake.url
    assert row["price_per_asset"]["image"]["text"] == "$0 per image"
    assert row["concurrency"] == 2


def test_dry_run_is_free_and_calls_nothing(cli, env, fake):
    r = cli("generate", "fox", "--user", "alice", "--image-provider", "comfyui", "--video-provider", "comfyui",
            "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert plan["total"]["text"] == "$0" and plan["total"]["complete"]
    assert any("sd_xl_base_1.0.safetensors" in n for n in plan.get("notes", []))
    assert fake.requests == []


# --------------------------------------------------------------------------- the fake is as strict as ComfyUI
def test_the_fake_refuses_what_comfyui_refuses(fake):
    import uuid

    import requests

    def post(body):
        return requests.post(fake.url + "/api/prompt", json=body, timeout=5)

    assert post({}).json()["error"]["type"] == "no_prompt"
    assert post({"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}).json()["error"]["message"] == \
        "Cannot execute because node Nope does not exist."
    assert post({"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}}).json()["error"]["type"] == \
        "prompt_no_outputs"
    r = post({"prompt": wf.load_template("image"), "prompt_id": "not-a-uuid"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_prompt_id"
    graph = wf.load_template("image")
    graph["3"]["inputs"]["steps"] = 0
    graph["9"]["inputs"]["images"] = ["8", 5]
    body = post({"prompt": graph}).json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["9"]["errors"][0]["type"] == "bad_linked_input"
    r = requests.post(fake.url + "/prompt", data=b"{", timeout=5)
    assert r.status_code == 500
    ok = post({"prompt": wf.load_template("image"), "prompt_id": str(uuid.uuid4())}).json()
    assert requests.get(f"{fake.url}/history/{ok['prompt_id']}", timeout=5).json() == {}
    fake.run_all()
    entry = requests.get(f"{fake.url}/history/{ok['prompt_id']}", timeout=5).json()[ok["prompt_id"]]
    [item] = entry["outputs"]["9"]["images"]
    assert item["subfolder"] == "aigen" and item["filename"] == "image_00001_.png"
    for params, status in (({"filename": "../x.png", "type": "output"}, 400),
                           ({"filename": "x.png", "type": "nope"}, 400),
                           ({"filename": "x.png", "subfolder": "../..", "type": "output"}, 403),
                           ({"filename": "x.png", "subfolder": "aigen", "type": "output"}, 404),
                           ({**item}, 200)):
        assert requests.get(fake.url + "/view", params=params, timeout=5).status_code == status
    fake.restart()
    assert requests.get(f"{fake.url}/history/{ok['prompt_id']}", timeout=5).json() == {}
    assert requests.get(fake.url + "/view", params=item, timeout=5).status_code == 200, "files survive a restart"
