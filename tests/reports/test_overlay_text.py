"""Overlay text in any script an installed font covers (issue 17.4): class names in Cyrillic or Japanese
were drawn as ``?`` by OpenCV's ASCII-only Hershey fonts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.reports import overlay_text
from pipeline.reports.overlays import draw_overlay

CYRILLIC, JAPANESE = "кошка", "猫のタマ"


@pytest.fixture
def fonts(monkeypatch):
    """Set the font files found (``fonts(paths)``), the caches cleared before and after."""

    def use(paths: list[Path]) -> None:
        overlay_text.clear_font_caches()
        monkeypatch.setattr(overlay_text, "font_files", lambda: tuple(paths))

    yield use
    monkeypatch.undo()
    overlay_text.clear_font_caches()


def _band(text: str) -> np.ndarray:
    return overlay_text.text_band([text], 320, 16)


def test_cyrillic_is_drawn_as_itself_with_dejavu():
    overlay_text.clear_font_caches()
    primary = overlay_text.primary_font_file()
    assert primary is not None and primary.name == "DejaVuSans.ttf"  # system or matplotlib's copy
    assert overlay_text.text_runs(f"true: {CYRILLIC}") == [(f"true: {CYRILLIC}", primary)]
    assert not np.array_equal(_band(CYRILLIC), _band("?" * len(CYRILLIC)))  # not question marks


def test_japanese_is_drawn_by_a_font_that_has_it_or_as_question_marks():
    overlay_text.clear_font_caches()
    runs = overlay_text.text_runs(f"true: {JAPANESE}")
    covering = overlay_text.font_file_for("猫")
    if covering is None:  # no CJK font installed: each character a '?', never a crash or a box
        assert "".join(run for run, _ in runs) == "true: ????"
    else:  # e.g. Debian's fonts-droid-fallback or fonts-noto-cjk
        assert runs == [("true: ", overlay_text.primary_font_file()), (JAPANESE, covering)]
        assert not np.array_equal(_band(JAPANESE), _band("?" * len(JAPANESE)))


def test_a_character_the_primary_font_lacks_comes_from_a_fallback_font(fonts):
    dejavu = overlay_text.primary_font_file()
    overlay_text.clear_font_caches()
    droid = overlay_text.font_file_for("猫")
    if droid is None:
        pytest.skip("no installed font covers Japanese (apt-get install fonts-droid-fallback)")
    fonts([dejavu, droid])
    assert overlay_text.text_runs(f"a {CYRILLIC} {JAPANESE}") == [(f"a {CYRILLIC} ", dejavu), (JAPANESE, droid)]
    fonts([dejavu])  # the same text without the fallback font: the Japanese characters become '?'
    assert overlay_text.text_runs(f"a {CYRILLIC} {JAPANESE}") == [(f"a {CYRILLIC} ????", dejavu)]


def test_without_any_truetype_font_ascii_survives_and_nothing_fails(fonts):
    fonts([])
    assert overlay_text.primary_font_file() is None
    assert overlay_text.text_runs(f"cat {CYRILLIC}") == [("cat ?????", None)]
    band = overlay_text.text_band([f"true: {CYRILLIC} {JAPANESE}"], 300, 16)
    assert band.shape[1] == 300 and (band < 128).any()  # drawn in Pillow's built-in font


def test_long_lines_wrap_to_the_width_and_a_long_word_is_cut():
    lines = overlay_text.wrap("pred map: peak off every box, excess energy -0.07 < 0.20", 200, 16)
    assert len(lines) > 1 and all(overlay_text.text_width(line, 16) <= 200 for line in lines)
    assert " ".join(lines) == "pred map: peak off every box, excess energy -0.07 < 0.20"
    cut = overlay_text.wrap("x" * 200, 100, 16)
    assert len(cut) > 1 and "".join(cut) == "x" * 200 and all(overlay_text.text_width(c, 16) <= 100 for c in cut)


def test_an_overlay_caption_in_cyrillic_is_not_question_marks():
    image = np.full((32, 32, 3), 128, np.uint8)
    heat = np.random.default_rng(0).random((32, 32), dtype=np.float32)

    def picture(name: str) -> np.ndarray:
        return draw_overlay(image, np.zeros((0, 4)), [heat], [["id", f"true: {name}"], [f"map of pred: {name}"]])

    assert not np.array_equal(picture(CYRILLIC), picture("?????"))
