"""Advisory file locks that the OS releases when their process dies, even on SIGKILL.

They mark "some process is working on this" (a generation's run, a notify
daemon) without pid files that go stale.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_held(path: Path) -> bool:
    """True when some process holds an exclusive flock on `path` (False if it does not exist).

    Needs fcntl (POSIX); callers on other platforms decide what "unknown" means.
    """
    import fcntl

    try:
        fh = open(path, "r")
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


def is_running(home, gen_id: str) -> bool:
    """True when some process holds the run lock of this generation (aigen.pipeline.run.run_lock).

    Here, not in aigen.pipeline.run, so that `aigen status` can ask without importing the
    pipeline (its providers, thread pools and media checks) at start-up.
    """
    return run_lock_held(home.path, gen_id)


def run_lock_held(home_path, gen_id: str) -> bool:
    """is_running, for a home given by its path (the gallery's stalled check)."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - Windows: cannot tell, assume it runs
        return True
    from pathlib import Path

    return is_held(Path(home_path) / "locks" / f"{gen_id}.lock")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True
