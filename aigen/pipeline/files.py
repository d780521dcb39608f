"""Atomic file placement: a partial file never stands at a final path."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

PART_SUFFIX = ".part"


def temp_path_for(final: Path) -> Path:
    """A unique temporary name in the same directory, so os.replace is a rename."""
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}{PART_SUFFIX}")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def place(tmp: Path, final: Path) -> None:
    """Flush the bytes, then rename over the final name (atomic on POSIX and NTFS)."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_stale_parts(directory: Path) -> int:
    """Delete temporary files a killed run left behind (the caller holds the run lock)."""
    n = 0
    if not directory.is_dir():
        return 0
    for p in directory.iterdir():
        if p.name.startswith(".") and p.name.endswith(PART_SUFFIX):
            if _writer_alive(p.name):
                continue
            try:
                p.unlink()
                n += 1
            except FileNotFoundError:
                pass
    return n


def _writer_alive(name: str) -> bool:
    """Whether the process named in a temporary file's name (".x.PID.HEX.part") still runs.

    Belt and braces: the run lock already keeps two runs apart, but a file a
    live process is writing is never pulled from under it.
    """
    parts = name[: -len(PART_SUFFIX)].split(".")
    try:
        pid = int(parts[-2])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    from aigen.locks import pid_alive

    return pid_alive(pid)


def download_to(storage, key: str, dest: Path) -> None:
    """Copy the object stored under ``key`` into the local file ``dest`` (a temporary the caller removes)."""
    with storage.open(key) as src, open(dest, "wb") as fh:
        for chunk in src:
            fh.write(chunk)
