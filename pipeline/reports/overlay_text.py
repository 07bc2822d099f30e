"""Text on the overlay pictures: Pillow with a font that has the glyphs, so that class names in any script
(Cyrillic, Greek, Japanese...) are drawn as themselves and not as ``?`` (OpenCV's Hershey fonts are ASCII).

Fonts are looked up once, on this machine only (nothing is downloaded): DejaVu Sans (Debian's
``fonts-dejavu-core``, else the copy that ships with matplotlib, when installed) for most scripts; for a
character it lacks, the first other installed font that has it (``/usr/share/fonts`` and the like: e.g.
Noto Sans CJK or Droid Sans Fallback for Japanese and Chinese). A character no installed font has is drawn
as ``?``; with no TrueType font at all, Pillow's built-in font is used (Latin only).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
PRIMARY_NAMES = ("DejaVuSans.ttf",)
# Fallback fonts tried first (in this order) for characters the primary font lacks; then every other one.
PREFERRED_FALLBACKS = ("NotoSansCJK", "NotoSans-", "DroidSansFallback", "wqy", "DejaVuSans", "FreeSans")
MISSING = "?"
# Fonts whose glyphs are not letters: a "last resort" font draws every character as a box naming its script.
NOT_TEXT = ("LastResort",)
# A code point no font maps (a noncharacter): its rendering is the font's "missing glyph" box.
_PROBE = "\U0010ffff"


def _matplotlib_fonts() -> list[Path]:
    """matplotlib's own TrueType folder when matplotlib is installed (found without importing it)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) / "mpl-data" / "fonts" / "ttf" for p in spec.submodule_search_locations]


@functools.lru_cache(maxsize=1)
def font_files() -> tuple[Path, ...]:
    """Every TrueType/OpenType file found, the primary font (DejaVu Sans) first, then the preferred
    fallbacks, then the rest by name."""
    found: list[Path] = []
    for folder in [Path(os.path.expanduser(d)) for d in SYSTEM_FONT_DIRS] + _matplotlib_fonts():
        if folder.is_dir():
            found += sorted(
                p
                for p in folder.rglob("*")
                if p.suffix.lower() in (".ttf", ".otf", ".ttc") and not p.name.startswith(NOT_TEXT)
            )

    def rank(path: Path) -> tuple[int, str]:
        if path.name in PRIMARY_NAMES:
            return 0, str(path)
        for k, prefix in enumerate(PREFERRED_FALLBACKS):
            if path.name.startswith(prefix):
                return 1 + k, path.name
        return 1 + len(PREFERRED_FALLBACKS), path.name

    unique = {p.resolve(): p for p in found}
    return tuple(sorted(unique.values(), key=rank))


@functools.lru_cache(maxsize=64)
def _font(path: Path | None, size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The font at ``path`` (None: Pillow's built-in one) at ``size`` pixels."""
    if path is None:
        try:
            return ImageFont.load_default(size)
        except (TypeError, OSError, ImportError):  # Pillow without FreeType: the bitmap font
            return ImageFont.load_default()
    return ImageFont.truetype(str(path), size)


@functools.lru_cache(maxsize=256)
def _loads(path: Path) -> bool:
    try:
        _font(path, 24)
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=65536)
def _has_glyph(path: Path, char: str) -> bool:
    """Whether the font at ``path`` maps ``char`` (its rendering differs from the missing-glyph box)."""
    font = _font(path, 24)
    try:
        mask, probe = font.getmask(char), font.getmask(_PROBE)
    except (OSError, ValueError):
        return False
    return mask.size != probe.size or bytes(mask) != bytes(probe)


@functools.lru_cache(maxsize=1)
def primary_font_file() -> Path | None:
    """DejaVu Sans (or the first font that loads), None when there is no TrueType font at all."""
    return next((p for p in font_files() if _loads(p)), None)


@functools.lru_cache(maxsize=65536)
def font_file_for(char: str) -> Path | None:
    """The first font (primary first) that has ``char``; None when none has it."""
    primary = primary_font_file()
    if primary is None:
        return None
    if char.isspace() or _has_glyph(primary, char):
        return primary
    return next((p for p in font_files() if p != primary and _loads(p) and _has_glyph(p, char)), None)


@functools.lru_cache(maxsize=4)
def _covers_ascii(path: Path) -> bool:
    return all(font_file_for(chr(c)) == path for c in range(32, 127))


def text_runs(text: str) -> list[tuple[str, Path | None]]:
    """``text`` as consecutive runs drawn in one font each; characters no font has become ``?`` in the
    primary font. Without any TrueType font: ASCII only (the rest ``?``), in Pillow's built-in font."""
    primary = primary_font_file()
    if primary is not None and text.isascii() and _covers_ascii(primary):  # the common case, quickly
        return [(text, primary)]
    runs: list[tuple[str, Path | None]] = []
    for char in text:
        if primary is None:
            path, char = None, char if char.isascii() else MISSING
        else:
            path = font_file_for(char)
            if path is None:
                path, char = primary, MISSING
        if runs and runs[-1][1] == path:
            runs[-1] = (runs[-1][0] + char, path)
        else:
            runs.append((char, path))
    return runs


def text_width(text: str, size: int) -> float:
    """Width in pixels of ``text`` drawn at ``size``."""
    return sum(_font(path, size).getlength(run) for run, path in text_runs(text))


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, fill=(0, 0, 0)) -> float:
    """Draw ``text`` with its top-left at ``xy``, each run in its font; returns the x after it."""
    x, y = xy
    for run, path in text_runs(text):
        font = _font(path, size)
        draw.text((x, y), run, font=font, fill=fill)
        x += font.getlength(run)
    return x


def wrap(text: str, width: float, size: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a word wider than that is cut)."""
    if text_width(text, size) <= width:
        return [text]
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if text_width(candidate, size) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
        while text_width(current, size) > width and len(current) > 1:  # one word wider than the line
            cut = len(current)
            while cut > 1 and text_width(current[:cut], size) > width:
                cut -= 1
            lines.append(current[:cut])
            current = current[cut:]
    lines.append(current)
    return lines


def line_height(size: int) -> int:
    return int(round(size * 1.3))


def font_size_for(width: int) -> int:
    """Text size for a panel ``width`` pixels wide: legible at the picture's natural size (15 px at 320)."""
    return max(14, int(round(width / 21)))


def text_band(
    lines: Sequence[str], width: int, size: int, fill=(0, 0, 0), background=(255, 255, 255), margin: int = 6
) -> np.ndarray:
    """A ``[h, width, 3]`` BGR uint8 band with ``lines`` (each wrapped to the width) drawn on it; ``fill`` and
    ``background`` are RGB."""
    wrapped = [part for line in lines for part in wrap(line, width - 2 * margin, size)]
    step = line_height(size)
    band = Image.new("RGB", (max(width, 1), step * len(wrapped) + 2 * margin), tuple(background))
    draw = ImageDraw.Draw(band)
    for i, line in enumerate(wrapped):
        draw_text(draw, (margin, margin + i * step), line, size, fill)
    return np.ascontiguousarray(np.asarray(band)[..., ::-1])  # BGR, as the overlays are drawn


def clear_font_caches() -> None:
    """Forget the fonts found and the glyphs looked up (after fonts were installed, and for the tests)."""
    for cached in (font_files, _font, _loads, _has_glyph, primary_font_file, font_file_for, _covers_ascii):
        getattr(cached, "cache_clear", lambda: None)()  # font_files may be replaced (tests)
