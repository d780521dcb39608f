"""One request, two of the new providers (or a new one beside an existing one), all against their local fakes.

Issue 12's "done means": `aigen generate "..." --image-provider fal --video-provider gemini` and the other mixes
work through the CLI. Each fake is the strict one its own test file uses; here they run side by side.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fal_client")
pytest.importorskip("google.genai")

from fakes.comfyui_fake import ComfyUIFake  # noqa: E402
from fakes.fal_fake import KEY as FAL_KEY  # noqa: E402
from fakes.fal_fake import FalFake  # noqa: E402
from fakes.gemini_fake import EXPRESS_KEY, GeminiFake  # noqa: E402
from fakes.openai_fake import KEY as OPENAI_KEY  # noqa: E402
from fakes.openai_fake import OpenAIFake  # noqa: E402
from fakes.runway_fake import KEY as RUNWAY_KEY  # noqa: E402
from fakes.runway_fake import RunwayFake  # noqa: E402


@pytest.fixture
def fakes(home, monkeypatch, tmp_path):
    for var in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GENAI_USE_ENTERPRISE", "GOOGLE_GENAI_USE_VERTEXAI",
                "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_VERTEX_BASE_URL",
                "GOOGLE_APPLICATION_CREDENTIALS", "AIGEN_HTTP_TIMEOUT", "AIGEN_JOB_TIMEOUT", "AIGEN_DOWNLOAD_DEADLINE",
                "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(var, raising=False)
    with FalFake() as fal, GeminiFake() as gemini, ComfyUIFake(tmp_path / "comfy") as comfy:
        openai_fake, runway_fake = OpenAIFake().start(), RunwayFake().start()
        try:
            for k, v in {
                "FAL_KEY": FAL_KEY, "FAL_BASE_URL": fal.url,
                "GOOGLE_API_KEY": EXPRESS_KEY, "GOOGLE_GENAI_USE_ENTERPRISE": "true",
                "GOOGLE_VERTEX_BASE_URL": gemini.url,
                "AIGEN_COMFYUI_URL": comfy.url,
                "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai_fake.base_url,
                "RUNWAYML_API_SECRET": RUNWAY_KEY, "RUNWAYML_BASE_URL": runway_fake.url,
                "AIGEN_POLL_INTERVAL": "0.01", "AIGEN_RETRY_ATTEMPTS": "3",
            }.items():
                monkeypatch.setenv(k, v)
            monkeypatch.setattr("aigen.providers.http.sleep", lambda s: None)
            yield {"fal": fal, "gemini": gemini, "comfyui": comfy, "openai": openai_fake, "runway": runway_fake}
        finally:
            openai_fake.stop()
            runway_fake.stop()


@pytest.mark.parametrize("image_provider,video_provider", [
    ("fal", "gemini"),      # the issue's own example
    ("gemini", "fal"),
    ("comfyui", "gemini"),
    ("gemini", "comfyui"),
    ("fal", "comfyui"),
    ("openai", "fal"),      # a new provider beside an existing one, both ways
    ("comfyui", "runway"),
])
def test_a_request_mixing_providers_completes(cli, home, fakes, image_provider, video_provider):
    from PIL import Image

    from aigen.media.probe import probe_video

    r = cli("generate", "a lighthouse in a storm", "--user", "alice", "--images", "2", "--videos", "2",
            "--image-provider", image_provider, "--video-provider", video_provider,
            "--image-size", "1024x1024", "--video-size", "1280x720", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Completed", data
    assert len(data["images"]) == 2 and len(data["videos"]) == 2
    assert {(a["kind"], a["provider"]) for a in data["assets"]} == {("image", image_provider),
                                                                    ("video", video_provider)}
    for p in data["images"]:
        with Image.open(p) as im:
            im.verify()
    for p in data["videos"]:
        info = probe_video(p)
        assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    # Async video jobs keep their provider's job id on the asset.
    if video_provider in ("fal", "gemini", "comfyui", "runway"):
        assert all(a["provider_job_id"] for a in data["assets"] if a["kind"] == "video")
