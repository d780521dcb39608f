"""`aigen keys` and `aigen providers`: keys stored 0600, looked up after the environment, never shown."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from aigen import keys as keystore
from aigen.providers.base import get_provider

KEY_VARS = ("OPENAI_API_KEY", "STABILITY_API_KEY", "RUNWAYML_API_SECRET", "PICTORY_API_KEY",
            "PICTORY_CLIENT_ID", "PICTORY_CLIENT_SECRET", "PICTORY_USER_ID")
SECRET = "sk-proj-SECRETSECRET0123456789"


@pytest.fixture(autouse=True)
def no_keys_in_env(monkeypatch):
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)


def test_set_from_stdin_writes_a_0600_file_and_never_echoes(cli, home):
    r = cli("keys", "set", "openai", "--stdin", input=SECRET + "\n")
    assert r.exit_code == 0, r.output
    path = home / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"OPENAI_API_KEY": SECRET}
    assert SECRET not in r.output
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]  # the atomic write left nothing


def test_set_by_hidden_prompt(cli, home):
    r = cli("keys", "set", "stability", input="sk-stab-0123456789abcdef\n")
    assert r.exit_code == 0, r.output
    assert "sk-stab-0123456789abcdef" not in r.output
    assert keystore.read_keys(home) == {"STABILITY_API_KEY": "sk-stab-0123456789abcdef"}


def test_pictory_asks_each_variable_and_skips_empty_ones(cli, home):
    r = cli("keys", "set", "pictory", input="\nclient-id-1\nclient-secret-2\nuser-3\n")
    assert r.exit_code == 0, r.output
    assert keystore.read_keys(home) == {"PICTORY_CLIENT_ID": "client-id-1",
                                        "PICTORY_CLIENT_SECRET": "client-secret-2", "PICTORY_USER_ID": "user-3"}
    r = cli("keys", "set", "pictory", "--stdin", input="pictai_x\n")
    assert r.exit_code == 2 and "--var" in r.output
    r = cli("keys", "set", "pictory", "--stdin", "--var", "pictory_api_key", input="pictai_abcdef123456\n")
    assert r.exit_code == 0
    assert keystore.read_keys(home)["PICTORY_API_KEY"] == "pictai_abcdef123456"


def test_bad_values_and_names_exit_2_without_echoing_the_value(cli, home):
    r = cli("keys", "set", "openai", "--stdin", input="sk-has space-in-it\n")
    assert r.exit_code == 2
    assert "space-in-it" not in r.output
    r = cli("keys", "set", "openai", "--stdin", input="\n")
    assert r.exit_code == 2 and "nothing was stored" in r.output
    r = cli("keys", "set", "nosuch", "--stdin", input="x\n")
    assert r.exit_code == 2 and "nosuch" in r.output
    r = cli("keys", "set", "openai", "--var", "STABILITY_API_KEY", "--stdin", input="x\n")
    assert r.exit_code == 2
    r = cli("keys", "set", "local", "--stdin", input="x\n")
    assert r.exit_code == 2 and "needs no key" in r.output
    assert not (home / "keys.json").exists()


def test_list_shows_source_and_a_mask_and_the_environment_wins(cli, home, monkeypatch):
    cli("keys", "set", "openai", "--stdin", input=SECRET)
    r = cli("keys", "list", "--json")
    data = json.loads(r.output)
    row = next(k for k in data["keys"] if k["var"] == "OPENAI_API_KEY")
    assert row == {"provider": "openai", "var": "OPENAI_API_KEY", "set": True, "source": "file",
                   "masked": f"sk-…({len(SECRET)} chars)"}
    assert SECRET not in r.output
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-abcdefghijklmnop")
    r = cli("keys", "list", "--json")
    row = next(k for k in json.loads(r.output)["keys"] if k["var"] == "OPENAI_API_KEY")
    assert row["source"] == "environment"
    assert get_provider("openai", home=home).lookup_key("OPENAI_API_KEY") == "sk-from-env-abcdefghijklmnop"
    r = cli("keys", "list")
    assert r.exit_code == 0 and "environment" in r.output and SECRET not in r.output
    assert "sk-from-env" not in r.output


def test_a_stored_key_is_used_after_the_environment(cli, home):
    r = cli("generate", "a fox", "--user", "al", "--image-provider", "openai", "--videos", "0", "--dry-run")
    assert r.exit_code == 2 and "OPENAI_API_KEY" in r.output
    cli("keys", "set", "openai", "--stdin", input=SECRET)
    r = cli("generate", "a fox", "--user", "al", "--image-provider", "openai", "--videos", "0", "--dry-run")
    assert r.exit_code == 0, r.output
    assert SECRET not in r.output
    assert get_provider("openai", env={}, home=home).lookup_key("OPENAI_API_KEY") == SECRET


def test_remove(cli, home, monkeypatch):
    cli("keys", "set", "openai", "--stdin", input=SECRET)
    cli("keys", "set", "stability", "--stdin", input="sk-stab-0123456789")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-0123456789abc")
    r = cli("keys", "remove", "openai", "--json")
    assert json.loads(r.output) == {"provider": "openai", "removed": ["OPENAI_API_KEY"],
                                    "still_in_environment": ["OPENAI_API_KEY"]}
    assert keystore.read_keys(home) == {"STABILITY_API_KEY": "sk-stab-0123456789"}
    r = cli("keys", "remove", "openai")
    assert r.exit_code == 0 and "nothing removed" in r.output
    assert stat.S_IMODE((home / "keys.json").stat().st_mode) == 0o600


def test_a_damaged_keys_file_is_a_clear_error(cli, home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "keys.json").write_text("{not json")
    r = cli("generate", "a fox", "--user", "al", "--image-provider", "openai", "--videos", "0", "--dry-run")
    assert r.exit_code == 2
    assert "keys.json is not valid JSON" in " ".join(r.output.split())
    assert not (home / "aigen.db").exists()


def test_list_warns_about_a_readable_keys_file(cli, home):
    cli("keys", "set", "openai", "--stdin", input=SECRET)
    os.chmod(home / "keys.json", 0o644)
    r = cli("keys", "list", "--json")
    assert "chmod 600" in json.loads(r.output)["warning"]


def test_write_key_is_atomic_and_keeps_other_keys(tmp_path):
    keystore.write_key(tmp_path, "OPENAI_API_KEY", "sk-a-0123456789")
    keystore.write_key(tmp_path, "STABILITY_API_KEY", " sk-b-0123456789 \n")
    assert keystore.read_keys(tmp_path) == {"OPENAI_API_KEY": "sk-a-0123456789",
                                            "STABILITY_API_KEY": "sk-b-0123456789"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


# -- aigen providers --------------------------------------------------------------------------
def test_providers_json_lists_every_provider_and_never_a_key(cli, home, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    r = cli("providers", "--json")
    assert r.exit_code == 0, r.output
    assert SECRET not in r.output and "SECRETSECRET" not in r.output
    rows = {p["name"]: p for p in json.loads(r.output)["providers"]}
    assert {"local", "openai", "stability"} <= set(rows)
    o = rows["openai"]
    assert o["makes"] == ["image"] and o["default_models"] == {"image": "gpt-image-2"}
    assert o["key_set"] is True and o["keys"] == [{"var": "OPENAI_API_KEY", "set": True, "source": "environment"}]
    assert o["concurrency"] == 4 and o["base_url_env"] == "OPENAI_BASE_URL"
    assert o["base_url"] == "https://api.openai.com/v1"
    s = rows["stability"]
    assert s["key_set"] is False and s["missing"] == ["STABILITY_API_KEY"]
    assert s["default_models"] == {"image": "core"} and s["concurrency"] == 4
    assert s["price_per_asset"]["image"]["text"] == "$0.03 per image"
    assert rows["local"]["key_set"] is True and rows["local"]["key_env"] == []


def test_providers_table(cli, home, monkeypatch):
    monkeypatch.setenv("STABILITY_BASE_URL", "http://127.0.0.1:9")
    cli("keys", "set", "stability", "--stdin", input="sk-stab-0123456789")
    r = cli("providers")
    assert r.exit_code == 0, r.output
    lines = {line.split()[0]: line for line in r.output.splitlines() if line.strip()}
    assert "gpt-image-2" in lines["openai"] and "missing" in lines["openai"] and " 4" in lines["openai"]
    assert "set (file)" in lines["stability"] and "core" in lines["stability"]
    assert "not needed" in lines["local"]
    assert "openai needs OPENAI_API_KEY" in r.output


def test_providers_and_keys_import_no_sdk(home):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from aigen.cli import app\n"
        "r = CliRunner().invoke(app, ['providers', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['keys', 'list'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('openai', 'runwayml', 'fal_client', 'requests', 'httpx2', 'httpx', 'numpy', 'av', 'PIL')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
