"""Downloads (and paid answers streamed like them) hold their deadline and a minimum rate while bytes trickle.

A server that sends 64 bytes a second used to hold a worker for ~17 minutes: the
deadline was checked only between 64 KiB chunks, and filling one chunk at that
rate takes 1024 s. These tests use real sockets against a fake server and a 2 s
deadline set through the environment, so each takes a few seconds at most.
"""

from __future__ import annotations

import re
import time

import pytest

from aigen.errors import ProviderTimeout
from aigen.providers import http
from fakes.httpfake import FakeServer, Reply, png_bytes

#: Big enough that a trickle at 64 B/s would take minutes to finish.
BODY = png_bytes(64, 64) + bytes(20_000)


@pytest.fixture
def server():
    s = FakeServer().start()
    yield s
    s.stop()


@pytest.fixture
def delays(monkeypatch):
    seen: list[float] = []
    monkeypatch.setattr(http, "sleep", seen.append)
    return seen


def dl(server, path, dest, env, **kw):
    return http.download(server.url + path, dest, provider="test", max_bytes=10**6, allowed_types=("image/",),
                         expect_kind="image", env=env, timeout=(2, 30), **kw)


def elapsed_in(message: str) -> float:
    m = re.search(r"took ([0-9.]+) s", message)
    assert m, message
    return float(m.group(1))


def test_a_server_trickling_64_bytes_a_second_fails_within_the_deadline(server, tmp_path):
    server.route("GET", "/slow.png", Reply(200, BODY, content_type="image/png", trickle=(16, 0.25)))
    env = {http.DEADLINE_ENV: "2", http.MIN_RATE_ENV: "0"}
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout) as ei:
        dl(server, "/slow.png", tmp_path / "x.png", env)
    took = time.monotonic() - t0
    assert took < 2 + 3, took  # the deadline plus a few seconds, not 1024 s per chunk
    msg = ei.value.message
    assert "over its 2 s deadline" in msg and "127.0.0.1" in msg
    # The message names the real elapsed time, not just the limit.
    assert 2.0 <= elapsed_in(msg) <= took + 0.1
    assert ei.value.provider_code == "download_timeout"
    assert not (tmp_path / "x.png").exists()


def test_a_stall_shorter_than_the_read_timeout_cannot_outlast_the_deadline(server, tmp_path):
    # One write, then a 20 s pause: each recv would wait up to the 30 s read timeout.
    server.route("GET", "/stall.png", Reply(200, BODY, content_type="image/png", trickle=(64, 20)))
    env = {http.DEADLINE_ENV: "2", http.MIN_RATE_ENV: "0"}
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout, match="over its 2 s deadline"):
        dl(server, "/stall.png", tmp_path / "x.png", env)
    assert time.monotonic() - t0 < 2 + 3


def test_the_minimum_rate_fails_a_trickle_long_before_the_deadline(server, tmp_path):
    server.route("GET", "/slow.png", Reply(200, BODY, content_type="image/png", trickle=(16, 0.25)))
    env = {http.DEADLINE_ENV: "600", http.MIN_RATE_ENV: "1000", http.RATE_WINDOW_ENV: "1"}
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeout) as ei:
        dl(server, "/slow.png", tmp_path / "x.png", env)
    assert time.monotonic() - t0 < 1 + 3
    assert "too slow" in ei.value.message and "under the 1000 bytes/s minimum" in ei.value.message


def test_a_fast_body_passes_the_same_limits(server, tmp_path):
    server.route("GET", "/ok.png", Reply(200, BODY, content_type="image/png"))
    env = {http.DEADLINE_ENV: "2", http.MIN_RATE_ENV: "1000", http.RATE_WINDOW_ENV: "1"}
    got = dl(server, "/ok.png", tmp_path / "x.png", env)
    assert got.bytes == len(BODY) and (tmp_path / "x.png").read_bytes() == BODY


def test_a_slow_but_steady_body_is_not_failed_by_the_rate_floor(server, tmp_path):
    body = png_bytes(8, 8)
    # ~4 KB/s for ~0.5 s: above a 1000 B/s floor measured over 0.2 s windows.
    server.route("GET", "/steady.png", Reply(200, body, content_type="image/png", trickle=(200, 0.05)))
    env = {http.DEADLINE_ENV: "5", http.MIN_RATE_ENV: "1000", http.RATE_WINDOW_ENV: "0.2"}
    got = dl(server, "/steady.png", tmp_path / "x.png", env)
    assert got.bytes == len(body)


def test_limits_come_from_the_environment_and_ignore_bad_values():
    lim = http.BodyLimits.from_env({http.DEADLINE_ENV: "3", http.MIN_RATE_ENV: "10", http.RATE_WINDOW_ENV: "4"},
                                   900.0)
    assert (lim.deadline, lim.min_rate, lim.window) == (3.0, 10.0, 4.0)
    lim = http.BodyLimits.from_env({http.DEADLINE_ENV: "soon", http.MIN_RATE_ENV: "-1"}, 900.0)
    assert (lim.deadline, lim.min_rate, lim.window) == (900.0, http.DEFAULT_MIN_RATE, http.DEFAULT_RATE_WINDOW)
    assert http.BodyLimits.from_env({http.MIN_RATE_ENV: "0"}, 60.0).min_rate == 0.0


def test_a_trickling_download_is_retried_at_most_within_the_retry_budget(server, tmp_path, delays):
    server.route("GET", "/slow.png", Reply(200, BODY, content_type="image/png", trickle=(16, 0.25)))
    env = {http.DEADLINE_ENV: "1", http.MIN_RATE_ENV: "0"}
    with pytest.raises(ProviderTimeout, match="gave up after 2 attempts"):
        dl(server, "/slow.png", tmp_path / "x.png", env, policy=http.RetryPolicy(max_attempts=2))
    assert server.count("GET", "/slow.png") == 2
