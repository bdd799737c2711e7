"""The dashboard page, its live-traffic feed, the registry admin endpoints and the offline docs
(in-process; tests/browser drives the same page in Chromium)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from recsys.ingest.pipeline import ingest_frame
from recsys.ingest.specs import CsvSpec
from recsys.registry.registry import ModelRegistry, VersionInfo
from recsys.settings import Settings
from service.app import create_app
from tests.service.conftest import API_KEY, popularity_counts, register_popularity, seen_items

KEY = {"X-API-Key": API_KEY}


def test_page_shows_versions_user_and_item(client: TestClient, version: VersionInfo) -> None:
    page = client.get("/dashboard", params={"user": "u3", "item": "i4"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    row = html[html.index(f'data-version="{version.version}" class="production"') :]
    assert '<td class="note">split not recorded</td>' in row[: row.index("</tr>")]  # metrics={}
    # u3's history, newest first, with titles; then what the served version recommends.
    history = html[html.index('id="user-history"') : html.index('id="user-recommendations"')]
    assert all(f"Movie {i}" in history for i in seen_items(3))
    assert f"{len(seen_items(3))} newest of {len(seen_items(3))}" in history
    recommended = html[html.index('id="user-recommendations"') : html.index('id="item-card"')]
    best = max(
        (i for i in range(len(popularity_counts())) if i not in seen_items(3)),
        key=lambda i: (popularity_counts()[i], -i),
    )
    assert re.search(rf"<td>1</td>\s*<td><a [^>]*>Movie {best}</a>", recommended)
    similar = html[html.index('id="item-similar"') :]
    assert "Movie 4" in similar and similar.count("<tr>") == 1 + 10


def test_unknown_item_and_user_are_explained(client: TestClient) -> None:
    html = client.get("/dashboard", params={"user": "nobody", "item": "zz"}).text
    assert "No interactions are stored for nobody." in html
    assert "unknown item id(s) &#39;zz&#39;" in html
    assert ">popular<" in html.replace(" ", "")


def test_page_escapes_what_it_shows(client: TestClient) -> None:
    html = client.get("/dashboard", params={"user": "<script>alert(1)</script>"}).text
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_ingestion_runs_show_their_rejected_rows(client: TestClient, registry: ModelRegistry) -> None:
    frame = pd.DataFrame(
        {"user_id": ["u1", "", "u2"], "item_id": ["i1", "i2", "i3"], "rating": ["5", "4", "lots"],
         "timestamp": ["2000", "2001", "2002"]}
    )  # fmt: skip
    report = ingest_frame(registry.engine, frame, spec=CsvSpec(), source="bad-rows.csv")
    assert report.rows_rejected == 2
    html = client.get("/dashboard").text
    runs = html[html.index('id="runs-table"') :]
    assert "bad-rows.csv" in runs
    rejected = runs[runs.index(f'details class="rejections" data-run="{report.run_id}"') :]
    rows = re.findall(r'<td class="num">(\d+)</td><td>([^<]+)</td>', rejected[: rejected.index("</details>")])
    assert [int(number) for number, _ in rows] == [2, 3]
    assert "lots" in rejected and "No pipeline or training run holds a lock now." in html


def test_promote_and_rollback_through_the_api(
    client: TestClient, registry: ModelRegistry, settings: Settings, version: VersionInfo
) -> None:
    candidate = register_popularity(registry, settings, promote=False)
    path = f"/admin/versions/{candidate.version}/promote"
    assert client.post(path).status_code == 401
    assert client.post(path, headers={"X-API-Key": "wrong"}).status_code == 401
    refused = client.post(path, headers=KEY, json={"force": False})
    assert refused.status_code == 409 and "force" in refused.json()["detail"]
    # The flag that bypasses the guard is a JSON boolean, never 0/1 or a string (found by schemathesis).
    assert client.post(path, headers=KEY, json={"force": 0}).status_code == 422
    assert registry.production().version == version.version  # type: ignore[union-attr]
    promoted = client.post(path, headers=KEY, json={"force": True})
    assert promoted.status_code == 200
    body = promoted.json()
    assert body["production"]["version"] == candidate.version and body["previous"] == version.version
    assert body["serving"] == candidate.version and body["detail"] is None
    assert registry.production().version == candidate.version  # type: ignore[union-attr]
    assert client.get("/ready").json()["model_version"] == candidate.version
    listed = client.get("/admin/versions", headers=KEY).json()
    assert [(row["version"], row["status"]) for row in listed] == [
        (candidate.version, "production"), (version.version, "candidate")
    ]  # fmt: skip

    rolled = client.post("/admin/rollback", headers=KEY)
    assert rolled.status_code == 200 and rolled.json()["production"]["version"] == version.version
    assert registry.get(candidate.version).status == "archived"
    assert client.get("/ready").json()["model_version"] == version.version
    again = client.post("/admin/rollback", headers=KEY)
    assert again.status_code == 409 and "nothing to roll back to" in again.json()["detail"]
    missing = client.post("/admin/versions/no-such-version/promote", headers=KEY)
    assert missing.status_code == 404 and "'no-such-version'" in missing.json()["detail"]


def test_live_feed_counts_requests_by_endpoint(client: TestClient) -> None:
    def endpoint(name: str) -> dict[str, object]:
        sample = client.get("/dashboard/live").json()
        return next((row for row in sample["endpoints"] if row["endpoint"] == name), {"requests": 0.0})

    before = float(endpoint("/users/{user_id}/recommendations")["requests"])  # type: ignore[arg-type]
    for _ in range(7):
        client.get("/users/u1/recommendations")
    client.get("/users/u1/recommendations", params={"k": 0})
    row = endpoint("/users/{user_id}/recommendations")
    assert row["requests"] == before + 8 and row["own"] is False
    assert float(row["client_errors"]) >= 1  # type: ignore[arg-type]
    sample = client.get("/dashboard/live").json()
    assert sample["bounds"] == sorted(sample["bounds"]) and len(row["buckets"]) == len(sample["bounds"])  # type: ignore[arg-type]
    assert next(r for r in sample["endpoints"] if r["endpoint"] == "/dashboard/live")["own"] is True


@pytest.mark.parametrize("path", ["/docs", "/dashboard"])
def test_pages_load_nothing_from_other_hosts(client: TestClient, path: str) -> None:
    html = client.get(path).text
    assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", html)
    for asset in re.findall(r"""(?:src|href)=["']?(/[^"' >]+\.(?:js|css))""", html):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 1000, asset


def test_page_says_when_the_database_is_away(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(ModelRegistry, "list", unavailable)
    page = client.get("/dashboard", params={"item": "i4"})
    assert page.status_code == 200
    assert 'id="database-error">the database is unavailable: OperationalError' in page.text
    assert "connection refused" in page.text
    similar = page.text[page.text.index('id="item-similar"') :]  # served from memory meanwhile
    assert similar.count("<tr>") == 1 + 10


def test_page_before_any_version(settings: Settings, registry: ModelRegistry) -> None:
    with TestClient(create_app(settings)) as fresh:
        html = fresh.get("/dashboard", params={"user": "u3", "item": "i4"}).text
    assert "No model version is registered yet" in html and "no model loaded" in html
    history = html[html.index('id="user-history"') : html.index('id="user-recommendations"')]
    assert all(f"Movie {i}" in history for i in seen_items(3))  # read from the database
    assert html.count("no model version is loaded") == 2  # the user's and the item's panels


def test_damaged_version_is_refused_with_its_file(
    client: TestClient, registry: ModelRegistry, settings: Settings, version: VersionInfo
) -> None:
    candidate = register_popularity(registry, settings, promote=False)
    damaged = candidate.path / "id_maps.npz"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"x")
    refused = client.post(f"/admin/versions/{candidate.version}/promote", headers=KEY, json={"force": True})
    assert refused.status_code == 409
    assert "damaged" in refused.json()["detail"] and "id_maps.npz" in refused.json()["detail"]
    assert registry.production().version == version.version  # type: ignore[union-attr]


def test_promote_names_a_malformed_version_id(client: TestClient) -> None:
    for bad in ("a%00b", "x" * 65):
        response = client.post(f"/admin/versions/{bad}/promote", headers=KEY)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["path", "version"]
