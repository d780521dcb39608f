"""Two `aigen generate` processes at once on one database."""

import os
import subprocess
import sys

from aigen.config import resolve_home
from aigen.store import Store


def test_two_generate_processes_share_one_database(home):
    cmd = [sys.executable, "-m", "aigen", "generate", "", "--user", "", "--images", "5", "--videos", "2",
           "--image-size", "96x96", "--video-size", "96x64", "--duration", "1", "--quiet"]
    procs = []
    for user, prompt in (("alice", "a red fox at dawn"), ("bob", "blue ocean waves at night")):
        c = list(cmd)
        c[4], c[6] = prompt, user
        procs.append(subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=dict(os.environ)))
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "locked" not in err.lower() and "locked" not in out.lower()
    store = Store(resolve_home(home).db_path)
    gens = store.list_generations()
    assert sorted(g["user_id"] for g in gens) == ["alice", "bob"]
    assert all(g["status"] == "Completed" for g in gens)
    assert all(len(g["image_paths"]) == 5 and len(g["video_paths"]) == 2 for g in gens)
