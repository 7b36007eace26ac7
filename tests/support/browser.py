"""Headless Chromium driven by Selenium (Debian's chromium and chromium-driver, installed by
scripts/browser.sh, which scripts/test.sh runs as root)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    for path in (CHROMIUM, DRIVER):
        if not Path(path).exists():
            return f"{path} is not installed (run `bash scripts/browser.sh install` as root; scripts/test.sh does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def headless_chromium(width: int = 1280, height: int = 1400):
    """A headless Chromium that keeps the page's console messages (driver.get_log("browser")).
    The system's driver and browser are named, so Selenium never tries to download one."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def console_errors(driver) -> list[str]:
    """The page's console errors and failed loads since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def keep_artifact(path: Path) -> None:
    """Copy a test's file (e.g. a screenshot) to $TEST_ARTIFACTS when that is set."""
    folder = os.environ.get("TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)
