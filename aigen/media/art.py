"""Prompt-driven procedural art for the offline ``local`` provider.

This is an honest procedural renderer, not an AI model: the words of a prompt
pick a palette (colour words and mood/scene words, else a hash of the prompt)
and a composition (mountains, waves, city, orbs, flow, tiles, stripes,
starfield), and a seeded generator fills in the layout. Every random choice is
derived from sha256 of the normalised prompt, the seed and the index (never
Python's per-process randomised ``hash()``), so a request always gives the same
pixels, and the indices of one prompt are visibly different variants.

Drawing is vectorised numpy at the output size with analytic anti-aliasing
(signed distances turned into fractional pixel coverage) rather than 2x
supersampling of everything, which keeps a 1024x1024 image far below half a
second; only free-hand strokes are drawn with PIL, into 2x coverage masks that
are box-reduced to 1x. :mod:`aigen.media.video` reuses :func:`plan_for`,
:func:`paint` and :func:`finish` once per clip and animates on top of the result.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import re
import struct
import zlib
from dataclasses import dataclass, replace
from os import PathLike

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

F32 = np.float32
TAU = 2.0 * math.pi

COMPOSITIONS = ("mountains", "waves", "city", "orbs", "flow", "tiles", "stripes", "starfield")

# ----------------------------------------------------------------------------
# Vocabulary. Colours are sRGB 0..255.

COLOUR_WORDS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 45), "crimson": (180, 20, 60), "scarlet": (230, 40, 30),
    "ruby": (170, 15, 50), "maroon": (110, 20, 35), "burgundy": (120, 25, 50),
    "orange": (245, 125, 30), "amber": (245, 170, 40), "coral": (250, 110, 90),
    "peach": (255, 180, 140), "yellow": (245, 215, 50), "gold": (225, 170, 50),
    "golden": (225, 170, 50), "green": (45, 160, 70), "emerald": (20, 150, 100),
    "lime": (150, 220, 50), "olive": (120, 130, 40), "mint": (150, 230, 190),
    "jade": (0, 168, 107), "teal": (20, 140, 140), "turquoise": (40, 200, 190),
    "cyan": (40, 210, 230), "aqua": (60, 220, 220), "blue": (35, 85, 215),
    "navy": (20, 35, 100), "azure": (50, 140, 240), "cobalt": (20, 70, 180),
    "sapphire": (15, 60, 160), "indigo": (60, 40, 150), "purple": (130, 50, 180),
    "violet": (150, 80, 220), "lavender": (180, 160, 230), "lilac": (200, 160, 220),
    "magenta": (220, 40, 170), "fuchsia": (230, 50, 180), "pink": (245, 120, 170),
    "rose": (230, 90, 130), "brown": (120, 75, 40), "bronze": (170, 110, 50),
    "copper": (190, 100, 50), "rust": (170, 70, 30), "beige": (220, 200, 160),
    "tan": (210, 180, 140), "black": (12, 12, 16), "white": (245, 245, 245),
    "grey": (130, 130, 135), "gray": (130, 130, 135), "silver": (190, 195, 205),
    "charcoal": (45, 45, 50),
}

# Each scene: (sky_top, horizon, accent, mid, deep).
_SCENES: dict[str, tuple] = {
    "dawn": ((48, 52, 110), (250, 180, 150), (255, 228, 175), (150, 110, 150), (40, 35, 70)),
    "sunset": ((45, 30, 90), (250, 125, 60), (255, 215, 125), (160, 60, 85), (35, 20, 45)),
    "dusk": ((22, 26, 72), (205, 112, 140), (255, 205, 170), (85, 62, 112), (20, 18, 40)),
    "night": ((5, 8, 28), (32, 52, 104), (232, 236, 255), (26, 36, 72), (5, 8, 18)),
    "ocean": ((40, 120, 200), (175, 222, 240), (255, 250, 232), (22, 112, 162), (5, 40, 80)),
    "forest": ((70, 120, 100), (196, 218, 172), (242, 236, 182), (42, 102, 62), (10, 35, 25)),
    "fire": ((42, 6, 6), (255, 122, 22), (255, 232, 125), (200, 42, 22), (25, 5, 5)),
    "snow": ((150, 180, 215), (236, 242, 250), (255, 255, 255), (170, 190, 215), (70, 90, 122)),
    "desert": ((92, 150, 210), (250, 216, 162), (255, 242, 205), (222, 150, 90), (122, 62, 36)),
    "city": ((18, 20, 46), (122, 82, 142), (255, 202, 102), (52, 50, 82), (12, 12, 26)),
    "neon": ((16, 6, 42), (255, 42, 162), (42, 240, 255), (92, 30, 152), (10, 5, 26)),
    "space": ((6, 6, 22), (62, 32, 112), (232, 202, 255), (42, 62, 142), (2, 2, 10)),
    "storm": ((40, 45, 56), (142, 152, 162), (232, 236, 255), (72, 80, 96), (20, 22, 28)),
    "autumn": ((92, 112, 152), (250, 192, 122), (255, 222, 152), (200, 92, 42), (72, 30, 20)),
    "spring": ((122, 182, 232), (242, 222, 232), (255, 242, 152), (122, 192, 112), (40, 92, 62)),
    "aurora": ((5, 16, 36), (42, 202, 152), (152, 255, 202), (62, 52, 142), (5, 10, 20)),
    "mist": ((172, 176, 196), (236, 229, 226), (255, 250, 240), (150, 150, 176), (80, 80, 106)),
    "rainbow": ((92, 42, 172), (250, 218, 62), (242, 72, 60), (62, 182, 92), (32, 82, 202)),
}

_TIMES_OF_DAY = {"dawn", "sunset", "dusk", "night", "aurora"}

_SCENE_ALIASES = {
    "sunrise": "dawn", "morning": "dawn", "daybreak": "dawn",
    "sundown": "sunset", "evening": "sunset", "twilight": "dusk",
    "midnight": "night", "moonlight": "night", "moonlit": "night",
    "sea": "ocean", "beach": "ocean", "water": "ocean", "lake": "ocean", "tropical": "ocean",
    "jungle": "forest", "wood": "forest", "woods": "forest", "tree": "forest", "pine": "forest",
    "flame": "fire", "lava": "fire", "volcano": "fire", "inferno": "fire", "ember": "fire",
    "winter": "snow", "ice": "snow", "frost": "snow", "arctic": "snow", "glacier": "snow",
    "sand": "desert", "dune": "desert", "canyon": "desert", "sahara": "desert",
    "urban": "city", "cyberpunk": "neon", "synthwave": "neon", "vaporwave": "neon",
    "galaxy": "space", "cosmos": "space", "cosmic": "space", "nebula": "space", "universe": "space",
    "thunder": "storm", "rain": "storm", "lightning": "storm", "cloud": "storm",
    "fall": "autumn", "garden": "spring", "flower": "spring", "meadow": "spring", "blossom": "spring",
    "fog": "mist", "dream": "mist", "calm": "mist", "haze": "mist",
}

_COMPOSITION_WORDS: dict[str, tuple[str, ...]] = {
    "mountains": ("mountain", "hill", "peak", "valley", "alp", "alps", "landscape", "cliff",
                  "summit", "ridge", "highland", "volcano", "forest", "tree", "pine", "wood",
                  "woods", "jungle", "dune", "desert", "canyon", "glacier"),
    "waves": ("wave", "ocean", "sea", "water", "river", "lake", "surf", "beach", "tide",
              "shore", "coast", "harbor", "harbour", "bay"),
    "city": ("city", "building", "skyline", "tower", "street", "urban", "town", "skyscraper",
             "metropolis", "downtown", "cyberpunk"),
    "orbs": ("circle", "sun", "moon", "orb", "planet", "bubble", "sphere", "ball", "dot",
             "eclipse"),
    "flow": ("wind", "flow", "smoke", "swirl", "hair", "silk", "current", "breeze", "storm",
             "fluid", "feather", "ink"),
    "tiles": ("geometric", "pattern", "tile", "grid", "mosaic", "bauhaus", "abstract", "shape",
              "cube", "square", "triangle"),
    "stripes": ("stripe", "line", "band", "rainbow", "psychedelic", "ripple", "retro",
                "groovy", "hypnotic", "spiral"),
    "starfield": ("star", "space", "galaxy", "cosmos", "universe", "nebula", "constellation",
                  "night", "astronaut"),
}
_LANDSCAPES = ("mountains", "waves", "city")

_VOCAB = (
    set(COLOUR_WORDS)
    | set(_SCENES)
    | set(_SCENE_ALIASES)
    | {w for ws in _COMPOSITION_WORDS.values() for w in ws}
)

_WORD = re.compile(r"[a-z]+")


def _canon(word: str) -> str:
    """Fold simple English plurals so "mountains" steers like "mountain"."""
    if word in _VOCAB:
        return word
    candidates = []
    if word.endswith("y") and len(word) > 4:  # misty -> mist, sunny -> sun
        candidates += [word[:-1], word[:-2]]
    if word.endswith("ies") and len(word) > 4:
        candidates.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        candidates.append(word[:-2])
    if word.endswith("s") and len(word) > 3:
        candidates.append(word[:-1])
    for c in candidates:
        if c in _VOCAB:
            return c
    return word


def prompt_words(prompt: str) -> list[str]:
    """Lower-cased, plural-folded words of a prompt, in order."""
    return [_canon(w) for w in _WORD.findall(prompt.lower())]


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from sha256, stable across processes, machines and Python versions."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def make_rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(stable_seed(*parts))


# ----------------------------------------------------------------------------
# Colour helpers


def _rgb(c) -> np.ndarray:
    return np.asarray(c, dtype=F32) / 255.0


def _hls(h: float, l: float, s: float) -> np.ndarray:
    return np.asarray(
        colorsys.hls_to_rgb(h % 1.0, min(max(l, 0.0), 1.0), min(max(s, 0.0), 1.0)), dtype=F32
    )


def _to_hls(c: np.ndarray) -> tuple[float, float, float]:
    return colorsys.rgb_to_hls(*(float(v) for v in np.clip(c, 0.0, 1.0)))


def _mix(a, b, t: float) -> np.ndarray:
    a = np.asarray(a, F32)
    return (a + (np.asarray(b, F32) - a) * F32(t)).astype(F32)


def _luma(c: np.ndarray) -> float:
    return float(0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2])


def _lighten(c: np.ndarray, amount: float) -> np.ndarray:
    h, l, s = _to_hls(c)
    return _hls(h, l + (1.0 - l) * amount, s)


def _darken(c: np.ndarray, amount: float) -> np.ndarray:
    h, l, s = _to_hls(c)
    return _hls(h, l * (1.0 - amount), s)


@dataclass(frozen=True)
class Palette:
    """Five colours with roles, so every composition can use any palette.

    ``sky_top`` and ``horizon`` span backgrounds, ``accent`` is the light source
    (sun, glints, lit windows), ``mid`` and ``deep`` are the bodies of forms from
    far to near.
    """

    sky_top: np.ndarray
    horizon: np.ndarray
    accent: np.ndarray
    mid: np.ndarray
    deep: np.ndarray

    def swatches(self) -> list[np.ndarray]:
        return [self.accent, self.horizon, self.mid, self.sky_top, self.deep]

    @property
    def dark(self) -> bool:
        return _luma(self.sky_top) < 0.22

    def shifted(self, hue: float, light: float = 0.0) -> "Palette":
        def f(c: np.ndarray) -> np.ndarray:
            h, l, s = _to_hls(c)
            return _hls(h + hue, l + light * (1.0 - l if light > 0 else l), s)

        return Palette(*(f(c) for c in (self.sky_top, self.horizon, self.accent, self.mid, self.deep)))

    def blended(self, other: "Palette", t: float) -> "Palette":
        return Palette(
            *(_mix(a, b, t) for a, b in zip(
                (self.sky_top, self.horizon, self.accent, self.mid, self.deep),
                (other.sky_top, other.horizon, other.accent, other.mid, other.deep),
            ))
        )


def _palette_from_colours(cols: list[np.ndarray]) -> Palette:
    """Build a whole palette around the first colour word so it dominates the image."""
    c = cols[0]
    h, l, s = _to_hls(c)
    if s < 0.12:
        if l < 0.2:  # black
            pal = Palette(_rgb((4, 4, 6)), _rgb((58, 58, 64)), _rgb((232, 232, 236)),
                          _rgb((28, 28, 32)), _rgb((2, 2, 3)))
        elif l > 0.85:  # white
            pal = Palette(_rgb((196, 204, 216)), _rgb((250, 250, 252)), _rgb((255, 252, 240)),
                          _rgb((214, 218, 226)), _rgb((140, 146, 160)))
        else:  # grey / silver
            pal = Palette(_rgb((84, 86, 92)), _rgb((200, 202, 206)), _rgb((246, 246, 248)),
                          _rgb((128, 130, 136)), _rgb((36, 38, 42)))
    else:
        s2 = max(s, 0.6)
        pal = Palette(
            sky_top=_hls(h, 0.2, s2 * 0.9),
            horizon=_hls(h + 0.015, 0.64, s2),
            accent=_hls(h + 0.035, 0.86, min(1.0, s2 + 0.2)),
            mid=_hls(h, 0.42, s2),
            deep=_hls(h - 0.01, 0.1, s2 * 0.85),
        )
    if len(cols) > 1:
        c2 = cols[1]
        pal = replace(pal, accent=_lighten(c2, 0.35), horizon=_mix(pal.horizon, c2, 0.55))
    if len(cols) > 2:
        pal = replace(pal, mid=_mix(pal.mid, cols[2], 0.6))
    return pal


def _palette_from_hash(r: np.random.Generator) -> Palette:
    """A harmonious palette from a seeded hue scheme, for prompts with no colour or scene word."""
    h = float(r.random())
    scheme = int(r.integers(4))
    o1, o2 = ((0.06, 0.12), (0.5, 0.46), (0.42, 0.58), (0.33, 0.67))[scheme]
    sat = float(r.uniform(0.45, 0.85))
    if r.random() < 0.3:  # light, pastel
        return Palette(_hls(h, 0.62, sat * 0.7), _hls(h + o1, 0.86, sat), _hls(h + o2, 0.8, sat),
                       _hls(h + o1, 0.66, sat), _hls(h, 0.36, sat * 0.8))
    return Palette(_hls(h, 0.16, sat * 0.8), _hls(h + o1, 0.66, sat), _hls(h + o2, 0.78, min(1, sat + 0.2)),
                   _hls(h + o1, 0.4, sat), _hls(h, 0.08, sat * 0.7))


# ----------------------------------------------------------------------------
# The plan: every prompt-level decision, shared by the still and the video path.


@dataclass(frozen=True)
class Plan:
    """Every decision that depends on the prompt, made once.

    Stills and clips both start from a plan, so a video of a prompt shows the
    same kind of scene in the same colours as its images; painters draw only
    layout details from :meth:`rng`, salted per painter so adding a random draw
    in one composition does not reshuffle another.
    """

    key: str
    seed: int
    index: int
    composition: str
    variant: int
    palette: Palette
    scene: str | None
    celestial: str | None  # "sun" | "moon" | None
    stars: bool
    words: frozenset[str]

    def rng(self, salt: str) -> np.random.Generator:
        return make_rng(self.key, self.seed, self.index, salt)


def plan_for(prompt: str, seed: int, index: int) -> Plan:
    """Decide palette, composition, variant and decorations for one (prompt, seed, index)."""
    key = " ".join(prompt.lower().split())
    words = prompt_words(prompt)
    wset = frozenset(words)
    base = make_rng(key, seed, "palette")
    vary = make_rng(key, seed, index, "vary")

    colours = [_rgb(COLOUR_WORDS[w]) for w in words if w in COLOUR_WORDS]
    scenes: list[str] = []
    for w in words:
        s = w if w in _SCENES else _SCENE_ALIASES.get(w)
        if s and s not in scenes:
            scenes.append(s)
    scene = scenes[0] if scenes else None
    scene_pal = None
    if scenes:
        times = [s for s in scenes if s in _TIMES_OF_DAY]
        places = [s for s in scenes if s not in _TIMES_OF_DAY]
        if times and places:
            # "a sea at sunset": the time of day lights the sky, the place keeps its ground.
            tp, pp = (Palette(*(_rgb(c) for c in _SCENES[x])) for x in (times[0], places[0]))
            scene_pal = Palette(tp.sky_top, tp.horizon, tp.accent, _mix(pp.mid, tp.mid, 0.3),
                                _mix(pp.deep, tp.deep, 0.3))
            scene = places[0]
        else:
            scene_pal = Palette(*(_rgb(c) for c in _SCENES[scenes[0]]))
    if scene_pal is not None and colours:
        pal = scene_pal.blended(_palette_from_colours(colours), 0.65)
    elif scene_pal is not None:
        pal = scene_pal
    elif colours:
        pal = _palette_from_colours(colours)
    else:
        pal = _palette_from_hash(base)
    # Indices shift the palette a little; colour words keep a tighter range so
    # "a red ..." stays red in every variant.
    amp = 0.035 if colours else 0.07
    pal = pal.shifted(float(vary.uniform(-amp, amp)), float(vary.uniform(-0.08, 0.08)))

    found: list[str] = []
    for w in words:
        for comp, ws in _COMPOSITION_WORDS.items():
            if w in ws and comp not in found:
                found.append(comp)
    landscapes = [c for c in found if c in _LANDSCAPES]
    if landscapes:
        choices = landscapes
    elif found:
        choices = found
    else:
        order = list(COMPOSITIONS)
        make_rng(key, seed, "order").shuffle(order)
        choices = order
    composition = choices[(index - 1) % len(choices)]
    # Within one composition, consecutive indices walk through the variants so
    # neighbours in a gallery never share a layout family.
    variant = int((stable_seed(key, seed, "variant") + index) % 3)

    if wset & {"sun", "sunset", "sunrise", "dawn", "sundown", "daybreak"}:
        celestial = "sun"
    elif wset & {"moon", "moonlight", "moonlit", "night", "midnight"}:
        celestial = "moon"
    else:
        roll = float(vary.random())
        celestial = None if roll < 0.3 else ("moon" if pal.dark else "sun")
    stars = bool(wset & {"star", "night", "midnight", "space", "galaxy", "cosmos", "constellation"}) or (
        pal.dark and float(vary.random()) < 0.7
    )
    return Plan(key, seed, index, composition, variant, pal, scene, celestial, stars, wset)


# ----------------------------------------------------------------------------
# Canvas and drawing primitives (all float32, 0..1, anti-aliased analytically)


@dataclass
class Layers:
    """A painted scene: background and, in split mode, a separate nearest layer.

    The video renderer moves the front layer faster than the background for
    parallax; stills are painted with ``split=False`` and have ``fg=None``.
    """

    bg: np.ndarray
    fg: np.ndarray | None = None
    fg_alpha: np.ndarray | None = None


# ----------------------------------------------------------------------------
# Pixel arithmetic
#
# numpy is slow when an operand is broadcast along the last axis of an (h, w, 3)
# image (a colour (3,) or a coverage (h, w)[..., None]): its inner loop then runs
# over 3 values at a time, ~10x slower than over a whole row. So the hot paths
# view an image as rows of 3w values (`_flat`) and spell colours and coverages out
# along that row (`_tile`, np.repeat), and work a block of rows at a time so that
# the temporaries stay in the CPU cache. The arithmetic per value is unchanged.


def _rows_per_block(w: int) -> int:
    """Rows of a (h, w, 3) float32 image in ~256 KiB: big areas are done a block at a time, in cache."""
    return max(1, (256 << 10) // (w * 3 * 4))


def _flat(a: np.ndarray) -> np.ndarray:
    """An (n, w, 3) image, or a column range of one, as an (n, 3w) view (never a copy)."""
    v = a.view()
    v.shape = (a.shape[0], a.shape[1] * a.shape[2])
    return v


def _tile(colour, w: int) -> np.ndarray:
    """A colour (3,) as a row of w pixels, (3w,)."""
    return np.tile(np.asarray(colour, F32), w)


def _fill_rows(dst: np.ndarray, colours: np.ndarray) -> None:
    """dst (n, w, 3)[r, x] = colours (n, 3)[r] for every x: the first column, then copies doubling it.

    Each copy moves whole runs of a row (no 3-value inner loop) and lets other
    threads run (np.tile held the interpreter lock throughout).
    """
    w = dst.shape[1]
    dst[:, 0] = colours
    k = 1
    while k < w:
        n = min(k, w - k)
        dst[:, k:k + n] = dst[:, :n]
        k += n


def _over(region: np.ndarray, colour, alpha: np.ndarray) -> None:
    """region += (colour - region) * alpha, in place: colour (3,), (n, 1, 3) or (n, w, 3); alpha (n, w)."""
    n, w = region.shape[:2]
    colour = np.asarray(colour, F32)
    alpha = np.broadcast_to(alpha, (n, w))
    if colour.ndim == 1:
        row = _tile(colour, w)[None, :]
    step = _rows_per_block(w)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        if colour.ndim == 1:
            c = row
        elif colour.shape[1] == 1:
            c = np.empty((r1 - r0, w, 3), F32)
            _fill_rows(c, colour[r0:r1, 0, :])
            c = _flat(c)
        else:
            c = colour[r0:r1].reshape(r1 - r0, 3 * w)
        dst = _flat(region[r0:r1])
        dst += (c - dst) * np.repeat(alpha[r0:r1], 3, axis=1)


class _Canvas:
    def __init__(self, w: int, h: int, split: bool):
        self.w, self.h = w, h
        self.s = float(min(w, h))
        self.px = self.s / 1024.0  # scale of "one pixel at 1024"
        self.img = np.zeros((h, w, 3), F32)
        self.ys = np.arange(h, dtype=F32)[:, None] + F32(0.5)
        self.xs = np.arange(w, dtype=F32)[None, :] + F32(0.5)
        self.split = split
        self.fg: np.ndarray | None = None
        self.fg_alpha: np.ndarray | None = None

    def layer(self, y0: int, y1: int, colour, alpha: np.ndarray, front: bool = False) -> None:
        """Composite a colour (constant, per row or per pixel) with coverage ``alpha`` over rows y0:y1."""
        if y1 <= y0:
            return
        colour = np.asarray(colour, F32)
        if front and self.split:
            self.fg = np.zeros_like(self.img)
            self.fg_alpha = np.zeros((self.h, self.w), F32)
            self.fg[y0:y1] = np.broadcast_to(colour, self.fg[y0:y1].shape)
            self.fg_alpha[y0:y1] = alpha
            return
        _over(self.img[y0:y1], colour, alpha)


def _smoothstep(e0: float, e1: float, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _bbox(cv: _Canvas, cx: float, cy: float, rx: float, ry: float | None = None):
    ry = rx if ry is None else ry
    x0, x1 = max(int(cx - rx) - 2, 0), min(int(cx + rx) + 3, cv.w)
    y0, y1 = max(int(cy - ry) - 2, 0), min(int(cy + ry) + 3, cv.h)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, x1, y0, y1


def _vgrad(cv: _Canvas, stops: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """A per-row colour column (h,1,3) through (row, colour) stops, eased between stops."""
    pos = np.array([p for p, _ in stops], dtype=np.float64)
    cols = np.array([c for _, c in stops], dtype=np.float64)
    y = cv.ys[:, 0].astype(np.float64)
    seg = np.clip(np.searchsorted(pos, y) - 1, 0, len(pos) - 2)
    span = np.maximum(pos[seg + 1] - pos[seg], 1e-6)
    t = np.clip((y - pos[seg]) / span, 0.0, 1.0)
    t = t * t * (3 - 2 * t)
    out = cols[seg] + (cols[seg + 1] - cols[seg]) * t[:, None]
    return out[:, None, :].astype(F32)


def _fill_linear(cv: _Canvas, angle: float, c0, c1) -> None:
    ca, sa = math.cos(angle), math.sin(angle)
    t = (cv.xs - cv.w / 2) * ca + (cv.ys - cv.h / 2) * sa
    half = 0.5 * (abs(ca) * cv.w + abs(sa) * cv.h)
    t = np.clip(t / (2 * half) + 0.5, 0, 1)
    t = t * t * (3 - 2 * t)
    c0 = np.asarray(c0, F32)
    cv.img[:] = c0 + (np.asarray(c1, F32) - c0) * t[..., None]


def _glow(cv: _Canvas, cx: float, cy: float, sigma: float, colour, strength: float,
          sigma_y: float | None = None, y_min: int = 0, target: np.ndarray | None = None) -> None:
    """Gaussian light, screen-blended: the soft halo that makes suns and orbs feel luminous.

    The gaussian is separable: one row and one column of exponentials, their
    product taken a block of rows at a time (a sky-wide glow covers the canvas).
    """
    sy = sigma if sigma_y is None else sigma_y
    box = _bbox(cv, cx, cy, 3 * sigma, 3 * sy)
    if box is None:
        return
    x0, x1, y0, y1 = box
    y0 = max(y0, y_min)
    if y0 >= y1:
        return
    dx = (cv.xs[0, x0:x1] - cx) / sigma
    dy = (cv.ys[y0:y1, 0] - cy) / sy
    gx = np.exp(F32(-0.5) * dx * dx)
    gy = np.exp(F32(-0.5) * dy * dy) * F32(strength)
    gxc = (gx[:, None] * np.asarray(colour, F32)[None, :]).reshape(-1)  # (3w,): light of each value
    region = (cv.img if target is None else target)[y0:y1, x0:x1]
    step = _rows_per_block(x1 - x0)
    for r0 in range(0, y1 - y0, step):
        blk = _flat(region[r0:r0 + step])
        # Screen blend: adds light to dark areas but cannot blow bright skies to white.
        t = np.subtract(F32(1.0), blk)
        np.clip(t, 0, 1, out=t)
        t *= gy[r0:r0 + step, None] * gxc[None, :]
        blk += t


def _disc(cv: _Canvas, cx: float, cy: float, rad: float, colour, opacity: float = 1.0,
          shade: float = 0.0, light=(-0.55, -0.6), ring: float | None = None) -> None:
    """An anti-aliased disc (or ring of width ``ring``), optionally shaded like a lit sphere."""
    box = _bbox(cv, cx, cy, rad + (ring or 0))
    if box is None or rad <= 0:
        return
    x0, x1, y0, y1 = box
    dx = cv.xs[:, x0:x1] - cx
    dy = cv.ys[y0:y1] - cy
    d = np.sqrt(dx * dx + dy * dy)
    if ring is not None:
        a = np.clip(ring / 2 - np.abs(d - rad) + 0.5, 0, 1)
    else:
        a = np.clip(rad - d + 0.5, 0, 1)
    a *= F32(opacity)
    col = np.asarray(colour, F32)
    if shade > 0 and ring is None:
        nx, ny = dx / rad, dy / rad
        nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
        lx, ly = light
        lz = math.sqrt(max(0.0, 1 - lx * lx - ly * ly))
        lam = np.clip(nx * lx + ny * ly + nz * lz, 0, 1)
        k = (1 - shade) + shade * (0.22 + 0.9 * lam)
        col = col * k[..., None] + (F32(0.45 * shade) * lam ** 24)[..., None]
    _over(cv.img[y0:y1, x0:x1], col, a)


def _fbm(h: int, w: int, r: np.random.Generator, cells: int = 3, octaves: int = 4,
         persistence: float = 0.5) -> np.ndarray:
    """Smooth fractal noise in [0,1] from upsampled random grids (PIL bicubic is fast)."""
    acc = np.zeros((h, w), F32)
    amp, total = 1.0, 0.0
    short = min(h, w)
    for o in range(octaves):
        c = cells * (2 ** o)
        gh = max(2, int(round(c * h / short))) + 1
        gw = max(2, int(round(c * w / short))) + 1
        grid = r.random((gh, gw), dtype=F32)
        up = np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC), dtype=F32)
        acc += F32(amp) * up
        total += amp
        amp *= persistence
    acc /= F32(total)
    lo, hi = float(acc.min()), float(acc.max())
    return (acc - lo) / max(hi - lo, 1e-6)


def _stars(cv: _Canvas, r: np.random.Generator, y_max: float, density: float = 1.0,
           tint=None) -> None:
    """Scatter sub-pixel stars (bilinear splats) and a few bright ones with halos."""
    area = cv.w * max(y_max, 1.0)
    n = int(area / 1400 * density * float(r.uniform(0.7, 1.3)))
    if n <= 0:
        return
    x = r.uniform(0, cv.w - 1.001, n)
    y = (y_max - 1.001) * r.random(n) ** 1.4
    b = (0.15 + 0.85 * r.random(n) ** 4).astype(F32)
    warm = r.random(n)
    col = np.where(warm[:, None] < 0.2, np.array([1.0, 0.86, 0.7], F32),
                   np.where(warm[:, None] > 0.85, np.array([0.75, 0.85, 1.0], F32),
                            np.array([1.0, 1.0, 1.0], F32)))
    if tint is not None:
        col = col * 0.75 + np.asarray(tint, F32) * 0.25
    ix, iy = x.astype(np.int64), np.clip(y, 0, None).astype(np.int64)
    fx, fy = (x - ix).astype(F32), (y - iy).astype(F32)
    iy1 = np.minimum(iy + 1, cv.h - 1)
    ix1 = np.minimum(ix + 1, cv.w - 1)
    for yy, xx, wgt in ((iy, ix, (1 - fx) * (1 - fy)), (iy, ix1, fx * (1 - fy)),
                        (iy1, ix, (1 - fx) * fy), (iy1, ix1, fx * fy)):
        np.add.at(cv.img, (yy, xx), col * (wgt * b * 1.6)[:, None])
    bright = np.nonzero(b > 0.72)[0][:40]
    for i in bright:
        _glow(cv, float(x[i]), float(y[i]), 2.2 * cv.px + 0.8, col[i], 0.5 * float(b[i]))


def _celestial(cv: _Canvas, plan: Plan, x: float, y: float, rad: float) -> None:
    pal = plan.palette
    if plan.celestial == "sun":
        _glow(cv, x, y, rad * 4.0, pal.accent, 0.3)
        _glow(cv, x, y, rad * 1.5, pal.accent, 0.4)
        _disc(cv, x, y, rad, _lighten(pal.accent, 0.4))
    elif plan.celestial == "moon":
        moon = _mix(np.array([0.93, 0.94, 0.97], F32), pal.accent, 0.25)
        _glow(cv, x, y, rad * 3.0, moon, 0.16)
        _disc(cv, x, y, rad, moon, shade=0.35, light=(-0.7, -0.3))
        r = plan.rng("moon")
        for _ in range(6):  # maria: faint darker patches
            a, d = r.uniform(0, TAU), r.uniform(0, 0.6) * rad
            _disc(cv, x + math.cos(a) * d, y + math.sin(a) * d, rad * r.uniform(0.12, 0.3),
                  np.array([0.6, 0.6, 0.62], F32), opacity=0.12)


def _sky(cv: _Canvas, pal: Palette, horizon: float, glow_x: float | None) -> None:
    top, hor = pal.sky_top, pal.horizon
    grad = _vgrad(cv, [(0.0, top), (horizon * 0.55, _mix(top, hor, 0.4)),
                       (horizon, hor), (float(cv.h), _mix(hor, pal.mid, 0.3))])
    _fill_rows(cv.img, grad[:, 0, :])
    if glow_x is not None:
        _glow(cv, glow_x, horizon, cv.w * 0.35, pal.accent, 0.15, sigma_y=cv.h * 0.18)


# ----------------------------------------------------------------------------
# Compositions


def _ridge_profile(u: np.ndarray, r: np.random.Generator, freq: float, rough: float,
                   ridged: bool) -> np.ndarray:
    """A 1-D mountain silhouette in [0,1]: ridged sines give sharp peaks and round valleys."""
    v = np.zeros_like(u)
    amp, total = 1.0, 0.0
    for i in range(6):
        f = freq * (2.05 ** i) * float(r.uniform(0.85, 1.15))
        s = np.sin(TAU * f * u + float(r.uniform(0, TAU)))
        if ridged and i < 3:
            s = 1.0 - 2.0 * np.abs(s)
        v += F32(amp) * s
        total += amp
        amp *= rough
    v = v / F32(total)
    lo, hi = float(v.min()), float(v.max())
    return (v - lo) / max(hi - lo, 1e-6)


def _paint_mountains(cv: _Canvas, plan: Plan) -> None:
    r = plan.rng("mountains")
    pal = plan.palette
    w, h = cv.w, cv.h
    words = plan.words
    trees = bool(words & {"forest", "tree", "pine", "wood", "woods", "jungle"})
    dunes = bool(words & {"dune", "desert", "sand", "sahara"})
    snowy = bool(words & {"snow", "alp", "alps", "winter", "glacier", "ice", "frost", "arctic"})
    horizon = float(r.uniform(0.48, 0.62)) * h
    sun_x = float(r.uniform(0.2, 0.8)) * w
    sun_y = horizon - float(r.uniform(0.12, 0.3)) * h
    sun_r = float(r.uniform(0.05, 0.085)) * cv.s

    n = int(r.integers(4, 7)) - plan.variant % 2
    haze = _mix(pal.horizon, pal.sky_top, 0.12)
    far = _mix(haze, pal.mid, 0.35)
    u = (cv.xs[0] / h).astype(F32)
    ridges = []
    for k in range(n):
        t = k / (n - 1)
        base = horizon + (h * 1.0 - horizon) * (t ** 1.15) * 0.92
        amp = h * (0.16 + 0.12 * (1 - t)) * float(r.uniform(0.75, 1.2)) * (0.45 if dunes else 1.0)
        prof = _ridge_profile(u, r, float(r.uniform(0.35, 0.8)) * (1 + t),
                              float(r.uniform(0.4, 0.55)), ridged=not dunes)
        ridge = base - amp * prof
        if trees and k >= n - 3:
            # A treeline of pines of random height, with the odd gap.
            spacing = (0.008 + 0.014 * t) * h
            slot = (cv.xs[0] // spacing).astype(np.int64)
            local = (cv.xs[0] % spacing) / spacing
            heights = r.random(997).astype(F32)
            hv = heights[slot % 997]
            tree_h = (0.02 + 0.045 * t) * h * (0.45 + 0.9 * hv) * (hv > 0.12)
            ridge = ridge - tree_h * np.clip(1 - np.abs(local - 0.5) * 2.3, 0, 1) ** 1.2
        ridges.append((ridge.astype(F32), base, amp, t))
    # Keep the sun or moon mostly clear of the peaks behind which it would hide.
    sx = min(max(int(sun_x), 0), w - 1)
    lo, hi = max(sx - int(sun_r), 0), min(sx + int(sun_r) + 1, w)
    peak = float(min(rd[0][lo:hi].min() for rd in ridges))
    sun_y = max(min(sun_y, peak - sun_r * 0.4), sun_r * 1.6)

    _sky(cv, pal, horizon, sun_x if plan.celestial == "sun" else None)
    if plan.stars:
        _stars(cv, r, horizon)
    _celestial(cv, plan, sun_x, sun_y, sun_r)
    for k, (ridge, base, amp, t) in enumerate(ridges):
        front = k == n - 1
        colour = _mix(far, pal.mid, t * 2) if t < 0.5 else _mix(pal.mid, pal.deep, t * 2 - 1)
        y0 = max(int(ridge.min()) - 1, 0)
        if k + 1 < n and not (cv.split and k + 1 == n - 1):
            y1 = min(int(ridges[k + 1][0].max()) + 2, h)
        else:
            y1 = h
        ys = cv.ys[y0:y1]
        mist = _smoothstep(base - 0.6 * amp, base + 0.12 * h, ys) * F32(0.55 * (1 - 0.6 * t))
        col_rows = colour + (haze - colour) * mist[..., None]
        if snowy and k < 3 and not (trees and k >= n - 3):
            # A ragged snow line that follows the peaks rather than a flat cut.
            jag = sum(np.sin(cv.xs[0] / F32(h * f) + F32(k * 1.7 + f * 9)) for f in (0.004, 0.011, 0.029))
            line = base - amp * F32(0.55) + jag * F32(0.012 * h) + (ridge - (base - amp)) * F32(0.35)
            snow = 1 - _smoothstep(0.0, 0.006 * h + 1.0, ys - line[None, :])
            col_rows = col_rows + (_lighten(pal.horizon, 0.75) - col_rows) * (snow * 0.9)[..., None]
        slope = np.gradient(ridge)
        inv = 1.0 / np.sqrt(1.0 + slope * slope)
        if front and cv.split:
            cv.fg = np.zeros_like(cv.img)
            cv.fg_alpha = np.zeros((h, w), F32)
        # A block of rows at a time (the layer can be most of the canvas), each row as 3w values
        # (see _flat): the rim, the colour and the coverage stay in the cache until composited.
        ridge3, inv3, haze3 = np.repeat(ridge, 3), np.repeat(inv, 3), _tile(haze, w)
        if col_rows.shape[1] == 1:  # one colour per row: colour + (haze - colour) * mist, as rows
            colour3, dh3 = _tile(colour, w), _tile(haze - colour, w)
        step = _rows_per_block(w)
        for b0 in range(0, y1 - y0, step):
            b1 = min(y1 - y0, b0 + step)
            below = ys[b0:b1] - ridge3[None, :]
            # Rim light: a thin lighter edge just under the ridge line, facing the sky.
            rim = np.exp(-np.maximum(below, 0) / F32(0.012 * h + 1.0)) * F32(0.22 * (1 - 0.6 * t))
            if col_rows.shape[1] == 1:
                cr = colour3[None, :] + dh3[None, :] * mist[b0:b1]
            else:
                cr = _flat(col_rows[b0:b1])
            col = cr + (haze3 - cr) * rim
            alpha = np.clip(below * inv3[None, :] + 0.5, 0, 1)
            if front and cv.split:
                _flat(cv.fg[y0 + b0:y0 + b1])[:] = col
                cv.fg_alpha[y0 + b0:y0 + b1] = alpha[:, ::3]
            else:
                region = _flat(cv.img[y0 + b0:y0 + b1])
                region += (col - region) * alpha


def _wave_shape(theta: np.ndarray, sharp: float) -> np.ndarray:
    """Trochoid-like crests: sharp tops, broad troughs, in [0,1]."""
    c = (1.0 + np.cos(theta)) * 0.5
    return c ** sharp


def _paint_waves(cv: _Canvas, plan: Plan) -> None:
    r = plan.rng("waves")
    pal = plan.palette
    w, h = cv.w, cv.h
    horizon = float(r.uniform(0.36, 0.5)) * h
    sun_x = float(r.uniform(0.25, 0.75)) * w
    sun_y = horizon - float(r.uniform(0.06, 0.2)) * h
    rad = float(r.uniform(0.045, 0.08)) * cv.s
    _sky(cv, pal, horizon, sun_x if plan.celestial else None)
    if plan.stars:
        _stars(cv, r, horizon)
    _celestial(cv, plan, sun_x, sun_y, rad)
    h0 = int(horizon)
    water_top = _mix(pal.horizon, pal.mid, 0.45)
    cv.img[h0:] = _vgrad(cv, [(0.0, water_top), (horizon, water_top), (float(h), pal.deep)])[h0:]

    n = int(r.integers(7, 11)) + plan.variant
    sharp = float(r.uniform(1.5, 3.0))
    xs = cv.xs[0]
    crests = []
    for k in range(n):
        t = (k + 1) / n
        y0 = horizon + (h * 1.02 - horizon) * (((k + 0.7) / (n + 0.2)) ** 1.7)
        amp = (0.004 + 0.06 * t ** 1.6) * h * float(r.uniform(0.8, 1.2))
        lam = (0.05 + 0.6 * t ** 1.3) * h * float(r.uniform(0.8, 1.25))
        ph, ph2, ph3 = (float(v) for v in r.uniform(0, TAU, 3))
        # Swell: the crest height rises and falls along the band so rows of
        # waves do not look stamped from one template.
        swell = 0.55 + 0.45 * np.sin(TAU * xs / (lam * float(r.uniform(2.5, 4.5))) + ph3)
        shape = _wave_shape(TAU * xs / lam + ph, sharp) * swell \
            + float(r.uniform(0.1, 0.3)) * np.sin(TAU * xs / (0.43 * lam) + ph2)
        crests.append(((y0 - amp * shape).astype(F32), amp, t))
    foam = _mix(_lighten(pal.horizon, 0.7), pal.accent, 0.3)
    for k, (crest, amp, t) in enumerate(crests):
        front = k == n - 1
        body = _mix(_mix(pal.horizon, pal.mid, 0.7), pal.deep, t ** 0.75)
        light = _mix(body, _lighten(pal.horizon, 0.25), 0.4 * (1 - 0.4 * t))
        y0 = max(int(crest.min()) - 1, 0)
        if k + 1 < n and not (cv.split and k + 1 == n - 1):
            y1 = min(int(crests[k + 1][0].max()) + 2, h)
        else:
            y1 = h
        if y1 <= y0:
            continue
        d = cv.ys[y0:y1] - crest[None, :]
        slope = np.gradient(crest)
        inv = 1.0 / np.sqrt(1.0 + slope * slope)
        alpha = np.clip(d * inv[None, :] + 0.5, 0, 1)
        dd = np.maximum(d, 0)
        shade = np.exp(-dd / F32(0.7 * amp + 2.0))
        col = body + (light - body) * shade[..., None]
        fw = (0.8 + 3.0 * t) * cv.px + 0.6
        fa = np.clip(1.0 - dd / F32(fw), 0, 1) * F32(0.3 + 0.4 * t)
        col += (foam - col) * fa[..., None]
        cv.layer(y0, y1, col, alpha, front=front)
    if plan.celestial:  # the sun's or moon's path of light on the water
        bright = 0.35 if plan.celestial == "sun" else 0.2
        _glow(cv, sun_x, horizon, rad * 1.3, pal.accent, bright, sigma_y=(h - horizon) * 0.55, y_min=h0 + 1)
        gr = plan.rng("glints")
        for _ in range(int(90 * cv.s / 1024) + 10):
            gy = horizon + (h - horizon) * gr.random() ** 1.6
            spread = rad * (1.0 + 2.5 * (gy - horizon) / (h - horizon))
            gx = sun_x + gr.normal(0, spread)
            _glow(cv, gx, gy, rad * gr.uniform(0.15, 0.45), pal.accent, 0.25 * gr.random(),
                  sigma_y=0.9 * cv.px + 0.4, y_min=h0 + 1)


def _paint_city(cv: _Canvas, plan: Plan) -> None:
    r = plan.rng("city")
    pal = plan.palette
    w, h = cv.w, cv.h
    ground = float(r.uniform(0.76, 0.88)) * h
    g0 = int(ground)
    moon_x = float(r.uniform(0.15, 0.85)) * w
    moon_y = float(r.uniform(0.12, 0.3)) * h
    _sky(cv, pal, ground, moon_x if plan.celestial == "sun" else None)
    _glow(cv, w / 2, ground, w * 0.6, pal.accent, 0.12, sigma_y=h * 0.12)
    if plan.stars:
        _stars(cv, r, ground * 0.7, density=0.8)
    _celestial(cv, plan, moon_x, moon_y, float(r.uniform(0.035, 0.06)) * cv.s)
    street = _vgrad(cv, [(0.0, pal.deep), (ground, _mix(pal.deep, pal.mid, 0.3)), (float(h), pal.deep)])
    cv.img[g0:] = street[g0:]

    haze = _mix(pal.horizon, pal.sky_top, 0.3)
    window = _mix(_lighten(pal.accent, 0.1), np.array([1.0, 0.84, 0.52], F32), 0.45)
    xi = np.arange(w)
    n_layers = 3
    for L in range(n_layers):
        t = L / (n_layers - 1)
        front = L == n_layers - 1
        colour = _mix(haze, pal.mid, t * 2) if t < 0.5 else _mix(pal.mid, pal.deep, t * 2 - 1)
        colour = _mix(colour, pal.deep, 0.15 * t)
        top = np.full(w, ground + 2, F32)
        btop = np.full(w, ground + 2, F32)
        left = np.zeros(w, np.int64)
        width = np.ones(w, np.int64)
        bid = np.zeros(w, np.int64)
        tone = np.ones(w, F32)
        x = -int(r.uniform(0, 0.08) * h)
        b = 1
        hmin, hmax = (0.3, 0.62) if L == 0 else ((0.18, 0.5) if L == 1 else (0.08, 0.32))
        wmin, wmax = (0.025, 0.06) if L == 0 else ((0.04, 0.09) if L == 1 else (0.07, 0.15))
        while x < w:
            bw = max(3, int(r.uniform(wmin, wmax) * h))
            bh = float(r.uniform(hmin, hmax)) * ground * (1.0 + 0.3 * plan.variant / 2)
            gap = 0 if (front or r.random() < 0.7) else max(1, int(r.uniform(0.003, 0.012) * h))
            a, e = max(x, 0), min(x + bw, w)
            if e > a:
                top[a:e] = btop[a:e] = ground - bh
                left[a:e] = x
                width[a:e] = bw
                bid[a:e] = b
                tone[a:e] = r.uniform(0.85, 1.15)
                roll = r.random()
                if roll < 0.25 and bw > 8:  # setback crown
                    inset = int(bw * r.uniform(0.18, 0.3))
                    ca, ce = max(x + inset, 0), min(x + bw - inset, w)
                    if ce > ca:
                        top[ca:ce] = ground - bh - r.uniform(0.03, 0.08) * h
                elif roll < 0.4:  # antenna
                    ax = x + bw // 2
                    aw = max(1, int(2 * cv.px))
                    if 0 <= ax < w:
                        top[ax:min(ax + aw, w)] = ground - bh - r.uniform(0.04, 0.1) * h
            x += bw + gap
            b += 1
        y0 = max(int(top.min()) - 1, 0)
        y1 = h
        ys = cv.ys[y0:y1]
        alpha = np.clip(ys - top[None, :] + 0.5, 0, 1)
        shade = 1.0 - 0.35 * _smoothstep(0.0, ground, ys)  # darker toward the street
        col = colour[None, None, :] * (tone[None, :, None] * shade[..., None])
        if L >= 1:
            pitch_x = max(3, int((0.012 + 0.006 * L) * h))
            pitch_y = max(4, int((0.02 + 0.008 * L) * h))
            ww, wh = max(1, int(pitch_x * 0.55)), max(1, int(pitch_y * 0.5))
            lx = xi - left
            iy = np.arange(y0, y1)[:, None]
            ly = iy - btop.astype(np.int64)[None, :]
            colx = lx // pitch_x
            inx = ((lx % pitch_x) >= (pitch_x - ww) // 2) & ((lx % pitch_x) < (pitch_x + ww) // 2) \
                & (lx >= pitch_x // 2) & (lx < width - pitch_x // 2)
            iny = ((ly % pitch_y) >= pitch_y // 3) & ((ly % pitch_y) < pitch_y // 3 + wh) \
                & (ly > pitch_y // 2) & (iy < g0 - pitch_y // 2)
            win = inx[None, :] & iny & (bid[None, :] > 0)
            hsh = (bid.astype(np.uint32)[None, :] * np.uint32(2654435761)) \
                ^ (colx.astype(np.uint32)[None, :] * np.uint32(2246822519)) \
                ^ ((ly // pitch_y).astype(np.uint32) * np.uint32(3266489917))
            hsh = (hsh ^ (hsh >> np.uint32(15))) * np.uint32(2246822519)
            hsh ^= hsh >> np.uint32(13)
            val = (hsh % np.uint32(1000)).astype(F32) / F32(1000.0)
            lit = win & (val < 0.38 + 0.1 * L)
            dim = win & ~lit
            bright = 0.55 + 0.45 * (val / 0.5)
            col = np.where(lit[..., None], window * np.clip(bright, 0.5, 1.0)[..., None], col)
            col = np.where(dim[..., None], col * 1.25 + 0.015, col)
        if g0 < h:  # every layer stands on the same street
            col = np.broadcast_to(col, (y1 - y0, w, 3)).copy()
            col[max(g0 - y0, 0):] = street[max(g0, y0):y1]
        cv.layer(y0, y1, col, alpha, front=front)
    if g0 < h:
        # Car lights: short warm and red streaks along the street.
        target = cv.fg if (cv.split and cv.fg is not None) else cv.img
        lr = plan.rng("street")
        for _ in range(int(18 * w / max(h, 1)) + 4):
            y = ground + (h - ground) * float(lr.uniform(0.15, 0.85))
            col = np.array([1.0, 0.85, 0.6], F32) if lr.random() < 0.5 else np.array([1.0, 0.25, 0.2], F32)
            _glow(cv, float(lr.uniform(0, w)), y, float(lr.uniform(0.01, 0.04)) * h, col,
                  float(lr.uniform(0.3, 0.7)), sigma_y=0.002 * h + 0.6, target=target)
    if not cv.split and (plan.variant == 1 or plan.words & {"river", "harbor", "harbour", "water", "bay"}):
        # Waterfront: the skyline mirrored, darkened and rippled below the street line.
        rows = h - g0
        src = cv.img[max(g0 - rows, 0):g0][::-1]
        rows = src.shape[0]
        i = np.arange(rows)
        shift = (np.sin(i * 0.9 / max(cv.px, 0.2)) * (1 + i * 0.04) * cv.px * 2).astype(np.int64)
        idx = np.clip(xi[None, :] + shift[:, None], 0, w - 1)
        refl = src[i[:, None], idx]
        cv.img[g0:g0 + rows] = refl * F32(0.55) + pal.deep * F32(0.45)


def _paint_orbs(cv: _Canvas, plan: Plan) -> None:
    r = plan.rng("orbs")
    pal = plan.palette
    w, h, s = cv.w, cv.h, cv.s
    dark_bg = pal.dark or plan.variant != 1
    c0 = pal.sky_top if dark_bg else _lighten(pal.horizon, 0.5)
    c1 = pal.deep if dark_bg else pal.horizon
    _fill_linear(cv, float(r.uniform(0, TAU)), c0, c1)
    clouds = _fbm(h, w, r, cells=2, octaves=4)
    cv.img += (pal.mid - cv.img) * (clouds * F32(0.22))[..., None]
    sw = pal.swatches()
    if plan.variant == 0:  # a big lit sphere with orbiting satellites
        cx, cy = float(r.uniform(0.3, 0.7)) * w, float(r.uniform(0.32, 0.62)) * h
        R = float(r.uniform(0.17, 0.26)) * s
        lx, ly = -0.55 + float(r.uniform(-0.2, 0.2)), -0.6
        _glow(cv, cx, cy, R * 1.6, pal.accent, 0.35)
        for j in range(int(r.integers(2, 4))):
            _disc(cv, cx, cy, R * (1.45 + 0.42 * j), pal.horizon, opacity=0.35, ring=1.2 * cv.px + 0.6)
        _disc(cv, cx, cy, R, pal.accent if pal.dark else pal.mid, shade=0.9, light=(lx, ly))
        for j in range(int(r.integers(4, 9))):
            ang = float(r.uniform(0, TAU))
            orbit = R * (1.45 + 0.42 * int(r.integers(0, 3)))
            rad = float(r.uniform(0.015, 0.06)) * s
            ox, oy = cx + math.cos(ang) * orbit, cy + math.sin(ang) * orbit
            colour = sw[int(r.integers(0, 3))]
            _glow(cv, ox, oy, rad * 1.8, colour, 0.25)
            _disc(cv, ox, oy, rad, colour, shade=0.85, light=(lx, ly))
    elif plan.variant == 1:  # overlapping translucent discs and rings, Kandinsky-like
        k = int(r.integers(12, 22))
        radii = np.sort(s * (0.025 + 0.2 * r.random(k) ** 2))[::-1]
        for rad in radii:
            x, y = float(r.uniform(0.08, 0.92)) * w, float(r.uniform(0.08, 0.92)) * h
            colour = sw[int(r.integers(0, len(sw)))]
            if r.random() < 0.25:
                _disc(cv, x, y, float(rad), colour, opacity=0.9, ring=float(rad) * 0.12)
            else:
                _glow(cv, x, y, float(rad) * 0.9, colour, 0.12)
                _disc(cv, x, y, float(rad), colour, opacity=float(r.uniform(0.45, 0.9)), shade=0.35)
    else:  # eclipse: concentric bands with a dark disc and a corona
        cx, cy = float(r.uniform(0.35, 0.65)) * w, float(r.uniform(0.35, 0.65)) * h
        R = float(r.uniform(0.14, 0.22)) * s
        bands = int(r.integers(5, 9))
        for j in range(bands, 0, -1):
            colour = _mix(pal.deep, pal.horizon, (1 - j / (bands + 1)) ** 1.5)
            _disc(cv, cx, cy, R * (1 + 0.35 * j), colour, opacity=0.55)
        _glow(cv, cx, cy, R * 1.2, pal.accent, 0.7)
        _glow(cv, cx, cy, R * 2.0, pal.horizon, 0.25)
        off = float(r.uniform(-0.08, 0.08)) * R
        _disc(cv, cx + off, cy - off, R, _mix(pal.deep, np.zeros(3, F32), 0.5), shade=0.2)
        _disc(cv, cx + off, cy - off, R, _lighten(pal.accent, 0.5), opacity=0.8, ring=1.5 * cv.px + 0.5)


def _stream_function(r: np.random.Generator, detail: float) -> np.ndarray:
    """Smooth noise on a coarse 64x64 grid: the stream function of a divergence-free flow."""
    g = 64
    field = np.zeros((g, g), F32)
    amp = 1.0
    for c in (2, 3, 5, 9):
        c = max(2, int(round(c * detail)))
        grid = r.random((c + 1, c + 1), dtype=F32)
        field += F32(amp) * np.asarray(Image.fromarray(grid).resize((g, g), Image.Resampling.BICUBIC))
        amp *= 0.5
    return field


def _sample(field: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    gh, gw = field.shape
    fx = np.clip(u, 0, 1) * (gw - 1.001)
    fy = np.clip(v, 0, 1) * (gh - 1.001)
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    tx, ty = fx - ix, fy - iy
    a = field[iy, ix] * (1 - tx) + field[iy, ix + 1] * tx
    b = field[iy + 1, ix] * (1 - tx) + field[iy + 1, ix + 1] * tx
    return a * (1 - ty) + b * ty


def _paint_flow(cv: _Canvas, plan: Plan) -> None:
    r = plan.rng("flow")
    pal = plan.palette
    w, h, s = cv.w, cv.h, cv.s
    light_bg = plan.variant == 2 and not pal.dark
    if light_bg:
        _fill_linear(cv, float(r.uniform(0, TAU)), _lighten(pal.horizon, 0.6), _lighten(pal.mid, 0.4))
    else:
        _fill_linear(cv, float(r.uniform(0, TAU)), pal.deep, _mix(pal.sky_top, pal.mid, 0.3))
    _glow(cv, float(r.uniform(0.3, 0.7)) * w, float(r.uniform(0.3, 0.7)) * h, s * 0.35, pal.horizon, 0.2)
    # Strokes follow the level lines of a stream function (velocity = its rotated
    # gradient), so they swirl without bunching into a few sink lines.
    psi = _stream_function(r, 1.0 + 0.5 * plan.variant)
    gy, gx = np.gradient(psi)
    vx, vy = gy, -gx
    hue_map = _stream_function(r, 0.6)
    hue_map = (hue_map - hue_map.min()) / max(float(hue_map.max() - hue_map.min()), 1e-6)

    n = int(float(r.uniform(1800, 2600)) * (w * h) / (1024 * 1024)) + 80
    steps = int(r.integers(40, 80))
    step = s * float(r.uniform(0.004, 0.007))
    p = np.stack([r.uniform(-0.05, 1.05, n) * w, r.uniform(-0.05, 1.05, n) * h], 1)
    path = np.empty((steps + 1, n, 2))
    path[0] = p
    for i in range(steps):
        u, v = p[:, 0] / w, p[:, 1] / h
        dx, dy = _sample(vx, u, v), _sample(vy, u, v)
        norm = np.sqrt(dx * dx + dy * dy) + 1e-9
        p = p + step * np.stack([dx / norm, dy / norm], 1)
        path[i + 1] = p
    sw = [pal.accent, pal.horizon, _lighten(pal.mid, 0.25), _mix(pal.horizon, pal.accent, 0.5)]
    if light_bg:
        sw = [pal.deep, pal.mid, _darken(pal.horizon, 0.3), pal.sky_top]
    pick = (_sample(hue_map, path[0, :, 0] / w, path[0, :, 1] / h) * 2.5 * len(sw)).astype(int) % len(sw)
    widths = (s / 1024.0) * 2.0 * (0.8 + 5.0 * r.random(n) ** 3)
    order = np.argsort(-widths)

    # Each colour group is drawn opaquely into its own 2x coverage mask (so the
    # overlapping segment ends of a polyline do not bead up), then box-reduced to
    # 1x for anti-aliasing and composited in numpy.
    scale = 2
    flat = (path * scale).transpose(1, 0, 2).reshape(n, -1)
    alphas = r.integers(90, 235, n)
    for g in range(len(sw)):
        members = order[pick[order] == g]
        if len(members) == 0:
            continue
        mask = Image.new("L", (w * scale, h * scale), 0)
        draw = ImageDraw.Draw(mask)
        for j in members:
            draw.line(flat[j].tolist(), fill=int(alphas[j]), width=max(1, int(round(widths[j] * scale))))
        a = np.asarray(mask.reduce(scale), dtype=F32) * F32(1 / 255)
        cv.img += (sw[g] - cv.img) * a[..., None]


def _paint_tiles(cv: _Canvas, plan: Plan) -> None:
    r = plan.rng("tiles")
    pal = plan.palette
    w, h = cv.w, cv.h
    n_short = int(r.integers(4, 8)) + plan.variant
    cell = cv.s / n_short
    nx, ny = int(math.ceil(w / cell)), int(math.ceil(h / cell))
    sw = [pal.accent, pal.horizon, pal.mid, pal.deep, _lighten(pal.sky_top, 0.2)]
    gutter = 0.0 if plan.variant != 1 else 0.04
    for j in range(ny):
        for i in range(nx):
            x0, x1 = int(i * cell), min(int((i + 1) * cell), w)
            y0, y1 = int(j * cell), min(int((j + 1) * cell), h)
            if x1 <= x0 or y1 <= y0:
                continue
            bg_i = int(r.integers(0, len(sw)))
            fg_i = (bg_i + int(r.integers(1, len(sw)))) % len(sw)
            shape = int(r.integers(0, 7))
            corner = int(r.integers(0, 4))
            lu = (cv.xs[:, x0:x1] - i * cell) / cell
            lv = (cv.ys[y0:y1] - j * cell) / cell
            cx, cy = (corner & 1), (corner >> 1)
            if shape == 0:  # quarter circle from a corner
                d = np.sqrt((lu - cx) ** 2 + (lv - cy) ** 2) - 1.0
            elif shape == 1:  # half disc on a side
                mx, my = ((0.5, cy) if corner < 2 else (cx, 0.5))
                d = np.sqrt((lu - mx) ** 2 + (lv - my) ** 2) - 0.5
            elif shape == 2:  # centred disc
                d = np.sqrt((lu - 0.5) ** 2 + (lv - 0.5) ** 2) - 0.36
            elif shape == 3:  # diagonal half
                d = ((lu if cx else 1 - lu) + (lv if cy else 1 - lv) - 1.0) / math.sqrt(2) * -1
            elif shape == 4:  # ring
                d = np.abs(np.sqrt((lu - 0.5) ** 2 + (lv - 0.5) ** 2) - 0.3) - 0.09
            elif shape == 5:  # two stacked bars
                d = np.abs(((lv if corner < 2 else lu) * 2) % 1.0 - 0.5) - 0.22
            else:  # blank cell
                d = np.ones_like(lu + lv)
            d = d * F32(cell)
            a = np.clip(0.5 - d, 0, 1)
            region = cv.img[y0:y1, x0:x1]
            # A soft diagonal light across each tile gives depth to the flat print.
            shade = (1.0 + 0.12 * (0.5 - (lu + lv) * 0.5))[..., None]
            region[:] = sw[bg_i] * shade
            region += (sw[fg_i] * shade - region) * a[..., None]
            if gutter:
                g = gutter * cell
                gx = np.minimum(lu * cell, (1 - lu) * cell)
                gy = np.minimum(lv * cell, (1 - lv) * cell)
                ga = np.clip(g - np.minimum(gx, gy) + 0.5, 0, 1)
                region += (pal.deep * 0.6 - region) * ga[..., None]
    paper = _fbm(h, w, r, cells=6, octaves=3)
    cv.img *= (F32(0.94) + F32(0.1) * paper)[..., None]


def _paint_stripes(cv: _Canvas, plan: Plan) -> None:
    r = plan.rng("stripes")
    pal = plan.palette
    w, h, s = cv.w, cv.h, cv.s
    period = s * float(r.uniform(0.035, 0.09))
    lut = np.array(pal.swatches() + [_lighten(pal.mid, 0.3), _mix(pal.horizon, pal.deep, 0.5)], F32)
    lut = lut[r.permutation(len(lut))]
    n = len(lut)
    gpx = None
    if plan.variant == 0:  # warped parallel bands
        th = float(r.uniform(0, math.pi))
        ca, sa = math.cos(th), math.sin(th)
        along = (cv.xs * ca + cv.ys * sa) / period
        across = (-cv.xs * sa + cv.ys * ca) / s
        v = along + F32(r.uniform(0.6, 2.0)) * np.sin(TAU * across * F32(r.uniform(0.6, 1.6)) + F32(r.uniform(0, TAU)))
    elif plan.variant == 1:  # ripples around an off-centre point
        cx, cy = float(r.uniform(0.2, 0.8)) * w, float(r.uniform(0.2, 0.8)) * h
        dist = np.sqrt((cv.xs - cx) ** 2 + (cv.ys - cy) ** 2)
        ang = np.arctan2(cv.ys - cy, cv.xs - cx)
        v = dist / period + F32(r.uniform(0.3, 1.2)) * np.sin(ang * int(r.integers(2, 6)) + dist / s * 6)
    else:  # a spiral sunburst
        cx, cy = float(r.uniform(0.3, 0.7)) * w, float(r.uniform(0.3, 0.7)) * h
        dist = np.sqrt((cv.xs - cx) ** 2 + (cv.ys - cy) ** 2)
        ang = np.arctan2(cv.ys - cy, cv.xs - cx)
        # A whole number of colour cycles per turn, so the atan2 wrap leaves no seam.
        rays = n * int(r.integers(1, 4))
        twist = float(r.uniform(1.0, 4.0))
        v = ang / F32(TAU) * rays + dist / s * F32(twist)
        # The two terms' gradients are orthogonal, so the magnitude is exact (and
        # finite-differencing across the wrap would be wrong).
        gpx = 1.0 / np.sqrt((rays / (TAU * np.maximum(dist, 0.5))) ** 2 + (twist / s) ** 2)
    v = v.astype(F32)
    if gpx is None:
        gy, gx = np.gradient(v)
        gpx = 1.0 / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-4)  # pixels per band unit
    edge = np.floor(v + 0.5)
    dpx = (v - edge) * gpx
    ei = edge.astype(np.int64)
    c_prev = lut[(ei - 1) % n]
    c_cur = lut[ei % n]
    t = np.clip(dpx + 0.5, 0, 1)[..., None]
    cv.img[:] = c_prev + (c_cur - c_prev) * t
    shade = _fbm(h, w, r, cells=2, octaves=3)
    cv.img *= (F32(0.82) + F32(0.3) * shade)[..., None]


def _paint_starfield(cv: _Canvas, plan: Plan) -> None:
    r = plan.rng("starfield")
    pal = plan.palette
    w, h, s = cv.w, cv.h, cv.s
    deep = _mix(pal.deep, np.zeros(3, F32), 0.3)
    _fill_linear(cv, float(r.uniform(0, TAU)), deep, _mix(pal.sky_top, pal.deep, 0.3))
    n1 = _fbm(h, w, r, cells=2, octaves=5, persistence=0.55)
    n2 = _fbm(h, w, r, cells=3, octaves=3)
    th = float(r.uniform(0, math.pi))
    if plan.variant == 0:  # a milky-way band across the frame
        dist = ((cv.xs - w / 2) * math.sin(th) - (cv.ys - h / 2) * math.cos(th)) / s
        band = np.exp(-(dist / F32(0.22)) ** 2)
    else:
        band = np.full((1, 1), F32(0.75))
    neb = _smoothstep(0.3, 0.95, n1) * (F32(0.2) + F32(0.8) * band)
    tint = pal.horizon + (pal.mid - pal.horizon) * n2[..., None]
    cv.img += tint * (neb * F32(1.1))[..., None]
    dust = _smoothstep(0.55, 0.9, n2) * neb
    cv.img *= (1 - F32(0.5) * dust)[..., None]  # dark dust lanes give the clouds depth
    if plan.variant == 0:
        cx, cy = float(r.uniform(0.3, 0.7)) * w, float(r.uniform(0.3, 0.7)) * h
        _glow(cv, cx, cy, s * 0.14, _lighten(pal.accent, 0.2), 0.3)
        cv.img += (pal.horizon * F32(0.12)) * band[..., None]
    density = 1.4 if plan.variant == 0 else 1.0
    _stars(cv, r, float(h), density=density * 1.6)
    if plan.variant == 0:
        # Extra faint stars inside the band make it read as a galaxy.
        m = int(w * h / 900)
        x = r.uniform(0, w - 1, m)
        y = r.uniform(0, h - 1, m)
        keep = r.random(m) < np.exp(-(((x - w / 2) * math.sin(th) - (y - h / 2) * math.cos(th)) / s / 0.2) ** 2)
        ix, iy = x[keep].astype(np.int64), y[keep].astype(np.int64)
        np.add.at(cv.img, (iy, ix), np.full((len(ix), 3), 0.35, F32))
    if plan.variant == 1 or (plan.variant == 2 and plan.celestial):  # a ringed planet
        px, py = float(r.uniform(0.25, 0.75)) * w, float(r.uniform(0.3, 0.7)) * h
        R = float(r.uniform(0.1, 0.2)) * s
        tilt = float(r.uniform(0.15, 0.35))
        _glow(cv, px, py, R * 1.15, pal.horizon, 0.35)
        ring_col = _mix(pal.accent, pal.horizon, 0.4)
        _ellipse_ring(cv, px, py, R * 1.8, R * 1.8 * tilt, R * 0.4, ring_col, 0.7, behind=True)
        _disc(cv, px, py, R, _mix(pal.mid, pal.horizon, 0.3), shade=0.95, light=(-0.7, -0.4))
        _ellipse_ring(cv, px, py, R * 1.8, R * 1.8 * tilt, R * 0.4, ring_col, 0.7, behind=False)
    elif plan.variant == 2:  # a bright nearby star with diffraction glow
        px, py = float(r.uniform(0.25, 0.75)) * w, float(r.uniform(0.25, 0.75)) * h
        _glow(cv, px, py, s * 0.12, pal.accent, 0.45)
        _glow(cv, px, py, s * 0.02, np.ones(3, F32), 1.2)
        _glow(cv, px, py, s * 0.25, pal.accent, 0.05, sigma_y=1.2 * cv.px + 0.5)
        _glow(cv, px, py, 1.2 * cv.px + 0.5, pal.accent, 0.05, sigma_y=s * 0.25)


def _ellipse_ring(cv: _Canvas, cx: float, cy: float, rx: float, ry: float, width: float,
                  colour, opacity: float, behind: bool) -> None:
    """A flat planetary ring; drawn in two halves so the planet sits between them."""
    box = _bbox(cv, cx, cy, rx + width, ry + width)
    if box is None:
        return
    x0, x1, y0, y1 = box
    dx = (cv.xs[:, x0:x1] - cx) / rx
    dy = (cv.ys[y0:y1] - cy) / ry
    q = np.sqrt(dx * dx + dy * dy)
    d = np.abs(q - 1.0) * F32(ry)  # distance in px measured on the flat axis (conservative)
    a = np.clip(width * ry / rx / 2 - d + 0.5, 0, 1) * F32(opacity)
    band = 0.75 + 0.25 * np.sin(q * 40)
    if behind:
        a = a * (cv.ys[y0:y1] < cy)
    else:
        a = a * (cv.ys[y0:y1] >= cy)
    region = cv.img[y0:y1, x0:x1]
    col = np.asarray(colour, F32) * band[..., None]
    region += (col - region) * a[..., None]


_PAINTERS = {
    "mountains": _paint_mountains,
    "waves": _paint_waves,
    "city": _paint_city,
    "orbs": _paint_orbs,
    "flow": _paint_flow,
    "tiles": _paint_tiles,
    "stripes": _paint_stripes,
    "starfield": _paint_starfield,
}


def paint(plan: Plan, width: int, height: int, split: bool = False) -> Layers:
    """Paint the plan's composition as float layers (unfinished: no bloom, grain or vignette).

    With ``split=True`` a landscape's nearest layer goes to ``fg``/``fg_alpha`` and
    the layer behind it is painted down to the bottom edge, so the video can
    slide the front layer independently.
    """
    cv = _Canvas(width, height, split)
    _PAINTERS[plan.composition](cv, plan)
    return Layers(cv.img, cv.fg, cv.fg_alpha)


# ----------------------------------------------------------------------------
# Finishing


def _to_u8(img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    out = np.empty(img.shape, np.uint8) if out is None else out
    step = _rows_per_block(img.shape[1])
    buf = None
    for r0 in range(0, img.shape[0], step):
        blk = img[r0:r0 + step]
        buf = np.empty_like(blk) if buf is None or buf.shape != blk.shape else buf
        np.multiply(blk, F32(255.0), out=buf)
        buf += F32(0.5)
        np.clip(buf, 0.0, 255.0, out=buf)
        np.copyto(out[r0:r0 + step], buf, casting="unsafe")  # truncates, as astype(np.uint8)
    return out


def finish(img: np.ndarray, plan: Plan, *, bloom: float = 0.3, vignette: float = 0.22,
           grain: float = 0.022, first_row: int = 0) -> np.ndarray:
    """Bloom, vignette, film grain and a soft highlight shoulder; returns uint8 RGB.

    Works in place on ``img`` (a fresh painting). Bloom is computed on a ~128 px
    thumbnail and upsampled, so the soft glow costs a few milliseconds; the grain
    also dithers away banding in the smooth gradients. Every step after the
    bloom is done for a block of rows at a time, so the block stays in the CPU
    cache between steps (the same arithmetic, in the same order, as whole-image
    passes: the same pixels, in ~half the time). Rows above ``first_row`` are
    left unfinished (zero) in the result: a layer that never shows there.
    """
    h, w = img.shape[:2]
    up = None
    if bloom > 0 and min(w, h) >= 16:
        factor = max(1, min(w, h) // 128)
        small = np.asarray(Image.fromarray(_to_u8(img)).reduce(factor), dtype=F32) / F32(255.0)
        hi = np.clip((small - F32(0.6)) / F32(0.4), 0, 1)
        blur = Image.fromarray(_to_u8(hi)).filter(ImageFilter.GaussianBlur(max(small.shape[:2]) * 0.03))
        up = np.asarray(blur.resize((w, h), Image.Resampling.BILINEAR))  # uint8; float32 block by block
    if vignette > 0:
        vx2 = np.repeat((((np.arange(w, dtype=F32) + 0.5) / w - 0.5) * 2) ** 2, 3)  # (3w,), see _flat
        vy2 = (((np.arange(h, dtype=F32) + 0.5) / h - 0.5) * 2) ** 2
    rng = plan.rng("grain") if grain > 0 else None
    out = np.zeros((h, w, 3), np.uint8)
    step = _rows_per_block(w)
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        # The grain of every row is drawn, in order, so a row's grain does not depend on the blocks.
        g = rng.random((r1 - r0, w), dtype=F32) if rng is not None else None
        if r1 <= first_row:
            continue
        blk = img[r0:r1]
        if up is not None:
            u = up[r0:r1].astype(F32)
            u *= F32(bloom / 255.0)
            blk += u
        # Highlight shoulder: values above 0.8 roll off smoothly instead of clipping flat
        # (exactly nothing changes in a block with none above 0.8).
        if float(blk.max()) > 0.8:
            excess = np.maximum(blk - F32(0.8), F32(0))
            blk -= excess * excess * F32(5.0) / (F32(1.0) + excess * F32(5.0))
        flat = _flat(blk)
        if vignette > 0:
            flat *= 1.0 - F32(vignette * 0.5) * (vx2[None, :] + vy2[r0:r1, None])
        if g is not None:
            g -= F32(0.5)
            g *= F32(grain)
            flat += np.repeat(g, 3, axis=1)
        _to_u8(blk, out[r0:r1])
    return out


def render_image(prompt: str, seed: int, index: int, width: int, height: int) -> Image.Image:
    """Render the procedural image for (prompt, seed, index) at width x height, RGB.

    Deterministic: the same arguments give the same pixels in any process.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    plan = plan_for(prompt, seed, index)
    layers = paint(plan, width, height)
    return Image.fromarray(finish(layers.bg, plan))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``pixels`` (uint8, (h, w, 3)): every row Average-filtered, Huffman-only deflate.

    The film grain makes these pixels nearly incompressible: zlib's match search
    finds almost nothing to reuse, so Huffman coding alone (no search) gives
    nearly the same size for a fraction of the time. The Average filter (each
    byte minus the mean of its left and upper neighbours) is computed for the
    whole image in a few numpy passes. For 1024x1024: ~30 ms and ~1.30 MB,
    where Pillow at zlib level 3 (adaptive filters) took ~88 ms for ~1.20 MB.
    """
    h, w, c = pixels.shape
    if c != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB pixels, got {pixels.dtype}{pixels.shape}")
    rows = np.ascontiguousarray(pixels).reshape(h, w * 3)
    out = np.empty((h, w * 3 + 1), np.uint8)
    out[:, 0] = 3  # filter type: Average
    # floor((left + up) / 2) without widening: (l >> 1) + (u >> 1) + (l & u & 1).
    avg = np.zeros_like(rows)
    left, up = rows[:, :-3], rows[:-1]
    avg[:, 3:] = left >> 1
    avg[1:] += up >> 1
    avg[1:, 3:] += left[1:] & up[:, 3:] & 1
    np.subtract(rows, avg, out=out[:, 1:])
    z = zlib.compressobj(zlib.Z_BEST_SPEED, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    data = z.compress(memoryview(out).cast("B")) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))


def save_png(img: Image.Image | np.ndarray, path: str | PathLike) -> None:
    """Write an RGB image as PNG to exactly ``path`` (:func:`png_bytes`); any other mode through Pillow.

    The first round chose zlib level 3 over 6 in Pillow (the grain made level 6's
    search buy 7% for 3.4x the time); this goes further the same way: no match
    search at all, +8-10% bytes for a third of level 3's time
    (bench/fig2_local_renderer.py). The pixels are the same.
    """
    if isinstance(img, np.ndarray) or img.mode == "RGB":
        data = png_bytes(np.asarray(img))
        with open(path, "wb") as fh:
            fh.write(data)
        return
    img.save(path, format="PNG", compress_level=3)
