"""One request, two cloud providers: images from OpenAI, videos from Runway (both local fakes)."""

import json

import pytest

from fakes.openai_fake import KEY as OPENAI_KEY
from fakes.openai_fake import OpenAIFake
from fakes.runway_fake import KEY as RUNWAY_KEY
from fakes.runway_fake import Outcome, RunwayFake, decoded_prompt_image


@pytest.fixture
def fakes(home, monkeypatch):
    openai_fake = OpenAIFake().start()
    runway_fake = RunwayFake().start()
    try:
        for k, v in {
            "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai_fake.base_url,
            "RUNWAYML_API_SECRET": RUNWAY_KEY, "RUNWAYML_BASE_URL": runway_fake.url,
            "AIGEN_POLL_INTERVAL": "0.01", "AIGEN_RETRY_ATTEMPTS": "3",
        }.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr("aigen.providers.http.sleep", lambda s: None)
        yield openai_fake, runway_fake
    finally:
        openai_fake.stop()
        runway_fake.stop()


def test_images_from_openai_and_videos_from_runway(cli, fakes):
    from PIL import Image

    from aigen.media.probe import probe_video

    openai_fake, runway_fake = fakes
    r = cli("generate", "a lighthouse in a storm", "--user", "alice", "--image-provider", "openai",
            "--video-provider", "runway", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Completed"
    assert len(data["images"]) == 5 and len(data["videos"]) == 5
    assert openai_fake.calls == 5 and runway_fake.creations == 5
    assert runway_fake.count("POST", "/v1/text_to_image") == 0
    for p in data["images"]:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == (1024, 1024)
    for p in data["videos"]:
        assert probe_video(p).codec == "h264"
    providers = {(a["kind"], a["provider"]) for a in data["assets"]}
    assert providers == {("image", "openai"), ("video", "runway")}
    assert all(a["provider_job_id"] for a in data["assets"] if a["kind"] == "video")
    assert not any(a["provider_job_id"] for a in data["assets"] if a["kind"] == "image")


def test_runway_videos_made_from_openai_images(cli, fakes):
    openai_fake, runway_fake = fakes
    r = cli("generate", "a lighthouse in a storm", "--user", "alice", "--image-provider", "openai",
            "--video-provider", "runway", "--images", "2", "--videos", "2", "--video-from-images", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["status"] == "Completed"
    sent = sorted(decoded_prompt_image(q.json()) for q in runway_fake.matching("POST", "/v1/image_to_video"))
    assert sent == sorted(open(p, "rb").read() for p in data["images"])


def test_a_runway_failure_does_not_touch_the_openai_images(cli, fakes):
    openai_fake, runway_fake = fakes
    runway_fake.default_outcome = Outcome(steps=("PENDING", "FAILED"), failure="Output flagged.",
                                          failure_code="SAFETY.OUTPUT.VIDEO")
    r = cli("generate", "a lighthouse in a storm", "--user", "alice", "--image-provider", "openai",
            "--video-provider", "runway", "--images", "2", "--videos", "2", "--json")
    assert r.exit_code == 1
    data = json.loads(r.output)
    assert data["status"] == "Failed" and len(data["images"]) == 2 and data["videos"] == []
    assert "video 1: refused by runway: Output flagged. (SAFETY.OUTPUT.VIDEO)" in data["error"]

    runway_fake.default_outcome = Outcome()
    created = runway_fake.creations
    # A refusal is not submitted again unless asked (issue 9, item 3).
    r = cli("retry", data["id"], "--json")
    assert r.exit_code == 1 and json.loads(r.output)["error"] == "all_refused"
    assert runway_fake.creations == created
    r = cli("retry", data["id"], "--include-refused", "--json")
    assert r.exit_code == 0, r.output
    assert openai_fake.calls == 2, "retry must not remake the images that were done"
    assert len(json.loads(r.output)["videos"]) == 2
