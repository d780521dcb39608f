"""The `openai` provider against a local fake of the Images API, with the real SDK pointed at it."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import time
from datetime import date

import pytest

from aigen.errors import BadInput, MediaCheckError, ProviderError, ProviderTimeout, QuotaExceeded, Refused
from aigen.providers import http
from aigen.providers import openai_images as oi
from aigen.providers.base import AssetRequest, get_provider
from fakes.httpfake import Reply, png_bytes
from fakes.openai_fake import (KEY, OpenAIFake, cut_answer, dropped, garbled_answer, quota, rate_limited,
                               server_error, trickled)


class Recorder:
    def __init__(self):
        self.progress_values = []
        self.job_ids = []

    def save_job_id(self, job_id):
        self.job_ids.append(job_id)

    def progress(self, fraction):
        self.progress_values.append(fraction)


@pytest.fixture
def fake():
    f = OpenAIFake().start()
    yield f
    f.stop()


@pytest.fixture
def delays(monkeypatch):
    """Every retry wait requested, in seconds; nothing really sleeps."""
    seen: list[float] = []
    monkeypatch.setattr(http, "sleep", seen.append)
    return seen


@pytest.fixture
def env(fake):
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url}


def request(prompt="a red fox at dawn", index=1, width=1024, height=1024, model="gpt-image-2"):
    return AssetRequest(kind="image", prompt=prompt, index=index, seed=1000 + index, width=width,
                        height=height, generation_id="g1", model=model)


def make(env, req, tmp_path, name="out.png"):
    p = get_provider("openai", env=env)
    dest = tmp_path / name
    return p.generate(req, dest, Recorder()), dest


# -- success --------------------------------------------------------------------------------
def test_success_writes_the_decoded_png_and_sends_the_documented_request(fake, env, tmp_path, delays):
    out, dest = make(env, request(), tmp_path)
    assert dest.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(dest).size == (1024, 1024)
    assert out.format == "png" and out.model == "gpt-image-2"
    assert fake.calls == 1 and delays == []
    rec = fake.server.requests[-1]
    assert rec.path == "/v1/images/generations"
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    body = rec.json()
    assert body == {"model": "gpt-image-2", "prompt": "a red fox at dawn", "n": 1, "size": "1024x1024",
                    "output_format": "png"}
    assert "response_format" not in body  # GPT image models reject it


def test_a_size_the_model_cannot_make_is_mapped_to_the_nearest_allowed(fake, env, tmp_path):
    out, dest = make(env, request(width=1000, height=600), tmp_path)
    # 1000x600 is under the 655,360-pixel floor and off the 16-pixel grid.
    assert fake.bodies[-1]["size"] == "1072x640"
    from PIL import Image

    assert Image.open(dest).size == (1072, 640)


def test_an_undersized_request_is_scaled_up_to_the_pixel_floor_keeping_its_shape(fake, env, tmp_path):
    # 512x512 sent as-is would be an HTTP 400 for every image of the request.
    out, dest = make(env, request(width=512, height=512), tmp_path)
    assert fake.bodies[-1]["size"] == "816x816"
    from PIL import Image

    assert Image.open(dest).size == (816, 816)
    assert fake.calls == 1


def test_the_fake_refuses_what_the_api_refuses_for_gpt_image_2(fake):
    import openai

    client = openai.OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0)
    for size in ("512x512", "800x800", "3840x2176", "4096x1024", "3008x992", "1000x1008"):
        with pytest.raises(openai.BadRequestError) as ei:
            client.images.generate(model="gpt-image-2", prompt="x", n=1, size=size)
        assert ei.value.param == "size", size
    for size in ("2880x2880", "2160x3840", "816x816", "1440x480"):
        assert client.images.generate(model="gpt-image-2", prompt="x", n=1, size=size).data
    for model in ("gpt-image-1.5-2025-12-16", "gpt-image-1-mini", "chatgpt-image-latest", "gpt-image-9"):
        with pytest.raises(openai.NotFoundError) as ei:
            client.images.generate(model=model, prompt="x", n=1, size="1024x1024")
        assert ei.value.code == "model_not_found", model
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="gpt-image-2", prompt="x" * 32001, n=1, size="1024x1024")
    for extra in ({"style": "vivid"}, {"response_format": "b64_json"}, {"background": "transparent",
                                                                        "output_format": "jpeg"},
                  {"quality": "hd"}, {"output_compression": 50}, {"moderation": "strict"}):
        with pytest.raises(openai.BadRequestError) as ei:
            client.images.generate(model="gpt-image-2", prompt="x", n=1, size="1024x1024", **extra)
        assert ei.value.status_code == 400, extra


@pytest.mark.parametrize("w,h", [(1024, 1024), (1000, 600), (64, 4096), (4096, 64), (4096, 4096), (1920, 1080),
                                 (3840, 2160), (2160, 3840), (2880, 2880), (100, 100), (512, 512), (64, 64),
                                 (4000, 1000), (333, 777), (640, 480), (3000, 3000), (4096, 2000)])
def test_gpt_image_2_sizes_obey_every_rule(w, h):
    mw, mh = oi.map_size("gpt-image-2", w, h)
    assert mw % 16 == 0 and mh % 16 == 0
    assert max(mw, mh) <= 3840
    assert 655_360 <= mw * mh <= 8_294_400
    assert max(mw, mh) <= 3 * min(mw, mh)
    assert oi.flex_size_ok(mw, mh)
    if (w, h) in ((1024, 1024), (3840, 2160), (2160, 3840), (2880, 2880)):
        assert (mw, mh) == (w, h)
    # The shape is kept as far as the ratio limit allows.
    if max(w, h) <= 3 * min(w, h):
        assert abs(mw / mh - w / h) / (w / h) < 0.1


def test_every_asked_size_maps_to_one_the_model_accepts():
    for w in range(64, 4097, 61):
        for h in range(64, 4097, 67):
            mw, mh = oi.map_size("gpt-image-2", w, h)
            assert oi.flex_size_ok(mw, mh), (w, h, mw, mh)
            if oi.flex_size_ok(w, h):
                assert (mw, mh) == (w, h)


def test_the_size_note_says_what_is_sent_and_why():
    note = oi.size_note("gpt-image-2", 512, 512)
    assert "sent as 816x816 for the asked 512x512" in note and "655,360" in note and "scaled up" in note
    assert oi.size_note("gpt-image-2", 1024, 1024) is None
    assert "scaled down" in oi.size_note("gpt-image-2", 4096, 4096)
    assert "3:1" in oi.size_note("gpt-image-2", 4000, 1000)


@pytest.mark.parametrize("w,h,expected", [
    (1024, 1024, (1024, 1024)), (1280, 720, (1536, 1024)), (720, 1280, (1024, 1536)),
    (1100, 1000, (1024, 1024)), (64, 4096, (1024, 1536)),
])
def test_older_gpt_image_models_get_the_nearest_standard_size(w, h, expected):
    assert oi.map_size("gpt-image-1.5", w, h) == expected


def test_five_images_differ_though_openai_takes_no_seed(fake, env, tmp_path):
    digests = set()
    for i in range(1, 6):
        _, dest = make(env, request(index=i), tmp_path, f"{i}.png")
        digests.add(hashlib.sha256(dest.read_bytes()).hexdigest())
    assert len(digests) == 5
    assert all("seed" not in b for b in fake.bodies)


# -- bad days -------------------------------------------------------------------------------
def test_429_with_retry_after_is_honoured_then_succeeds(fake, env, tmp_path, delays):
    fake.script(rate_limited("2"))
    out, dest = make(env, request(), tmp_path)
    assert fake.calls == 2
    assert delays == [2.0]
    assert dest.exists() and out.model == "gpt-image-2"


def test_retry_after_ms_wins_over_retry_after(fake, env, tmp_path, delays):
    fake.script(Reply(429, {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}},
                      headers={"retry-after-ms": "1500", "retry-after": "9"}))
    make(env, request(), tmp_path)
    assert delays == [1.5]


def test_500s_until_retries_run_out(fake, env, tmp_path, delays):
    fake.script(*[server_error() for _ in range(10)])
    with pytest.raises(ProviderError) as ei:
        get_provider("openai", env={**env, "AIGEN_RETRY_ATTEMPTS": "3"}).generate(
            request(), tmp_path / "x.png", Recorder())
    assert fake.calls == 3
    assert len(delays) == 2 and all(0 <= d <= 30 for d in delays)
    assert "server error (HTTP 500)" in ei.value.message
    assert "gave up after 3 attempts" in ei.value.message
    assert not (tmp_path / "x.png").exists()


def test_a_retry_after_beyond_the_cap_ends_the_retries_at_once(fake, env, tmp_path, delays):
    fake.script(rate_limited("3600"))
    with pytest.raises(ProviderError) as ei:
        make(env, request(), tmp_path)
    assert fake.calls == 1 and delays == []
    assert "asked to wait 3600 s" in ei.value.message


def test_refusal_is_reported_and_never_retried(fake, env, tmp_path, delays):
    with pytest.raises(Refused) as ei:
        make(env, request(prompt="please BLOCKME now"), tmp_path)
    assert fake.calls == 1 and delays == []
    assert ei.value.message.startswith("refused by openai: Your request was rejected by the safety system.")
    assert "input stage" in ei.value.message and "violence" in ei.value.message


def test_legacy_content_policy_violation_is_a_refusal_too(fake, env, tmp_path, delays):
    fake.script(Reply(400, {"error": {"message": "Your request was rejected as a result of our safety system.",
                                      "type": "invalid_request_error", "code": "content_policy_violation"}}))
    with pytest.raises(Refused):
        make(env, request(), tmp_path)
    assert fake.calls == 1


def test_quota_exhausted_is_reported_as_such_and_not_retried(fake, env, tmp_path, delays):
    fake.script(quota())
    with pytest.raises(QuotaExceeded) as ei:
        make(env, request(), tmp_path)
    assert fake.calls == 1 and delays == []
    assert "quota exhausted" in ei.value.message


def test_a_timeout_is_reported_and_not_retried_so_it_is_never_paid_twice(fake, env, tmp_path, delays):
    fake.script(Reply(200, {"data": []}, delay=5))
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout) as ei:
        get_provider("openai", env={**env, "AIGEN_HTTP_TIMEOUT": "0.3"}).generate(
            request(), tmp_path / "x.png", Recorder())
    assert time.monotonic() - t0 < 4
    assert fake.calls == 1 and delays == []
    assert "no answer within the timeout" in ei.value.message


BILLED = "may have made and billed it; not retried"


def test_a_timeout_says_it_may_have_been_billed_and_how_to_make_a_new_one(fake, env, tmp_path, delays):
    fake.script(Reply(200, {"data": []}, delay=5))
    with pytest.raises(ProviderTimeout) as ei:
        make({**env, "AIGEN_HTTP_TIMEOUT": "0.3"}, request(), tmp_path)
    assert BILLED in ei.value.message and "aigen retry" in ei.value.hint


@pytest.mark.parametrize("fault, words", [
    (lambda png: cut_answer(png), "the answer was cut off"),
    (lambda png: garbled_answer(png), "the answer could not be read (invalid JSON"),
    (lambda png: dropped(), "the connection broke after the request was sent"),
    (lambda png: Reply(200, {"created": 1, "data": [{"b64_json": base64.b64encode(png[:-40]).decode()}]}),
     "the PNG in the answer is cut off"),
    (lambda png: Reply(200, "<html>bad gateway</html>", content_type="text/html"), "the answer could not be read"),
])
def test_an_answer_lost_after_sending_is_one_paid_call_never_resent(fake, env, tmp_path, delays, fault, words):
    fake.script(fault(png_bytes(64, 64)))
    with pytest.raises(ProviderError) as ei:
        make(env, request(), tmp_path)
    assert fake.calls == 1 and delays == []
    msg = ei.value.message
    assert words in msg and BILLED in msg and "could not reach" not in msg
    assert not ei.value.retryable and not (tmp_path / "out.png").exists()


def test_a_trickling_answer_fails_within_the_deadline(fake, env, tmp_path, delays):
    fake.script(trickled(png_bytes(64, 64)))
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout) as ei:
        make({**env, "AIGEN_DOWNLOAD_DEADLINE": "2", "AIGEN_DOWNLOAD_MIN_RATE": "0"}, request(), tmp_path)
    took = time.monotonic() - t0
    assert took < 2 + 3, took
    assert "over its 2 s deadline" in ei.value.message and BILLED in ei.value.message
    assert fake.calls == 1 and delays == []


def test_a_stalled_answer_cannot_outlast_the_deadline_by_the_read_timeout(fake, env, tmp_path, delays):
    fake.script(trickled(png_bytes(64, 64), nbytes=32, every=20))  # one write, then 20 s of nothing
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout, match="over its 2 s deadline"):
        make({**env, "AIGEN_DOWNLOAD_DEADLINE": "2", "AIGEN_HTTP_TIMEOUT": "30"}, request(), tmp_path)
    assert time.monotonic() - t0 < 2 + 3
    assert fake.calls == 1


def test_a_slow_answer_is_failed_by_the_rate_floor(fake, env, tmp_path, delays):
    fake.script(trickled(png_bytes(64, 64)))
    with pytest.raises(ProviderTimeout, match="too slow.*under the 1000 bytes/s minimum"):
        make({**env, "AIGEN_DOWNLOAD_MIN_RATE": "1000", "AIGEN_DOWNLOAD_RATE_WINDOW": "1"}, request(), tmp_path)
    assert fake.calls == 1


def test_connection_refused_is_retried_because_nothing_was_sent(tmp_path, delays):
    from fakes.httpfake import FakeServer

    srv = FakeServer().start()
    url = srv.url + "/v1"
    srv.stop()  # nothing listens on that port now
    with pytest.raises(ProviderError) as ei:
        get_provider("openai", env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url, "AIGEN_RETRY_ATTEMPTS": "2"}
                     ).generate(request(), tmp_path / "x.png", Recorder())
    assert len(delays) == 1
    assert "could not reach the API" in ei.value.message


def test_a_rejected_key_is_named_and_never_shown(fake, env, tmp_path, delays):
    bad = "sk-wrong-key-ABCDEFGHIJKLMNOP"
    with pytest.raises(ProviderError) as ei:
        make({**env, "OPENAI_API_KEY": bad}, request(), tmp_path)
    e = ei.value
    assert "rejected the API key (HTTP 401)" in e.message
    assert "OPENAI_API_KEY" in e.hint
    for text in (e.message, e.hint, str(e)):
        assert bad not in text and bad[-4:] not in text
    assert fake.calls == 1


def test_retired_models_are_refused_before_any_call(fake, env):
    p = get_provider("openai", env=env)
    for model, day in (("dall-e-3", "2026-05-12"), ("dall-e-2", "2026-05-12"), ("gpt-image-1", "2026-10-23"),
                       ("gpt-image-1.5-2025-12-16", "2026-12-01")):
        with pytest.raises(BadInput) as ei:
            p.model_for("image", model)
        assert model in ei.value.message and day in ei.value.message
        assert "gpt-image-2" in ei.value.hint
    assert fake.calls == 0
    assert p.model_for("image", None) == "gpt-image-2"


def test_deprecated_models_are_refused_only_from_their_shutdown_date():
    for model in ("gpt-image-1-mini", "gpt-image-1.5", "gpt-image-1.5-2025-12-16", "chatgpt-image-latest"):
        oi.check_model(model, on=date(2026, 11, 30))
        with pytest.raises(BadInput, match="shut this model down on 2026-12-01"):
            oi.check_model(model, on=date(2026, 12, 1))


def test_model_not_found_from_the_api_names_the_model_and_the_default(fake, env, tmp_path, monkeypatch):
    # Before its shutdown date the pre-check lets gpt-image-1 through; the API then says it is gone.
    monkeypatch.setattr(oi, "today", lambda: date(2026, 10, 1))
    with pytest.raises(ProviderError) as ei:
        make(env, request(model="gpt-image-1"), tmp_path)
    assert "'gpt-image-1' is not available (model_not_found)" in ei.value.message
    assert "2026-10-23" in ei.value.message and "gpt-image-2" in ei.value.hint
    assert fake.calls == 1


def test_bytes_that_are_not_a_png_are_refused(fake, env, tmp_path):
    html = base64.b64encode(b"<html><body>oops</body></html>").decode()
    fake.script(Reply(200, {"created": 1, "data": [{"b64_json": html}]}))
    with pytest.raises(MediaCheckError) as ei:
        make(env, request(), tmp_path)
    assert "HTML" in ei.value.message
    assert not (tmp_path / "out.png").exists()


def test_invalid_base64_and_empty_answers_are_clear_errors(fake, env, tmp_path):
    fake.script(Reply(200, {"created": 1, "data": [{"b64_json": "%%%not base64%%%"}]}),
                Reply(200, {"created": 1, "data": []}))
    with pytest.raises(ProviderError, match="not valid base64.*may have made and billed it"):
        make(env, request(), tmp_path)
    with pytest.raises(ProviderError, match="without an image"):
        make(env, request(), tmp_path)


def test_a_url_answer_is_downloaded_with_the_checks(fake, env, tmp_path):
    png = png_bytes(32, 32)
    fake.server.route("GET", "/files/img.png", Reply(200, png, content_type="image/png"))
    fake.script(Reply(200, {"created": 1, "data": [{"url": fake.server.url + "/files/img.png?sig=abc"}]}))
    out, dest = make(env, request(), tmp_path)
    assert dest.read_bytes() == png


# -- end to end through the CLI -------------------------------------------------------------
@pytest.fixture
def cli_env(fake, home, monkeypatch, delays):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    return fake


def test_generate_with_openai_end_to_end(cli, cli_env, home):
    r = cli("generate", "a red fox at dawn", "--user", "alice", "--image-provider", "openai", "--images", "3",
            "--videos", "0", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    gen_dir = next((home / "generated_content" / "alice").iterdir())
    files = sorted(gen_dir.glob("image_*.png"))
    assert [f.name for f in files] == ["image_1.png", "image_2.png", "image_3.png"]
    assert len({hashlib.sha256(f.read_bytes()).hexdigest() for f in files}) == 3
    assert cli_env.calls == 3
    # The key reaches neither the database nor any file in the home.
    for p in home.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p
    with sqlite3.connect(home / "aigen.db") as db:
        models = {row[0] for row in db.execute("select model from assets")}
    assert models == {"gpt-image-2"}


def test_refusals_fail_the_assets_with_the_reason_and_are_not_retried(cli, cli_env, home):
    r = cli("generate", "BLOCKME please", "--user", "alice", "--image-provider", "openai", "--images", "2",
            "--videos", "0")
    assert r.exit_code == 1
    assert cli_env.calls == 2  # one call per asset, none repeated
    r = cli("status", "--json")
    gen_id = json.loads(r.output)["generations"][0]["id"]
    detail = json.loads(cli("status", gen_id, "--json").output)
    errors = [a["error"] for a in detail["assets"]]
    assert all(e.startswith("refused by openai:") for e in errors), errors


def test_a_missing_key_stops_before_anything_is_written(cli, fake, home, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    r = cli("generate", "a fox", "--user", "alice", "--image-provider", "openai", "--videos", "0")
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "needs OPENAI_API_KEY" in text and "aigen keys set openai" in text
    assert not (home / "aigen.db").exists()
    assert fake.calls == 0


def test_dry_run_makes_no_request_and_writes_nothing(cli, cli_env, home):
    r = cli("generate", "a fox", "--user", "alice", "--image-provider", "openai", "--image-size", "1000x600",
            "--videos", "0", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert plan["dry_run"] is True
    (item,) = plan["items"]
    assert item["provider"] == "openai" and item["model"] == "gpt-image-2" and item["count"] == 5
    assert item["output"].startswith("1072x640")
    assert any("sent as 1072x640 for the asked 1000x600" in n for n in plan["notes"]), plan["notes"]
    assert item["estimate"]["text"] == "unknown"
    assert cli_env.calls == 0
    assert not home.exists() or not any(home.iterdir())


def test_generate_prints_the_size_actually_sent(cli, cli_env, home):
    r = cli("generate", "a fox", "--user", "alice", "--image-provider", "openai", "--image-size", "512x512",
            "--images", "2", "--videos", "0")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "Note: openai images are sent as 816x816 for the asked 512x512" in text
    assert [b["size"] for b in cli_env.bodies] == ["816x816", "816x816"]
    from PIL import Image

    gen_dir = next((home / "generated_content" / "alice").iterdir())
    assert {Image.open(f).size for f in gen_dir.glob("image_*.png")} == {(816, 816)}


def test_dry_run_still_refuses_a_retired_model(cli, cli_env, home):
    r = cli("generate", "a fox", "--user", "alice", "--image-provider", "openai", "--image-model", "dall-e-3",
            "--videos", "0", "--dry-run")
    assert r.exit_code == 2
    assert "dall-e-3" in r.output
    assert cli_env.calls == 0


def test_mixed_providers_in_one_request(cli, cli_env, home):
    r = cli("generate", "a fox", "--user", "alice", "--image-provider", "openai", "--images", "2",
            "--video-provider", "local", "--videos", "1", "--video-size", "64x64", "--duration", "0.5",
            "--fps", "8", "--json")
    assert r.exit_code == 0, r.output
    gen_dir = next((home / "generated_content" / "alice").iterdir())
    assert sorted(p.name for p in gen_dir.glob("*.png")) == ["image_1.png", "image_2.png"]
    assert (gen_dir / "video_1.mp4").exists()
    with sqlite3.connect(home / "aigen.db") as db:
        rows = set(db.execute("select kind, provider from assets"))
    assert rows == {("image", "openai"), ("video", "local")}
