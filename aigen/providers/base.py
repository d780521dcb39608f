"""The provider interface and the registry.

A provider makes one asset: one image or one video for a prompt, a seed and a
size, written to a path the pipeline chooses (a temporary file beside the
final one). It says which keys it needs and how many calls may run at once.
The pipeline owns everything around the call: threads, the database,
checking the file and moving it into place.

Providers are registered lazily by name -> "module:Class" so that listing
them (or `aigen --help`) never imports an SDK.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Protocol

from aigen.errors import BadInput, MissingKey


@dataclass(frozen=True)
class AssetRequest:
    kind: str  # "image" | "video"
    prompt: str
    index: int  # 1-based within its kind
    seed: int
    width: int
    height: int
    generation_id: str
    model: str | None = None
    duration: float | None = None  # videos only
    fps: int = 24  # videos only
    provider_job_id: str | None = None  # set when resuming an async job
    options: dict = field(default_factory=dict)


@dataclass
class AssetOutput:
    """What a provider reports about the file it wrote."""

    format: str  # "png" | "jpeg" | "mp4"
    model: str | None = None
    cost: float | None = None  # in US dollars, when the provider says


class Reporter(Protocol):
    def save_job_id(self, job_id: str) -> None: ...

    def progress(self, fraction: float) -> None: ...


class NullReporter:
    def save_job_id(self, job_id: str) -> None:
        pass

    def progress(self, fraction: float) -> None:
        pass


class Provider:
    """Base class. Subclasses set the class attributes and implement generate()."""

    name: ClassVar[str] = ""
    kinds: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = ""
    # Each entry is a tuple of alternatives: any one of them set is enough.
    key_env: ClassVar[tuple[tuple[str, ...], ...]] = ()
    default_models: ClassVar[dict[str, str]] = {}
    # The default cap on calls running at once; AIGEN_<NAME>_CONCURRENCY or
    # config.toml may set another (see concurrency_cap()).
    concurrency: ClassVar[int] = 2
    # True only for a provider that always makes exactly the asked size and
    # length (`local`): the pipeline may then refuse a file of any other size
    # as broken. Otherwise a valid file of another size was paid for: it is
    # kept, with its real size and a note saying how it differs from the ask.
    guarantees_size: ClassVar[bool] = False
    # True only for a provider that costs nothing to call again (`local`): a
    # cluster worker that takes over the job of a dead one simply remakes it.
    # Otherwise a call cut off mid-way may have been billed: it is not sent again.
    free: ClassVar[bool] = False
    # True for a provider that takes model-specific inputs passed through with
    # `--image-option KEY=VALUE` / `--video-option KEY=VALUE` (fal, comfyui).
    # Its check_request() validates them; any other provider refuses them.
    takes_options: ClassVar[bool] = False

    def __init__(self, env: dict | None = None, home: Path | None = None):
        self.env = dict(os.environ if env is None else env)
        self.home = home

    def lookup_key(self, var: str) -> str | None:
        """A key from the environment, else from the keys file in the home."""
        value = self.env.get(var)
        if value:
            return value
        if self.home is not None:
            try:
                from aigen.keys import read_keys

                return read_keys(self.home).get(var) or None
            except ImportError:  # keys storage not present
                return None
        return None

    def missing_keys(self) -> list[str]:
        missing = []
        for alternatives in self.key_env:
            if not any(self.lookup_key(v) for v in alternatives):
                missing.append(" or ".join(alternatives))
        return missing

    def concurrency_cap(self) -> tuple[int, str]:
        """The cap in force and where it came from: "env AIGEN_X_CONCURRENCY", "config.toml" or "default"."""
        from aigen.config import concurrency_cap

        return concurrency_cap(self.name, type(self).concurrency, env=self.env, home=self.home)

    def check_ready(self, kind: str) -> None:
        """Raise before anything is written if this provider cannot make `kind`."""
        self.concurrency_cap()  # a bad cap setting stops here (exit 2), not mid-run
        if kind not in self.kinds:
            makes = " and ".join(f"{k}s" for k in sorted(self.kinds)) or "nothing"
            raise BadInput(f"provider {self.name!r} cannot make {kind}s (it makes {makes})")
        missing = self.missing_keys()
        if missing:
            raise MissingKey(
                f"provider {self.name!r} needs {missing[0]}, which is not set",
                hint=f"export {missing[0].split(' or ')[0]}=... or run `aigen keys set {self.name}`",
            )

    @staticmethod
    def pass_options(kind: str, options: dict | None) -> dict:
        """The `--image-option` / `--video-option` values of a request for `kind` (empty when none)."""
        return dict((options or {}).get(f"{kind}_options") or {})

    def model_for(self, kind: str, requested: str | None) -> str | None:
        return requested or self.default_models.get(kind)

    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        raise NotImplementedError(f"{type(self).__name__}.generate")


# name -> "module:Class"; tests and plugins may add entries with register().
_REGISTRY: dict[str, str | type[Provider]] = {
    "local": "aigen.providers.local:LocalProvider",
    "openai": "aigen.providers.openai_images:OpenAIImages",
    "stability": "aigen.providers.stability:StabilityImages",
    "runway": "aigen.providers.runway:RunwayProvider",
    "pictory": "aigen.providers.pictory:PictoryVideos",
    "comfyui": "aigen.providers.comfyui:ComfyUIProvider",
    "fal": "aigen.providers.fal:FalProvider",
    "gemini": "aigen.providers.gemini:GeminiProvider",
}


PLUGINS_ENV = "AIGEN_PROVIDER_PLUGINS"


def _plugins_from_env() -> dict[str, str]:
    """Extra providers named in AIGEN_PROVIDER_PLUGINS as "name=module:Class,...".

    This is how a third-party provider (or a test's fake) is made available to
    every aigen process, including detached runs, without editing aigen.
    """
    extra = {}
    for item in os.environ.get(PLUGINS_ENV, "").split(","):
        name, sep, target = item.strip().partition("=")
        if sep and name and ":" in target:
            extra[name.strip()] = target.strip()
    return extra


def register(name: str, target: str | type[Provider]) -> None:
    _REGISTRY[name] = target


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def provider_names() -> list[str]:
    return list({**_plugins_from_env(), **_REGISTRY})


def provider_class(name: str) -> type[Provider]:
    target = _REGISTRY.get(name) or _plugins_from_env().get(name)
    if target is None:
        raise BadInput(f"unknown provider {name!r}: choose one of {', '.join(provider_names())}")
    if isinstance(target, str):
        module, _, cls = target.partition(":")
        target = getattr(importlib.import_module(module), cls)
    return target


def get_provider(name: str, *, env: dict | None = None, home: Path | None = None) -> Provider:
    return provider_class(name)(env=env, home=home)


ProgressFn = Callable[[float], None]
