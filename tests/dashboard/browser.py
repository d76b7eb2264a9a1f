"""Headless Chromium from Debian, driven by selenium; nothing is ever downloaded.

Selenium Manager (which would fetch a browser or a driver) is skipped because the driver
path is given; a machine without the packages fails with the command that installs them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "apt-get install -y chromium chromium-driver (`.ci/run` does this in CI)"


def require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        raise AssertionError(
            f"the browser test needs Debian's Chromium; missing {', '.join(missing)}. "
            f"Install it with: {INSTALL_HINT}"
        )


@contextmanager
def chromium(
    profile_dir: Path, *, width: int = 1440, height: int = 1500
) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a throwaway profile, quit (and its driver stopped) on exit."""
    require_browser()
    profile_dir.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)
