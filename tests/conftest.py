import os
import signal
import sys
from pathlib import Path

import pytest

# A test run started in the background (`cmd &` in a script, nohup) inherits SIGINT ignored, and so would every
# `aigen` the tests start: the tests that press Ctrl-C on one (SIGINT) would see it ignored. A handler of
# this process's own is reset to the default in a child at exec, where Python then turns SIGINT into
# KeyboardInterrupt as it does for anyone at a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


@pytest.fixture
def pg_database(postgres_server):
    """The URL of a fresh, empty PostgreSQL database of its own for this test (on the session's server)."""
    import uuid

    psycopg = pytest.importorskip("psycopg")
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(postgres_server.url, autocommit=True, connect_timeout=5) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_server.url.rpartition("/")
    yield f"{base}/{name}"
    try:
        with psycopg.connect(postgres_server.url, autocommit=True, connect_timeout=5) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception:  # a leftover database dies with the throwaway server anyway
        pass


@pytest.fixture
def s3_env(s3_server):
    """Environment for AIGEN_STORAGE_URL on the session's S3 server, under a prefix of its own for this test."""
    import uuid

    return {
        "AIGEN_STORAGE_URL": f"s3://{s3_server.bucket}/t/{uuid.uuid4().hex}",
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": s3_server.region,
        "AIGEN_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "AIGEN_S3_CONNECT_TIMEOUT": "2",
        "AIGEN_S3_READ_TIMEOUT": "10",
    }
