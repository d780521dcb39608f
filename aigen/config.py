"""Where aigen keeps its data, and the limits every input is checked against.

The home directory holds ``aigen.db`` and ``generated_content/``. It is chosen
by the global ``--home`` flag, then ``AIGEN_HOME``, then the per-user data
directory of the platform (platformdirs), so that a pipx install never writes
into whatever directory the user happens to be in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from aigen.errors import BadInput

APP_NAME = "aigen"
DB_NAME = "aigen.db"
CONTENT_DIR = "generated_content"

USER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
USER_ID_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
PROMPT_MAX = 4000
MAX_COUNT = 10
DEFAULT_IMAGES = 5
DEFAULT_VIDEOS = 5
DEFAULT_IMAGE_SIZE = "1024x1024"
DEFAULT_VIDEO_SIZE = "1280x720"
DEFAULT_DURATION = 4.0
DEFAULT_FPS = 24


@dataclass(frozen=True)
class Home:
    """The resolved home directory and how it was chosen (shown by `aigen status`)."""

    path: Path
    source: str  # "--home", "AIGEN_HOME" or "default"

    @property
    def db_path(self) -> Path:
        return self.path / DB_NAME

    @property
    def content_dir(self) -> Path:
        return self.path / CONTENT_DIR

    def writable(self) -> bool:
        """Whether files can be created in the home (False on a read-only mount, even for root)."""
        try:
            if os.statvfs(self.path).f_flag & os.ST_RDONLY:
                return False
        except (OSError, AttributeError):
            pass
        return os.access(self.path, os.W_OK | os.X_OK)

    def read_only_mount(self) -> bool:
        try:
            return bool(os.statvfs(self.path).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            return False

    def ensure(self) -> None:
        """Create the home (mode 0700: prompts, emails and files are private) and its content folder."""
        from aigen.errors import describe_os_error, read_only_home

        if self.path.is_dir() and self.read_only_mount():
            raise read_only_home(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.content_dir.mkdir(exist_ok=True, mode=0o700)
        except FileExistsError:
            raise BadInput(f"invalid home {str(self.path)!r} (from {self.source}): it exists and is not a directory",
                           hint="choose a directory with --home DIR or AIGEN_HOME") from None
        except OSError as e:
            known = describe_os_error(e, self.path)
            if known is not None:
                raise known from None
            raise BadInput(f"cannot use home {str(self.path)!r} (from {self.source}): {e.strerror or e}",
                           hint="choose a directory you can write with --home DIR or AIGEN_HOME") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            if self.read_only_mount():
                raise read_only_home(self.path)
            raise BadInput(f"cannot use home {str(self.path)!r} (from {self.source}): it is not writable",
                           hint="choose a directory you can write with --home DIR or AIGEN_HOME")


def default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def resolve_home(flag: str | os.PathLike | None = None) -> Home:
    if flag is not None and not str(flag).strip():
        raise BadInput("invalid --home '': give a directory")
    if flag:
        return Home(Path(flag).expanduser().resolve(), "--home")
    env = os.environ.get("AIGEN_HOME")
    if env:
        return Home(Path(env).expanduser().resolve(), "AIGEN_HOME")
    return Home(default_home(), "default")


def validate_user_id(user_id: str) -> str:
    """user_id meets the file system, the database and URLs: accept only a safe alphabet."""
    if not isinstance(user_id, str) or not USER_ID_RE.fullmatch(user_id):
        raise BadInput(f"invalid user_id {user_id!r}: must be {USER_ID_RULE}")
    return user_id


def validate_prompt(prompt: str) -> str:
    if prompt is None or not prompt.strip():
        raise BadInput("invalid prompt: it is empty or only whitespace")
    if len(prompt) > PROMPT_MAX:
        raise BadInput(f"invalid prompt: {len(prompt)} characters, the limit is {PROMPT_MAX}")
    for i, ch in enumerate(prompt):
        code = ord(ch)
        if (code < 32 and ch not in "\n\t\r") or 0x7F <= code <= 0x9F:
            raise BadInput(
                f"invalid prompt: control character {ch!r} at position {i}; "
                "only printable text, tabs and newlines are allowed"
            )
    return prompt.strip()


def validate_count(name: str, value: int) -> int:
    if not 0 <= value <= MAX_COUNT:
        raise BadInput(f"invalid {name} {value}: must be between 0 and {MAX_COUNT}")
    return value


_SIZE_RE = re.compile(r"^\s*(\d{1,9})\s*[xX×]\s*(\d{1,9})\s*$")


def parse_size(name: str, text: str, *, even: bool = False, lo: int = 64, hi: int = 4096) -> tuple[int, int]:
    """Parse 'WxH'. Videos need even sides because yuv420p halves the chroma planes."""
    m = _SIZE_RE.match(text or "")
    if not m:
        raise BadInput(f"invalid {name} {text!r}: expected WIDTHxHEIGHT, for example 1024x1024")
    w, h = int(m.group(1)), int(m.group(2))
    if not (lo <= w <= hi and lo <= h <= hi):
        raise BadInput(f"invalid {name} {text!r}: each side must be between {lo} and {hi} pixels")
    if even and (w % 2 or h % 2):
        raise BadInput(f"invalid {name} {text!r}: width and height must be even for H.264 yuv420p")
    return w, h


def validate_duration(value: float) -> float:
    if not (0.5 <= value <= 60):
        raise BadInput(f"invalid --duration {value:g}: must be between 0.5 and 60 seconds")
    return float(value)
