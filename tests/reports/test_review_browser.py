"""review.html in a real browser: Debian's headless Chromium driven by Selenium.

Every picture loads, sorting and filtering change the visible rows (the confidence filter in percent, like
its column), a class name carrying a ``<script>`` tag is shown as text, never run, the legend is shown,
the galleries are thumbnails that open the full overlay, ids and triage links land clear of the sticky
filter bar, and a run with many cards stays a page of bounded height. Skipped when Chromium, chromedriver
or Selenium is missing, except in CI (``CI=true``), where that is a failure (.ci/run installs them).
"""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest

from tests.browser import find_chromium
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process, write_classes

EVIL = "<script>document.title='pwned';window.pwned=1</script>"
IMAGES = 120  # every one drawn (report.overlays=all): a gallery of many cards
WINDOW = (1300, 900)
# Gallery height per card at WINDOW's width: the galleries are grids of thumbnails (25-50 px per card
# measured: 5 cards a row; full overlays at their natural width, one a row, took over 500). The rest of the
# page (headline, triage, tables; the image table scrolls in a box) stays under FIXED_PAGE_HEIGHT.
MAX_PIXELS_PER_CARD = 80
FIXED_PAGE_HEIGHT = 4000


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
    from tests.browser import headless_chromium

    return headless_chromium(*WINDOW)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    good_dataset(tmp / "data", IMAGES, side=16)
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
    assert count >= IMAGES  # one thumbnail per image (report.overlays=all)
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
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", header)
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
    threshold = round(100 * float(frame["confidence"].median()), 1)  # percent, as the column shows it
    assert box.find_element("xpath", "..").text.strip().endswith("%")
    set_confidence(page, threshold)
    shown = visible_ids(page)
    assert 0 < len(shown) < total
    assert set(shown) == set(frame.index[100 * frame["confidence"] >= threshold])
    cards = page.execute_script(
        "return Array.from(document.querySelectorAll('.image-card')).filter(c => c.style.display !== 'none').length"
    )
    assert cards == len(shown)  # the galleries follow the same filter
    set_confidence(page, 0)


def set_confidence(page, percent: float) -> None:
    box = page.find_element("id", "filter-confidence")
    page.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))", box, str(percent)
    )


def test_the_legend_is_shown_with_the_box_colours_and_the_peak(page):
    legend = page.find_element("id", "legend")
    assert legend.is_displayed()
    text = legend.text
    assert "annotated box" in text and "thresholded at tau = 0.15" in text and "peak" in text
    colours = page.execute_script(
        "return Array.from(document.querySelectorAll('#legend .box')).map(b => getComputedStyle(b).borderTopColor)"
    )
    assert colours == ["rgb(0, 255, 0)", "rgb(255, 0, 255)"]  # the overlays' green and magenta
    titles = page.execute_script("return Array.from(document.querySelectorAll('#legend abbr')).map(a => a.title)")
    assert titles[0].startswith("share of the map's energy") and titles[1].startswith("(in box - box area)")


def test_cards_are_small_thumbnails_that_open_the_full_overlay(page, run_dir):
    cards = page.execute_script(
        """return Array.from(document.querySelectorAll('.image-card')).map(c => {
             var img = c.querySelector('img'), r = c.getBoundingClientRect();
             return {src: img.getAttribute('src'), href: img.parentElement.getAttribute('href'), width: r.width,
                     imageHeight: img.getBoundingClientRect().height};
           })"""
    )
    assert len(cards) == IMAGES
    for card in cards:
        assert card["src"].startswith("overlays/thumbs/") and card["href"] == card["src"].replace("thumbs/", "")
        assert (run_dir / card["href"]).is_file()  # the link opens the full-size picture
        assert 200 <= card["width"] <= 400 and card["imageHeight"] <= 160
    per_row = page.execute_script(
        "var tops = Array.from(document.querySelectorAll('.image-card')).map(c => c.getBoundingClientRect().top);"
        "return tops.filter(t => t === tops[0]).length"
    )
    assert per_row >= 3  # a grid, not one picture per row


def test_many_cards_stay_a_page_of_bounded_height(page):
    height = page.execute_script("return document.documentElement.scrollHeight")
    cards = page.execute_script("return document.querySelectorAll('.image-card').length")
    galleries = page.execute_script(
        "var grids = document.querySelectorAll('.grid');"
        "return grids[grids.length - 1].getBoundingClientRect().bottom"
        " - document.querySelector('h3[id^=gallery-]').getBoundingClientRect().top"
    )
    table = page.execute_script("return document.querySelector('.table-box').getBoundingClientRect().height")
    assert cards == IMAGES and galleries <= MAX_PIXELS_PER_CARD * cards, (galleries, cards)
    assert table <= 0.65 * WINDOW[1]  # 120 rows scroll inside their box
    assert height <= FIXED_PAGE_HEIGHT + MAX_PIXELS_PER_CARD * cards, height


def _below_the_filter_bar(page, element) -> bool:
    bar = page.execute_script("return document.querySelector('.filters').getBoundingClientRect().bottom")
    top = page.execute_script("return arguments[0].getBoundingClientRect().top", element)
    return bar <= top < WINDOW[1]


def test_an_id_in_the_table_jumps_to_its_card_clear_of_the_filter_bar(page):
    link = page.find_elements("css selector", "#image-table a.card-link")[7]
    sample_id = link.text
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
    link.click()
    card = page.find_element("css selector", f"#{link.get_attribute('href').split('#')[1]}")
    assert card.get_attribute("data-id") == sample_id
    time.sleep(0.2)
    assert _below_the_filter_bar(page, card)


def test_a_triage_link_scrolls_its_gallery_heading_clear_of_the_filter_bar(page):
    page.execute_script("window.scrollTo(0, 0)")
    links = page.find_elements("css selector", "#triage-counts a")
    assert links
    target = links[-1].get_attribute("href").split("#")[1]
    links[-1].click()
    time.sleep(0.2)
    assert _below_the_filter_bar(page, page.find_element("id", target))
