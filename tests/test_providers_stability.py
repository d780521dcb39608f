"""The `stability` provider against a local fake of the v2beta API, and the shared HTTP layer it uses."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time

import pytest

from aigen.errors import BadInput, MediaCheckError, ProviderError, ProviderTimeout, QuotaExceeded, Refused
from aigen.providers import http
from aigen.providers.base import AssetRequest, get_provider
from aigen.providers.stability import aspect_ratio
from fakes.httpfake import FakeServer, Reply, png_bytes
from fakes.stability_fake import KEY, StabilityFake, error, no_credits, rate_limited, server_error


class Recorder:
    def save_job_id(self, job_id):
        pass

    def progress(self, fraction):
        pass


@pytest.fixture
def fake():
    f = StabilityFake().start()
    yield f
    f.stop()


@pytest.fixture
def delays(monkeypatch):
    seen: list[float] = []
    monkeypatch.setattr(http, "sleep", seen.append)
    return seen


@pytest.fixture
def env(fake):
    return {"STABILITY_API_KEY": KEY, "STABILITY_BASE_URL": fake.base_url}


def request(prompt="a lighthouse in a storm", index=1, seed=4242, width=1024, height=1024, model=None):
    return AssetRequest(kind="image", prompt=prompt, index=index, seed=seed, width=width, height=height,
                        generation_id="g1", model=model)


def make(env, req, tmp_path, name="out.png"):
    dest = tmp_path / name
    return get_provider("stability", env=env).generate(req, dest, Recorder()), dest


# -- success --------------------------------------------------------------------------------
def test_core_by_default_multipart_with_seed_ratio_and_png(fake, env, tmp_path, delays):
    out, dest = make(env, request(width=1280, height=720), tmp_path)
    assert dest.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.format == "png" and out.model == "core"
    assert out.cost == pytest.approx(0.03)
    rec = fake.server.requests[-1]
    assert rec.method == "POST" and rec.path == "/v2beta/stable-image/generate/core"
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    assert rec.headers["accept"] == "image/*"
    assert rec.is_multipart()
    form = rec.form()
    assert form["prompt"] == "a lighthouse in a storm"
    assert form["output_format"] == "png"
    assert form["aspect_ratio"] == "16:9"
    assert form["seed"] == "4242"
    assert "model" not in form
    assert fake.calls == 1 and delays == []


@pytest.mark.parametrize("model,endpoint,field,cost", [
    ("ultra", "ultra", None, 0.08),
    ("sd3.5-large", "sd3", "sd3.5-large", 0.065),
    ("sd3.5-medium", "sd3", "sd3.5-medium", 0.035),
    ("sd3.5-large-turbo", "sd3", "sd3.5-large-turbo", 0.04),
])
def test_ultra_and_sd3_models(fake, env, tmp_path, model, endpoint, field, cost):
    out, _ = make(env, request(model=model), tmp_path)
    rec = fake.server.requests[-1]
    assert rec.path == f"/v2beta/stable-image/generate/{endpoint}"
    form = rec.form()
    assert form.get("model") == field
    if field:
        assert form["mode"] == "text-to-image"
    assert out.model == model and out.cost == pytest.approx(cost)


def test_an_unknown_model_is_bad_input_naming_the_choices(env):
    with pytest.raises(BadInput) as ei:
        get_provider("stability", env=env).model_for("image", "sdxl-9000")
    assert "sdxl-9000" in ei.value.message and "sd3.5-large" in ei.value.message


@pytest.mark.parametrize("w,h,ratio", [
    (1024, 1024, "1:1"), (1280, 720, "16:9"), (720, 1280, "9:16"), (1536, 1024, "3:2"), (1024, 1536, "2:3"),
    (2560, 1080, "21:9"), (1080, 2560, "9:21"), (1280, 1024, "5:4"), (1024, 1280, "4:5"), (4096, 64, "21:9"),
])
def test_aspect_ratio_is_the_closest_allowed(w, h, ratio):
    assert aspect_ratio(w, h) == ratio


def test_a_seed_per_index_makes_the_five_images_differ(fake, env, tmp_path):
    from aigen.pipeline.plan import asset_seed

    digests = set()
    for i in range(1, 6):
        _, dest = make(env, request(index=i, seed=asset_seed(7, "image", i)), tmp_path, f"{i}.png")
        digests.add(hashlib.sha256(dest.read_bytes()).hexdigest())
    seeds = [f["seed"] for f in fake.forms()]
    assert len(set(seeds)) == 5
    assert len(digests) == 5


def test_the_json_answer_variant_is_understood(fake, env, tmp_path):
    import base64

    png = png_bytes(40, 40)
    fake.script(Reply(200, {"image": base64.b64encode(png).decode(), "finish_reason": "SUCCESS", "seed": 1},
                      content_type="application/json; type=image/png"))
    _, dest = make(env, request(), tmp_path)
    assert dest.read_bytes() == png


# -- bad days -------------------------------------------------------------------------------
def test_429_with_retry_after_then_success(fake, env, tmp_path, delays):
    fake.script(rate_limited("3"))
    _, dest = make(env, request(), tmp_path)
    assert fake.calls == 2 and delays == [3.0]
    assert dest.exists()


def test_429_without_retry_after_waits_the_documented_lockout(fake, env, tmp_path, delays):
    fake.script(rate_limited(None))
    make(env, request(), tmp_path)
    assert delays == [60.0]


def test_500s_until_retries_run_out(fake, env, tmp_path, delays):
    fake.script(*[server_error() for _ in range(10)])
    with pytest.raises(ProviderError) as ei:
        make(env, request(), tmp_path)
    assert fake.calls == 4 and len(delays) == 3
    assert "server error (HTTP 500)" in ei.value.message and "gave up after 4 attempts" in ei.value.message
    assert not (tmp_path / "out.png").exists()


def test_retries_stop_at_the_time_budget(fake, env, tmp_path, delays):
    fake.script(rate_limited("2"))
    with pytest.raises(ProviderError) as ei:
        make({**env, "AIGEN_RETRY_MAX_TIME": "0.5", "AIGEN_RETRY_ATTEMPTS": "10"}, request(), tmp_path)
    assert "the next wait would pass the 0.5 s limit" in ei.value.message
    assert fake.calls == 1 and delays == []


def test_prompt_moderation_403_is_a_refusal_never_retried(fake, env, tmp_path, delays):
    with pytest.raises(Refused) as ei:
        make(env, request(prompt="BLOCKME"), tmp_path)
    assert ei.value.message.startswith("refused by stability: Your request was flagged")
    assert fake.calls == 1 and delays == []


def test_content_filtered_output_is_a_refusal_and_nothing_is_kept(fake, env, tmp_path, delays):
    with pytest.raises(Refused) as ei:
        make(env, request(prompt="FILTERME"), tmp_path)
    assert "CONTENT_FILTERED" in ei.value.message
    assert fake.calls == 1 and delays == []
    assert not (tmp_path / "out.png").exists()


def test_no_credits_is_quota_exceeded_not_retried(fake, env, tmp_path, delays):
    fake.script(no_credits())
    with pytest.raises(QuotaExceeded) as ei:
        make(env, request(), tmp_path)
    assert "out of credits" in ei.value.message and fake.calls == 1


def test_a_rejected_key_is_named_and_never_shown(fake, env, tmp_path):
    bad = "sk-bad-stability-key-XYZ123456"
    with pytest.raises(ProviderError) as ei:
        make({**env, "STABILITY_API_KEY": bad}, request(), tmp_path)
    assert "rejected the API key (HTTP 401)" in ei.value.message
    assert "STABILITY_API_KEY" in ei.value.hint
    assert bad not in ei.value.message + (ei.value.hint or "")
    assert fake.calls == 1


def test_other_4xx_are_not_retried(fake, env, tmp_path, delays):
    fake.script(error(400, "bad_request", "prompt: too long"))
    with pytest.raises(ProviderError) as ei:
        make(env, request(), tmp_path)
    assert "HTTP 400" in ei.value.message and "prompt: too long" in ei.value.message
    assert fake.calls == 1 and delays == []


def test_a_timeout_is_reported_and_not_retried(fake, env, tmp_path, delays):
    fake.script(Reply(200, png_bytes(), content_type="image/png", delay=5))
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout):
        make({**env, "AIGEN_HTTP_TIMEOUT": "0.3"}, request(), tmp_path)
    assert time.monotonic() - t0 < 4
    assert fake.calls == 1 and delays == []


BILLED = "may have made and billed it; not retried"


def test_a_timeout_says_it_may_have_been_billed(fake, env, tmp_path, delays):
    fake.script(Reply(200, png_bytes(), content_type="image/png", delay=5))
    with pytest.raises(ProviderTimeout) as ei:
        make({**env, "AIGEN_HTTP_TIMEOUT": "0.3"}, request(), tmp_path)
    assert BILLED in ei.value.message and "no answer within the timeout" in ei.value.message
    assert "aigen retry" in ei.value.hint and not ei.value.retryable


def _cut(png, **kw):
    return Reply(200, png, content_type="image/png", headers={"finish-reason": "SUCCESS"}, **kw)


@pytest.mark.parametrize("answer, words", [
    # Content-Length says more than arrives (urllib3 IncompleteRead).
    (lambda png: _cut(png, truncate_to=30), "connection closed after 30 of"),
    # No Content-Length: the body ends when the connection closes, the PNG has no IEND.
    (lambda png: _cut(png[:-40], no_length=True), "PNG data ends early"),
    # The request arrives, the connection closes without a byte of answer.
    (lambda png: Reply(drop=True), "connection broke after the request was sent"),
])
def test_a_cut_off_paid_answer_is_one_paid_call_never_resent(fake, env, tmp_path, delays, answer, words):
    fake.script(answer(png_bytes(64, 64)))
    with pytest.raises(ProviderError) as ei:
        make(env, request(), tmp_path)
    # Exactly one paid request reached the fake: the answer was not fetched again by resending it.
    assert fake.calls == 1 and delays == []
    assert words in ei.value.message and BILLED in ei.value.message
    assert not ei.value.retryable and "could not reach" not in ei.value.message
    assert not (tmp_path / "out.png").exists()


def test_a_cut_off_or_unreadable_json_answer_is_not_resent(fake, env, tmp_path, delays):
    import base64 as b64

    png = png_bytes(64, 64)
    full = json.dumps({"image": b64.b64encode(png).decode(), "finish_reason": "SUCCESS", "seed": 1})
    ctype = "application/json; type=image/png"
    fake.script(Reply(200, full, content_type=ctype, truncate_to=len(full) // 2),
                Reply(200, full[: len(full) // 2], content_type=ctype),
                Reply(200, {"image": "!!not base64!!", "finish_reason": "SUCCESS"}, content_type=ctype),
                Reply(200, {"image": b64.b64encode(png[:-40]).decode(), "finish_reason": "SUCCESS"},
                      content_type=ctype))
    for n, words in enumerate(("truncated", "could not be read", "not valid base64", "cut off"), start=1):
        with pytest.raises(ProviderError) as ei:
            make(env, request(), tmp_path)
        assert fake.calls == n, words
        assert words in ei.value.message and BILLED in ei.value.message
    assert delays == [] and not (tmp_path / "out.png").exists()


def test_a_trickling_answer_fails_within_the_deadline_without_a_second_call(fake, env, tmp_path, delays):
    fake.script(_cut(png_bytes(64, 64) + bytes(20_000), trickle=(16, 0.25)))
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout) as ei:
        make({**env, "AIGEN_DOWNLOAD_DEADLINE": "2", "AIGEN_DOWNLOAD_MIN_RATE": "0"}, request(), tmp_path)
    assert time.monotonic() - t0 < 2 + 3
    assert "over its 2 s deadline" in ei.value.message and BILLED in ei.value.message
    assert fake.calls == 1 and delays == []


def test_connection_refused_is_retried_because_nothing_was_sent(tmp_path, delays):
    srv = FakeServer().start()
    url = srv.url
    srv.stop()  # nothing listens on that port now
    with pytest.raises(ProviderError) as ei:
        make({"STABILITY_API_KEY": KEY, "STABILITY_BASE_URL": url, "AIGEN_RETRY_ATTEMPTS": "2"}, request(),
             tmp_path)
    assert len(delays) == 1
    assert "could not reach the server" in ei.value.message and "billed" not in ei.value.message


def test_a_wrong_type_answer_is_refused_and_not_saved(fake, env, tmp_path, delays):
    fake.script(Reply(200, "<html>maintenance</html>", content_type="text/html"))
    with pytest.raises(MediaCheckError) as ei:
        make(env, request(), tmp_path)
    assert "text/html" in ei.value.message
    assert not (tmp_path / "out.png").exists()
    assert fake.calls == 1


def test_html_labelled_as_png_is_caught_by_the_magic_bytes(fake, env, tmp_path):
    fake.script(Reply(200, "<!DOCTYPE html><html>error page</html>", content_type="image/png",
                      headers={"finish-reason": "SUCCESS"}))
    with pytest.raises(MediaCheckError, match="HTML page"):
        make(env, request(), tmp_path)
    assert not (tmp_path / "out.png").exists()


# -- end to end -----------------------------------------------------------------------------
@pytest.fixture
def cli_env(fake, home, monkeypatch, delays):
    monkeypatch.setenv("STABILITY_API_KEY", KEY)
    monkeypatch.setenv("STABILITY_BASE_URL", fake.base_url)
    return fake


def test_generate_with_stability_end_to_end(cli, cli_env, home):
    r = cli("generate", "a lighthouse", "--user", "bob", "--image-provider", "stability", "--videos", "0",
            "--seed", "99", "--json")
    assert r.exit_code == 0, r.output
    gen_dir = next((home / "generated_content" / "bob").iterdir())
    files = sorted(gen_dir.glob("image_*.png"))
    assert len(files) == 5
    assert len({hashlib.sha256(f.read_bytes()).hexdigest() for f in files}) == 5
    with sqlite3.connect(home / "aigen.db") as db:
        rows = list(db.execute("select seed, cost from assets order by idx"))
    sent = sorted(int(f["seed"]) for f in cli_env.forms())
    assert sorted(r[0] for r in rows) == sent
    for p in home.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p


def test_a_cut_off_answer_fails_the_asset_and_only_aigen_retry_pays_again(cli, cli_env, home):
    cli_env.script(_cut(png_bytes(64, 64), truncate_to=30))
    r = cli("generate", "a lighthouse", "--user", "bob", "--image-provider", "stability", "--videos", "0",
            "--images", "1", "--json")
    assert r.exit_code == 1, r.output
    data = json.loads(r.output)
    assert data["status"] == "Failed" and "may have made and billed it" in data["error"]
    assert cli_env.calls == 1
    r = cli("retry", data["id"], "--json")
    assert r.exit_code == 0 and json.loads(r.output)["status"] == "Completed"
    assert cli_env.calls == 2


def test_dry_run_prints_the_stability_cost_and_calls_nothing(cli, cli_env, home):
    r = cli("generate", "a lighthouse", "--user", "bob", "--image-provider", "stability", "--image-model", "ultra",
            "--videos", "0", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert plan["items"][0]["estimate"]["usd_low"] == pytest.approx(0.40)
    assert plan["total"]["text"] == "$0.40"
    assert cli_env.calls == 0 and not (home / "aigen.db").exists()
    r = cli("generate", "a lighthouse", "--user", "bob", "--image-provider", "stability", "--videos", "0",
            "--dry-run")
    assert r.exit_code == 0
    assert "$0.15" in r.output and "aspect ratio 1:1" in r.output
    assert cli_env.calls == 0


# -- the shared HTTP layer ------------------------------------------------------------------
@pytest.fixture
def server():
    s = FakeServer().start()
    yield s
    s.stop()


def dl(server, path, dest, **kw):
    kw.setdefault("max_bytes", 10**6)
    kw.setdefault("allowed_types", ("image/",))
    kw.setdefault("expect_kind", "image")
    return http.download(server.url + path, dest, provider="test", **kw)


def test_download_success_and_checks(server, tmp_path):
    png = png_bytes(20, 20)
    server.route("GET", "/a.png", Reply(200, png, content_type="image/png"))
    got = dl(server, "/a.png", tmp_path / "a")
    assert got.bytes == len(png) and got.format == "png" and got.content_type == "image/png"
    assert (tmp_path / "a").read_bytes() == png


def test_download_size_cap_from_content_length_and_while_streaming(server, tmp_path):
    png = png_bytes(200, 200, colour=(1, 2, 3)) + bytes(random.Random(1).getrandbits(8) for _ in range(5000))
    server.route("GET", "/big", Reply(200, png, content_type="image/png"))
    server.route("GET", "/big-nolen", Reply(200, png, content_type="image/png", no_length=True))
    with pytest.raises(MediaCheckError, match="over the 1000-byte cap"):
        dl(server, "/big", tmp_path / "b", max_bytes=1000)
    with pytest.raises(MediaCheckError, match="passed the 1000-byte cap"):
        dl(server, "/big-nolen", tmp_path / "b", max_bytes=1000)
    assert not (tmp_path / "b").exists()


def test_download_truncation_is_detected_and_retried(server, tmp_path, delays):
    png = png_bytes(50, 50)
    server.route("GET", "/t", Reply(200, png, content_type="image/png"))
    server.script("GET", "/t", Reply(200, png, content_type="image/png", truncate_to=25))
    with pytest.raises(ProviderError, match="truncated"):
        dl(server, "/t", tmp_path / "t")
    server.script("GET", "/t", Reply(200, png, content_type="image/png", truncate_to=25))
    got = dl(server, "/t", tmp_path / "t", policy=http.RetryPolicy())
    assert got.bytes == len(png) and len(delays) == 1


def test_download_wrong_type_and_wrong_magic(server, tmp_path):
    server.route("GET", "/j", Reply(200, {"error": "expired"}))
    server.route("GET", "/v", Reply(200, png_bytes(), content_type="video/mp4"))
    server.route("GET", "/o", Reply(200, png_bytes(), content_type="application/octet-stream"))
    with pytest.raises(MediaCheckError, match="application/json"):
        dl(server, "/j", tmp_path / "x")
    with pytest.raises(MediaCheckError, match="video/mp4"):
        dl(server, "/v", tmp_path / "x")
    # A generic type is accepted because the magic bytes are checked anyway...
    assert dl(server, "/o", tmp_path / "x").format == "png"
    # ...and they must match what is expected.
    with pytest.raises(MediaCheckError, match="not a video"):
        dl(server, "/o", tmp_path / "x", allowed_types=("video/",), expect_kind="video")


def test_download_expired_url_keeps_the_status_and_hides_the_signature(server, tmp_path):
    server.route("GET", "/s.mp4", Reply(403, "<Error><Code>AccessDenied</Code>Request has expired</Error>",
                                        content_type="application/xml"))
    with pytest.raises(ProviderError) as ei:
        dl(server, "/s.mp4?X-Amz-Signature=deadbeefsecret", tmp_path / "x")
    assert ei.value.status == 403 and not ei.value.retryable
    assert "deadbeefsecret" not in ei.value.message and "/s.mp4" in ei.value.message


def test_download_read_timeout_and_total_deadline(server, tmp_path):
    server.route("GET", "/slow", Reply(200, png_bytes(), content_type="image/png", delay=5))
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout):
        dl(server, "/slow", tmp_path / "x", timeout=(1, 0.3))
    assert time.monotonic() - t0 < 3
    ticks = iter(range(0, 10**6, 100))
    server.route("GET", "/ok", Reply(200, png_bytes(), content_type="image/png"))
    with pytest.raises(ProviderTimeout, match=r"took [0-9]+\.0 s, over its 50 s deadline"):
        dl(server, "/ok", tmp_path / "x", deadline=50, clock=lambda: next(ticks))


def test_parse_retry_after_forms():
    assert http.parse_retry_after({"Retry-After": "7"}) == 7.0
    assert http.parse_retry_after({"retry-after-ms": "250", "Retry-After": "7"}) == 0.25
    assert http.parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert http.parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412490.0) == 0.0
    assert http.parse_retry_after({"Retry-After": "soon"}) is None
    assert http.parse_retry_after({}) is None


def test_backoff_is_full_jitter_capped_and_scaled(delays):
    p = http.RetryPolicy(base=1, cap=8, rng=random.Random(3))
    for n in range(10):
        assert 0 <= p.backoff(n) <= min(8, 2 ** n)
    p = http.RetryPolicy.from_env({"AIGEN_RETRY_SCALE": "0.01", "AIGEN_RETRY_ATTEMPTS": "2",
                                   "AIGEN_RETRY_MAX_TIME": "bogus"})
    assert p.scale == 0.01 and p.max_attempts == 2 and p.max_total == 180.0
    calls = []

    def flaky():
        calls.append(1)
        raise ProviderError("boom", retryable=True, retry_after=5)

    with pytest.raises(ProviderError, match="gave up after 2 attempts"):
        http.with_retries(flaky, policy=p, classify=lambda e: None, provider="t")
    assert len(calls) == 2 and delays == [pytest.approx(0.05)]


def test_with_retries_lets_unknown_exceptions_through():
    def bug():
        raise KeyError("x")

    with pytest.raises(KeyError):
        http.with_retries(bug, policy=http.RetryPolicy(), classify=lambda e: None, provider="t")


def test_scrub_removes_keys_and_key_shaped_text():
    text = "bad key sk-proj-abcdefgh12345 for Bearer abcdefghijklmnop and mysecretvalue"
    out = http.scrub(text, ["mysecretvalue"])
    assert "sk-proj" not in out and "abcdefghijklmnop" not in out and "mysecretvalue" not in out


def test_the_fake_refuses_what_the_api_refuses(fake):
    import requests

    def post(endpoint="core", **fields):
        data = {"prompt": "a fox", **fields}
        return requests.post(f"{fake.base_url}/v2beta/stable-image/generate/{endpoint}", data=data,
                             files={"none": ""}, headers={"authorization": f"Bearer {KEY}", "accept": "image/*"},
                             timeout=5)

    assert post().status_code == 200
    for endpoint, fields in (("core", {"prompt": "x" * 10_001}), ("core", {"negative_prompt": "x" * 10_001}),
                             ("core", {"style_preset": "watercolour"}), ("sd3", {"mode": "img2img"}),
                             ("sd3", {"mode": "image-to-image"}), ("ultra", {"strength": "0.5"})):
        r = post(endpoint, **fields)
        assert r.status_code == 400 and r.json()["name"] == "bad_request", (endpoint, fields)
