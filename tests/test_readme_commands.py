"""The README's two newcomer commands and .ci/run must not drift apart."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _first_bash_block(section: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {section}")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end != -1 else None]
    m = re.search(r"```bash\n(.+?)\n```", body, re.S)
    assert m, f"no bash block in README section {section!r}"
    return m.group(1).strip()


def _ci_lines() -> list[str]:
    return [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]


def test_ci_runs_the_readme_test_command_exactly():
    cmd = _first_bash_block("Running the tests")
    assert "\n" not in cmd, "the test command is one line"
    assert cmd in _ci_lines()


def test_ci_runs_the_readme_quick_start_exactly():
    cmd = _first_bash_block("Quick start")
    assert "\n" not in cmd, "the quick start is one line"
    assert cmd in _ci_lines()


def test_quick_start_needs_no_pipx():
    # A fresh Debian machine has no pipx: the first command must not start with it.
    cmd = _first_bash_block("Quick start")
    assert not cmd.startswith("pipx"), cmd
    assert "--user alice" in cmd and "aigen generate" in cmd
