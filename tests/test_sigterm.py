"""SIGTERM (kill, timeout, systemctl stop) stops `generate` and `retry` the way Ctrl-C does, with exit 143."""

import os
import signal
import subprocess
import sys
import time

import pytest

from aigen.config import resolve_home
from aigen.errors import Busy
from aigen.pipeline.run import is_running, run_lock
from aigen.store import Store


def _aigen(*args, env):
    return subprocess.Popen([sys.executable, "-m", "aigen", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_until_started(proc, h, *, gid=None, done_at_least=1):
    """Poll (bounded) until the run has finished some assets and is writing the next one."""
    deadline = time.monotonic() + 60
    store = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.stderr.read().decode()}")
        time.sleep(0.05)
        if not h.db_path.exists():
            continue
        store = store or Store(h.db_path)
        rows = store.query("SELECT id FROM generations")
        if not rows:
            continue
        gid = gid or rows[0]["id"]
        assets = store.assets(gid)
        # The run lock held by `proc` itself: rows left "running" by a killed run
        # before it must not count (its SIGTERM handler is in place once it holds the lock).
        if (sum(a["status"] == "done" for a in assets) >= done_at_least
                and any(a["status"] == "running" for a in assets) and is_running(h, gid)):
            return store, gid
    proc.kill()
    pytest.fail("the run never got going")


def _stop_with_sigterm(proc, h, store, gid, calls):
    proc.send_signal(signal.SIGTERM)
    # The run lock is held until the started asset has stopped: while it is held no
    # other process can start, and once it is free nothing more is written.
    deadline = time.monotonic() + 30
    while is_running(h, gid) and time.monotonic() < deadline:
        with pytest.raises(Busy):
            with run_lock(h, gid):
                pass
        time.sleep(0.02)
    assert not is_running(h, gid)
    assert not any(a["status"] == "running" for a in store.assets(gid))
    calls_at_release = len(calls())
    files_at_release = sorted(p.name for p in (h.content_dir / "alice" / gid).iterdir())
    out, err = proc.communicate(timeout=30)
    assert len(calls()) == calls_at_release
    assert sorted(p.name for p in (h.content_dir / "alice" / gid).iterdir()) == files_at_release
    return proc.returncode, out.decode(), err.decode()


def test_sigterm_stops_generate_cleanly_and_retry_finishes_it(home, calls):
    env = dict(os.environ, AIGEN_TEST_DELAY="0.6")
    proc = _aigen("generate", "a slow prompt", "--user", "alice", "--images", "4", "--videos", "0",
                  "--image-provider", "slow", "--image-size", "64x64", "--quiet", env=env)
    h = resolve_home(home)
    store, gid = _wait_until_started(proc, h)
    code, out, err = _stop_with_sigterm(proc, h, store, gid, calls)
    assert code == 143, err
    assert "Traceback" not in err and "Traceback" not in out
    assert "Stopped by SIGTERM" in err
    assert f"aigen retry {gid}" in err
    assets = store.assets(gid)
    done = {a["idx"] for a in assets if a["status"] == "done"}
    # The asset that was being written when the signal came was finished, not abandoned.
    assert len(done) >= 2
    assert not [p for p in (h.content_dir / "alice" / gid).iterdir() if p.name.endswith(".part")]
    assert store.get_generation(gid)["status"] == "Processing"

    calls_before = len(calls())
    r = subprocess.run([sys.executable, "-m", "aigen", "retry", gid, "--quiet"], env=env,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert store.get_generation(gid)["status"] == "Completed"
    redone = sorted(int(c[2]) for c in calls()[calls_before:])
    assert redone == sorted({1, 2, 3, 4} - done)
    # Every image was asked for exactly once over both runs.
    assert sorted(int(c[2]) for c in calls()) == [1, 2, 3, 4]


def test_sigterm_stops_retry_the_same_way(home, calls):
    env = dict(os.environ, AIGEN_TEST_DELAY="0.5")
    h = resolve_home(home)
    # A run killed outright (SIGKILL) leaves a generation for `aigen retry` to resume...
    first = _aigen("generate", "a slow prompt", "--user", "alice", "--images", "5", "--videos", "0",
                   "--image-provider", "slow", "--image-size", "64x64", "--quiet", env=env)
    store, gid = _wait_until_started(first, h)
    first.kill()
    first.wait(timeout=10)
    # ...and SIGTERM stops that retry as cleanly as it stops generate.
    proc = _aigen("retry", gid, env=env)
    store, gid = _wait_until_started(proc, h, gid=gid, done_at_least=2)
    code, out, err = _stop_with_sigterm(proc, h, store, gid, calls)
    assert code == 143, err
    assert "Traceback" not in err and "Traceback" not in out
    assert f"resume with: aigen retry {gid}" in err
    assert not any(a["status"] == "running" for a in store.assets(gid))


def test_the_sigterm_handler_is_restored_after_the_command(cli):
    before = signal.getsignal(signal.SIGTERM)
    r = cli("generate", "a fox", "--user", "alice", "--images", "1", "--videos", "0",
            "--image-provider", "flaky", "--image-size", "64x64", "--quiet")
    assert r.exit_code == 0, r.output
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("source, expected", [("--home", "aigen --home '{path}' retry abc123abc123"),
                                              ("AIGEN_HOME", "aigen retry abc123abc123")])
def test_the_resume_command_after_a_stop_names_the_home_given_with_home(tmp_path, capsys, source, expected):
    from aigen.cli.runview import Terminated, stopped
    from aigen.config import Home

    path = tmp_path / "my home"
    exit_ = stopped("abc123abc123", Terminated(), Home(path, source))
    assert exit_.exit_code == 143
    assert expected.format(path=path) in " ".join(capsys.readouterr().err.split())
