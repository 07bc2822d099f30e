"""review.html in a real browser: Debian's headless Chromium driven by Selenium.

Every picture loads, sorting and filtering change the visible rows, and a class name carrying a
``<script>`` tag is shown as text, never run. Skipped when Chromium, chromedriver or Selenium is missing,
except in CI (``CI=true``), where that is a failure (.ci/run installs them).
"""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest

from pipeline.reports.browser import find_chromium
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process, write_classes

EVIL = "<script>document.title='pwned';window.pwned=1</script>"


def _browser_or_skip():
    missing = None
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing = "selenium is not installed (pip install -e '.[test]')"
    if missing is None and find_chromium() is None:
        missing = "chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {missing}")
        pytest.skip(missing)
    from pipeline.reports.browser import headless_chromium

    return headless_chromium(1300, 900)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    good_dataset(tmp / "data", 18)
    write_classes(tmp / "data", (("n001", EVIL), ("n002", "dog"), ("n003", "bird")))
    run_in_process(base_overrides(tmp / "data", tmp / "cache", **{"report.overlays": "all"}), tmp / "run")
    return tmp / "run"


@pytest.fixture(scope="module")
def page(run_dir):
    driver = _browser_or_skip()
    driver.get((run_dir / "review.html").as_uri())
    yield driver
    driver.quit()


def visible_ids(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.image-row')).filter(r => r.style.display !== 'none').map(r => r.dataset.id)"
    )


def test_every_picture_loads(page, run_dir):
    count = page.execute_script("return document.images.length")
    assert count >= 18  # one overlay per image (report.overlays=all)
    page.execute_script("Array.from(document.images).forEach(i => { i.loading = 'eager'; i.scrollIntoView(); })")
    deadline = time.time() + 20
    while time.time() < deadline and not page.execute_script(
        "return Array.from(document.images).every(i => i.complete)"
    ):
        time.sleep(0.2)
    broken = page.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    )
    assert broken == []


def test_a_script_in_a_class_name_is_text_not_code(page):
    assert page.title == "cam-audit review"
    assert page.execute_script("return window.pwned === undefined")
    assert EVIL in page.find_element("tag name", "body").text  # shown literally


def test_sorting_changes_the_order_of_the_rows(page, run_dir):
    frame = pd.read_parquet(run_dir / "samples.parquet")
    before = visible_ids(page)
    header = page.find_element("css selector", "#image-table th[data-key='confidence']")
    header.click()
    ascending = visible_ids(page)
    by_confidence = frame.set_index("id").loc[ascending, "confidence"].tolist()
    assert by_confidence == sorted(by_confidence) and ascending != before
    header.click()
    assert (
        visible_ids(page) == ascending[::-1]
        or frame.set_index("id").loc[visible_ids(page), "confidence"].is_monotonic_decreasing
    )


def test_filters_change_the_visible_rows(page, run_dir):
    from selenium.webdriver.support.ui import Select

    frame = pd.read_parquet(run_dir / "samples.parquet").set_index("id")
    total = len(visible_ids(page))
    category = frame["triage"].value_counts().index[-1]
    Select(page.find_element("id", "filter-triage")).select_by_value(category)
    shown = visible_ids(page)
    assert 0 < len(shown) < total and set(frame.loc[shown, "triage"]) == {category}
    Select(page.find_element("id", "filter-triage")).select_by_value("")
    Select(page.find_element("id", "filter-class")).select_by_value("dog")
    shown = visible_ids(page)
    assert (
        shown
        and all("dog" in (frame.loc[i, "label_name"], frame.loc[i, "pred_name"]) for i in shown)
        and len(shown) < total
    )
    Select(page.find_element("id", "filter-class")).select_by_value("")
    box = page.find_element("id", "filter-confidence")
    threshold = float(frame["confidence"].median())
    page.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))", box, str(threshold)
    )
    shown = visible_ids(page)
    assert set(shown) == set(frame.index[frame["confidence"] >= threshold])
    cards = page.execute_script(
        "return Array.from(document.querySelectorAll('.image-card')).filter(c => c.style.display !== 'none').length"
    )
    assert cards == len(shown)  # the galleries follow the same filter
