"""Prompts: invisible-only prompts are empty, carriage returns become newlines, bidi controls are refused."""

import json

import pytest

from aigen import config
from aigen.errors import BadInput
from aigen.store import Store


@pytest.mark.parametrize("prompt", [
    "\u200b", "\u200b\u200c\u200d", " \u2060 \ufeff ", "\u00ad", "\u3164\u115f", "\ufe0f", "\u2800 \u2800",
    "\U000e0041\U000e0042",  # tag characters
    "\t\n \u3000",
])
def test_a_prompt_of_invisible_characters_is_empty(prompt):
    with pytest.raises(BadInput, match="invalid prompt: it is (empty|only invisible)"):
        config.validate_prompt(prompt)


@pytest.mark.parametrize("code", [0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069])
def test_bidirectional_controls_are_refused(code):
    with pytest.raises(BadInput, match=f"bidirectional control character U\\+{code:04X} at position 4"):
        config.validate_prompt(f"a ca{chr(code)}t")


@pytest.mark.parametrize("raw, stored", [
    ("a fox\r\nat dawn", "a fox\nat dawn"),
    ("a fox\rat dawn", "a fox\nat dawn"),
    ("a fox\r\n\r\nat dawn\r\n", "a fox\n\nat dawn"),
    ("\ufeffa fox at dawn\u200b", "a fox at dawn"),
])
def test_carriage_returns_become_newlines(raw, stored):
    assert config.validate_prompt(raw) == stored


def test_visible_text_with_joiners_and_marks_is_kept():
    # Emoji sequences use ZWJ and variation selectors; right-to-left text needs no controls.
    for text in ("family 👨\u200d👩\u200d👧 at the sea", "a red ❤\ufe0f", "שלום world", "e\u0301clair"):
        assert config.validate_prompt(text) == text


def test_length_is_counted_after_normalising():
    assert len(config.validate_prompt("a\r\n" * 1999 + "b")) == 3999
    with pytest.raises(BadInput, match="4001 characters"):
        config.validate_prompt("a" * 4001)


def test_cli_refuses_a_bidi_prompt_and_writes_nothing(cli, home):
    r = cli("generate", "a cat \u202eworraw a", "--user", "alice", "--json")
    assert r.exit_code == 2
    err = json.loads(r.stdout)
    assert err["error"] == "bad_input" and "U+202E" in err["message"]
    assert not (home / "aigen.db").exists()


def test_cli_refuses_an_invisible_prompt_from_stdin(cli, home):
    r = cli("generate", "-", "--user", "alice", "--json", input="\u200b\u200d\n")
    assert r.exit_code == 2
    assert "only invisible characters" in json.loads(r.stdout)["message"]
    assert not (home / "aigen.db").exists()


def test_cli_stores_crlf_as_lf(cli, home):
    r = cli("generate", "a fox\r\nat dawn\rin mist", "--user", "alice", "--images", "1", "--videos", "0",
            "--image-provider", "flaky", "--image-size", "64x64", "--json")
    assert r.exit_code == 0, r.output
    gid = json.loads(r.stdout)["id"]
    assert Store(home / "aigen.db").get_generation(gid)["prompt"] == "a fox\nat dawn\nin mist"
