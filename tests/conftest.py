import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
sys.path.insert(0, str(TESTS_DIR))

from fakes.testproviders import PLUGINS  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An isolated AIGEN_HOME with the test providers available (also to subprocesses)."""
    h = tmp_path / "home"
    monkeypatch.setenv("AIGEN_HOME", str(h))
    monkeypatch.setenv("AIGEN_PROVIDER_PLUGINS", PLUGINS)
    monkeypatch.setenv("AIGEN_TEST_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), str(REPO)]))
    for var in ("AIGEN_TEST_FAIL", "AIGEN_TEST_REFUSE", "AIGEN_TEST_DELAY"):
        monkeypatch.delenv(var, raising=False)
    return h


@pytest.fixture
def calls(tmp_path):
    """Read the provider calls recorded so far, as (generation, kind, index) tuples."""

    def read():
        p = tmp_path / "calls.txt"
        if not p.exists():
            return []
        return [tuple(line.split()) for line in p.read_text().splitlines()]

    return read


@pytest.fixture
def cli(home):
    """Invoke the CLI in-process through typer's CliRunner."""
    from typer.testing import CliRunner

    from aigen.cli import app

    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


# -- cluster-mode services (started lazily: only a test that asks for one starts it) ------------------------------

@pytest.fixture(scope="session")
def postgres_server(request):
    """A throwaway PostgreSQL for the whole session (see tests/fakes/cluster_services.py)."""
    from fakes.cluster_services import start_or_skip, start_postgres

    return start_or_skip(request, start_postgres, "PostgreSQL")


@pytest.fixture(scope="session")
def s3_server(request):
    """A SeaweedFS S3 server that checks signatures, for the whole session."""
    from fakes.cluster_services import start_or_skip, start_s3

    return start_or_skip(request, start_s3, "the S3 server (weed mini)")
