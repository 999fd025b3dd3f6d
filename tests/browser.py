"""Headless Chromium for the tests that look at a page as a person would: Selenium driving the
Debian `chromium` and `chromium-driver` packages (`make test` installs them where it can). Where
they are missing, `skip_without_chromium()` skips the test and says how to install them."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Screenshots and logs worth keeping after a run (CI can collect the folder).
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / ".airflow" / "test-artifacts")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def skip_without_chromium() -> None:
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        pytest.skip(
            f"headless Chromium unavailable ({', '.join(missing)} not found): "
            "install the Debian packages with `apt-get install -y chromium chromium-driver`"
        )


@contextlib.contextmanager
def chromium(profile: Path, window: str = "1600,1000") -> Iterator:
    """A headless Chromium (a Selenium `webdriver.Chrome`) with its own profile folder, closed at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (*FLAGS, f"--window-size={window}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = Service(executable_path=shutil.which("chromedriver"), log_output=str(profile.parent / "chromedriver.log"))
    browser = webdriver.Chrome(options=options, service=service)
    try:
        yield browser
    finally:
        browser.quit()


def screenshot(browser, name: str) -> Path:
    """The page as it is now, kept as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    shot.write_bytes(browser.get_screenshot_as_png())
    return shot
