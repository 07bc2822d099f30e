"""A headless Chromium for the review page's browser test and screenshot (Debian's ``chromium`` and
``chromium-driver`` packages driven by Selenium; nothing is downloaded at run time).

Selenium is in the ``test`` extra; the audit itself never imports this module.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver",)
# No network, no background services, no first-run dialogs, no GPU: a fresh profile every time.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def find_chromium() -> tuple[str, str] | None:
    """``(browser, driver)`` paths of Debian's Chromium and chromedriver, or None when either is missing."""
    browser = next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), shutil.which("chromium"))
    driver = next((p for p in DRIVER_CANDIDATES if Path(p).is_file()), shutil.which("chromedriver"))
    return (browser, driver) if browser and driver else None


def headless_chromium(width: int = 1400, height: int = 1000):
    """A Selenium WebDriver on a headless Chromium with a fresh ``--user-data-dir`` (removed by ``quit``).

    Raises RuntimeError when the browser or its driver is not installed (``apt-get install chromium
    chromium-driver``).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise RuntimeError("Chromium or chromedriver not found: apt-get install -y chromium chromium-driver")
    browser, driver = found
    profile = tempfile.mkdtemp(prefix="cam-audit-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    quit_session = session.quit

    def quit_and_clean() -> None:
        try:
            quit_session()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    session.quit = quit_and_clean
    return session
