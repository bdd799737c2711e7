"""A served recsys in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium.

The world is built the way a user builds it: files ingested (with some bad rows), an iALS and a
popularity version trained by the trainer, then ``python -m recsys serve`` on a free port of
127.0.0.1 against that temporary database. The browser resolves no host but 127.0.0.1, so a page
that needs the internet fails visibly.

Without chromium the tests are skipped; ``.ci/run`` installs it and sets
``RECSYS_REQUIRE_BROWSER=1`` so that a missing browser fails the run instead. Screenshots go to
``RECSYS_TEST_ARTIFACTS`` (default ``test-artifacts/``, ignored by git).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from recsys.settings import Settings
from tests.conftest import REPO_ROOT

REQUIRE_BROWSER = os.environ.get("RECSYS_REQUIRE_BROWSER") == "1"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("RECSYS_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts")) / "browser"
API_KEY = "browser-test-key"
N_USERS, N_ITEMS, N_EVENTS = 400, 150, 8000
#: Lines appended to the events file: each is rejected with its own reason.
BAD_LINES = ("u1,i1,five,1700000000", ",i2,4,1700000000", "u2,i3,4,yesterday")


def _missing_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="session")
def browser_available() -> None:
    reason = _missing_browser()
    if reason is None:
        return
    if REQUIRE_BROWSER:
        pytest.fail(f"RECSYS_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(f"{reason}; .ci/run installs them and makes these tests required")


@dataclass(frozen=True)
class World:
    """A running service and what it was built from."""

    url: str
    settings: Settings
    popularity: str
    ials: str
    log: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _build(root: Path, settings: Settings) -> tuple[str, str]:
    from recsys.data.synthetic import generate_synthetic, synthetic_items
    from recsys.db import get_engine, upgrade
    from recsys.ingest.pipeline import ingest_interactions, ingest_items
    from recsys.training.trainer import train

    engine = get_engine(settings.database_url)
    upgrade(engine)
    synthetic_items(N_ITEMS).to_csv(root / "items.csv", index=False)
    generate_synthetic(N_USERS, N_ITEMS, N_EVENTS).to_csv(root / "events.csv", index=False)
    with (root / "events.csv").open("a") as events:
        events.write("".join(line + "\n" for line in BAD_LINES))
    ingest_items(engine, root / "items.csv")
    report = ingest_interactions(engine, root / "events.csv")
    assert report.rows_rejected == len(BAD_LINES), report
    ials = train(engine, settings, "ials")  # the first version becomes production
    popularity = train(engine, settings, "popularity")
    return popularity.version, ials.version


@pytest.fixture(scope="module")
def world(browser_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("served")
    settings = Settings(
        data_dir=root / "data",
        database_url=f"sqlite:///{root / 'recsys.db'}",
        api_key=API_KEY,
        reload_poll_seconds=0,
    )
    popularity, ials = _build(root, settings)
    port = _free_port()
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(settings.data_dir),
        "RECSYS_DATABASE_URL": settings.database_url,
        "RECSYS_API_KEY": API_KEY,
        "RECSYS_RELOAD_POLL_SECONDS": "0",
        "PYTHONPATH": str(REPO_ROOT),
    }
    log = root / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "recsys", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"recsys serve exited with {server.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"recsys serve was not ready within 90 s:\n{log.read_text()}")
            time.sleep(0.3)
        yield World(url, settings, popularity, ials, log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def browser(browser_available: None) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        # No name resolves but the service's: anything fetched from the internet fails.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    """Save the whole page (the window grows to its height) under ARTIFACTS."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(int(height), 800), 6000))
    driver.execute_script("window.scrollTo(0, 0)")
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
