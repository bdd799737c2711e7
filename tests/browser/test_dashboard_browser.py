"""The dashboard and the API docs in headless Chromium against a served recsys."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from recsys.db import get_engine
from recsys.registry.registry import ModelRegistry
from tests.browser.conftest import API_KEY, BAD_LINES, World, screenshot

pytestmark = pytest.mark.browser

WAIT = 20.0


def wait_for(condition: Any, what: str, timeout: float = WAIT) -> Any:
    """Poll ``condition()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # the element is not there yet, or went stale during a re-render
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def foreign_requests(driver: Any, base: str) -> list[str]:
    """Resources the page loaded from anywhere but the service."""
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [url for url in urls if not url.startswith(base)]


def script_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def production(world: World) -> str | None:
    info = ModelRegistry(get_engine(world.settings.database_url), world.settings.artifacts).production()
    return info.version if info else None


def test_every_panel_renders_with_data(world: World, browser: Any) -> None:
    user, item = "u5", "i0"
    stop = threading.Event()

    def traffic() -> None:  # API requests while the page polls, so that it has a rate to chart
        with httpx.Client(base_url=world.url) as client:
            while not stop.is_set():
                client.get(f"/users/u{int(time.monotonic() * 1000) % 50}/recommendations")
                time.sleep(0.02)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        browser.get(f"{world.url}/dashboard?user={user}&item={item}")
        # Model versions: the table, the production marker and the metric chart.
        rows = css(browser, "#versions-table tbody tr")
        assert {row.get_attribute("data-version") for row in rows} == {world.popularity, world.ials}
        marked = [row.get_attribute("data-version") for row in css(browser, "#versions-table tr.production")]
        assert marked == [production(world)]
        assert css(browser, "#tile-production .value")[0].text == production(world)
        # Both versions validated on the same held-out split: nothing to warn about.
        assert [cell.text for cell in css(browser, "#versions-table td.note")] == ["", ""]
        options = [option.text for option in css(browser, "#metric-select option")]
        assert "ndcg@10" in options and "recall@10" in options
        assert css(browser, "#metric-select")[0].get_attribute("value") == "ndcg@10"
        wait_for(lambda: css(browser, "#metric-chart canvas"), "the metric chart")
        assert css(browser, "#metric-chart canvas")[0].size["width"] > 300

        # Live traffic: a rate above zero once two samples are in, the endpoint listed.
        rate = wait_for(lambda: float(css(browser, "#live-rate")[0].text) or None, "a request rate above 0")
        assert rate > 1
        wait_for(lambda: browser.execute_script("return live.x.length") >= 3, "three traffic samples")
        assert css(browser, "#live-p95")[0].text.endswith("ms")
        wait_for(lambda: css(browser, "#traffic-chart canvas"), "the traffic chart")
        row = wait_for(
            lambda: css(browser, '#endpoints-table tr[data-endpoint="/users/{user_id}/recommendations"]'),
            "the recommendations endpoint in the traffic table",
        )[0]
        assert int(row.find_elements("css selector", "td")[1].text.replace(",", "")) > 10
    finally:
        stop.set()
        sender.join()

    # A user's history with titles next to their recommendations.
    history = css(browser, "#user-history tbody tr")
    recommended = css(browser, "#user-recommendations tbody tr")
    assert history and len(recommended) == 10
    assert all("Synthetic item" in row.text for row in history + recommended)
    seen = {row.find_element("css selector", ".mono").text for row in history}
    assert not seen & {row.find_element("css selector", ".mono").text for row in recommended}

    # An item's similar items.
    assert f"Synthetic item {item[1:]}" in css(browser, "#item-similar h3")[0].text
    similar = css(browser, "#item-similar tbody tr")
    neighbours = {row.find_element("css selector", ".mono").text for row in similar}
    assert len(similar) == 10 and item not in neighbours

    # Ingestion runs with their rejected rows (opened, as a user would).
    runs = css(browser, "#runs-table tbody tr[data-run]")
    assert {run.find_elements("css selector", "td")[2].text for run in runs} == {"items", "interactions"}
    details = css(browser, "details.rejections")
    assert len(details) == 1
    details[0].find_element("css selector", "summary").click()
    reasons = [row.text for row in details[0].find_elements("css selector", ":scope tbody tr")]
    assert len(reasons) == len(BAD_LINES)
    assert "five" in reasons[0] and "missing user id" in reasons[1] and "yesterday" in reasons[2]
    assert "does not keep a table of its runs" in css(browser, "#pipeline-note")[0].text

    assert foreign_requests(browser, world.url) == []
    assert script_errors(browser) == []
    screenshot(browser, "dashboard")


def test_promote_and_rollback_buttons_change_production(world: World, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    candidate = world.ials if production(world) == world.popularity else world.popularity
    browser.get(f"{world.url}/dashboard")
    button = css(browser, f'button.promote[data-version="{candidate}"]')[0]

    # Without a key the page asks for one; with a wrong one the API's 401 is shown.
    button.click()
    message = css(browser, "#admin-message")[0]
    assert "Enter the admin key" in message.text
    browser.find_element(By.ID, "api-key").send_keys("not-the-key")
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    assert browser.find_element(By.ID, "key-status").text == "key set for this tab"
    button.click()
    wait_for(lambda: "401" in message.text, "the 401 of a wrong key")
    assert "invalid API key" in message.text
    assert production(world) != candidate

    browser.find_element(By.ID, "api-key").send_keys(API_KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    button.click()
    wait_for(lambda: f"{candidate} is production now" in message.text, "the promotion message")
    screenshot(browser, "dashboard-promoted-message")
    wait_for(
        lambda: css(browser, "#tile-production .value")[0].text == candidate, "the reloaded page's production"
    )
    assert production(world) == candidate
    assert httpx.get(f"{world.url}/ready").json()["model_version"] == candidate
    marked = [row.get_attribute("data-version") for row in css(browser, "#versions-table tr.production")]
    assert marked == [candidate]
    # The key is kept for this tab across the reload.
    assert browser.find_element(By.ID, "key-status").text == "key set for this tab"
    screenshot(browser, "dashboard-after-promote")

    # Roll back: the page asks for confirmation, then production returns to the previous version.
    previous = world.ials if candidate == world.popularity else world.popularity
    browser.find_element(By.ID, "rollback").click()
    alert = wait_for(lambda: browser.switch_to.alert, "the rollback confirmation")
    assert "Roll production back" in alert.text
    alert.accept()
    wait_for(
        lambda: css(browser, "#tile-production .value")[0].text == previous, "production after the rollback"
    )
    assert production(world) == previous
    assert httpx.get(f"{world.url}/ready").json()["model_version"] == previous
    archived = css(browser, f'#versions-table tr[data-version="{candidate}"] .badge')[0].text
    assert archived == "archived"


def test_swagger_ui_renders_offline(world: World, browser: Any) -> None:
    browser.get(world.url + "/docs")
    wait_for(lambda: len(css(browser, ".swagger-ui .opblock")) >= 10, "the operations Swagger UI renders")
    text = browser.find_element("css selector", "body").text
    assert "recsys" in text and "/users/{user_id}/recommendations" in text
    assert "/admin/versions/{version}/promote" in text
    assert foreign_requests(browser, world.url) == []
    assert script_errors(browser) == []
    screenshot(browser, "docs")
