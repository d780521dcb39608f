"""`--image-option` / `--video-option KEY=VALUE`: parsed, checked against the provider, stored with the request."""

import json

import pytest

from aigen import config
from aigen.errors import BadInput
from aigen.pipeline.plan import RequestSpec, prepare
from aigen.providers.base import Provider, register, unregister


def test_values_that_read_as_json_are_json_and_the_rest_is_text():
    got = config.parse_pass_options("--video-option", [
        "steps=30", "guidance=3.5", "loop=true", "tags=[1,2]", "negative_prompt=blurry, dark", "empty=",
        "eq=a=b",
    ])
    assert got == {"steps": 30, "guidance": 3.5, "loop": True, "tags": [1, 2],
                   "negative_prompt": "blurry, dark", "empty": "", "eq": "a=b"}
    assert config.parse_pass_options("--image-option", None) == {}


@pytest.mark.parametrize("item, words", [
    ("steps", "expected KEY=VALUE"),
    ("=3", "invalid --image-option key"),
    ("1x=3", "invalid --image-option key"),
    ("a b=3", "invalid --image-option key"),
    ("k=" + "x" * 5000, "longer than 4096"),
])
def test_bad_options_are_refused_with_the_flag_named(item, words):
    with pytest.raises(BadInput) as e:
        config.parse_pass_options("--image-option", [item])
    assert words in str(e.value)


def test_a_key_given_twice_is_refused():
    with pytest.raises(BadInput, match="given twice"):
        config.parse_pass_options("--image-option", ["steps=3", "steps=4"])


class _Taker(Provider):
    name = "taker"
    kinds = frozenset({"image", "video"})
    takes_options = True
    seen: list = []

    def check_request(self, kind, *, prompt, model, width, height, duration=None, options=None):
        type(self).seen.append((kind, self.pass_options(kind, options)))
        return []


@pytest.fixture
def taker():
    register("taker", _Taker)
    _Taker.seen.clear()
    yield _Taker
    unregister("taker")


def test_a_provider_that_takes_options_sees_them_per_kind(taker, tmp_path):
    spec = RequestSpec(user_id="alice", prompt="a fox", image_provider="taker", video_provider="taker",
                       options={"image_options": {"steps": 30}, "video_options": {"fps_hint": 8}})
    gen, _ = prepare(spec, env={}, home=tmp_path)
    assert ("image", {"steps": 30}) in taker.seen and ("video", {"fps_hint": 8}) in taker.seen
    assert gen["options"]["image_options"] == {"steps": 30}


def test_a_provider_that_takes_none_refuses_them(tmp_path):
    spec = RequestSpec(user_id="alice", prompt="a fox", options={"image_options": {"steps": 30}})
    with pytest.raises(BadInput, match="image provider 'local' takes no --image-option"):
        prepare(spec, env={}, home=tmp_path)


def test_options_for_a_kind_that_is_not_made_are_refused(taker, tmp_path):
    spec = RequestSpec(user_id="alice", prompt="a fox", videos=0, video_provider="taker",
                       options={"video_options": {"a": 1}})
    with pytest.raises(BadInput, match="--videos is 0"):
        prepare(spec, env={}, home=tmp_path)


def test_cli_refuses_options_for_local_with_exit_2_and_writes_nothing(cli, home):
    r = cli("generate", "a fox", "--user", "alice", "--image-option", "steps=30")
    assert r.exit_code == 2, r.output
    assert "takes no --image-option" in r.output
    r = cli("status", "--json")
    assert json.loads(r.output) == [] or json.loads(r.output).get("generations", []) == []


def test_cli_refuses_a_malformed_option(cli):
    r = cli("generate", "a fox", "--user", "alice", "--video-option", "nokey")
    assert r.exit_code == 2 and "expected KEY=VALUE" in r.output
