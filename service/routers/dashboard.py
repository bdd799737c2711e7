"""The web dashboard at ``/dashboard``: one server-rendered page for product people.

It shows the model versions (with their metrics over time and promote / rollback buttons that
call the admin endpoints with the API key the page asks for), the ingestion runs with their
rejected rows, a user's history next to their recommendations, an item's similar items, and the
live request rate and latency read from the service's own Prometheus metrics.

The page is a Jinja2 template; its chart library (uPlot) and scripts are served from
``service/static``, so it works without internet access. The retraining pipeline keeps no run
table: the page shows what is stored of it (the versions it registered and the lock it holds
while it runs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from recsys.db.models import IngestionRun, Interaction, Item, Lock, RejectedRow, User
from recsys.errors import RecsysError, UnknownIdError
from recsys.registry.comparison import metric_notes
from recsys.registry.registry import ModelRegistry, VersionInfo
from recsys.retrieval import Ranked, RankOptions
from service import metrics
from service.deps import EngineDep, HolderDep, SettingsDep
from service.routers.recommendations import as_items
from service.schemas import RecommendedItem
from service.state import ServingState

PACKAGE = Path(__file__).resolve().parents[1]
STATIC_URL = "/dashboard/static"
templates = Jinja2Templates(directory=PACKAGE / "templates")


def _when(value: datetime | None) -> str:
    """A stored time as ``2026-01-31 14:05 UTC`` (SQLite hands back naive UTC times)."""
    if value is None:
        return ""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return f"{aware:%Y-%m-%d %H:%M} UTC"


def _number(value: object, digits: int = 4) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return "-"


templates.env.filters["when"] = _when
templates.env.filters["number"] = _number

router = APIRouter(prefix="/dashboard", include_in_schema=False)

#: Rows of each list the page shows (the newest first).
SHOWN_VERSIONS = 50
SHOWN_RUNS = 20
SHOWN_REJECTIONS = 10
SHOWN_HISTORY = 20
SHOWN_RECOMMENDATIONS = 10
#: Endpoints of the dashboard, the docs and the metrics themselves: listed, but left out of the
#: request rate and latency the page charts.
OWN_PREFIXES = ("/dashboard", "/docs", "/redoc", "/openapi.json", "/metrics", "/static-offline-docs")


def mount_static(app: FastAPI) -> None:
    """Serve the page's stylesheet, script and vendored chart library at STATIC_URL.

    A mount sets no ``route`` in the request scope, so /metrics would count these requests as
    "unmatched" next to clients' 404s; the wrapper names the mount instead."""
    files = StaticFiles(directory=PACKAGE / "static")

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = mount
        await files(scope, receive, send)

    mount = Mount(STATIC_URL, app=counted, name="dashboard-static")
    app.router.routes.append(mount)


# --- what the page shows ---------------------------------------------------------------------


@dataclass(frozen=True)
class RejectionRow:
    row_number: int
    reason: str
    raw: str


@dataclass(frozen=True)
class RunRow:
    run: IngestionRun
    rejections: list[RejectionRow]


@dataclass(frozen=True)
class HistoryRow:
    item_id: str
    title: str | None
    kind: str
    value: float
    time: datetime


@dataclass(frozen=True)
class UserPanel:
    user_id: str
    history: list[HistoryRow]
    total: int
    recommendations: list[RecommendedItem]
    strategy: str | None
    error: str | None = None


@dataclass(frozen=True)
class ItemPanel:
    item_id: str
    title: str | None
    genres: list[str]
    similar: list[RecommendedItem]
    error: str | None = None


def ingestion_runs(engine: Engine) -> list[RunRow]:
    """The newest runs, each with its first rejected rows."""
    with Session(engine) as session:
        runs = session.scalars(select(IngestionRun).order_by(IngestionRun.id.desc()).limit(SHOWN_RUNS)).all()
        rows = []
        for run in runs:
            rejections: list[RejectionRow] = []
            if run.rows_rejected:
                found = session.execute(
                    select(RejectedRow.row_number, RejectedRow.reason, RejectedRow.raw)
                    .where(RejectedRow.run_id == run.id)
                    .order_by(RejectedRow.row_number)
                    .limit(SHOWN_REJECTIONS)
                ).all()
                rejections = [RejectionRow(int(number), reason, raw) for number, reason, raw in found]
            rows.append(RunRow(run, rejections))
    return rows


def locks(engine: Engine) -> list[Lock]:
    """Locks held now (the retraining pipeline holds one while it runs)."""
    with Session(engine) as session:
        return list(session.scalars(select(Lock).order_by(Lock.name)).all())


def user_panel(engine: Engine, state: ServingState | None, user_id: str) -> UserPanel:
    """The user's newest stored interactions (with titles) and what the served version recommends."""
    with engine.connect() as connection:
        found = connection.execute(
            select(Item.external_id, Item.title, Interaction.kind, Interaction.value, Interaction.ts)
            .join(User, User.id == Interaction.user_id)
            .join(Item, Item.id == Interaction.item_id)
            .where(User.external_id == user_id)
            .order_by(Interaction.ts.desc(), Interaction.id.desc())
            .limit(SHOWN_HISTORY)
        ).all()
        total = connection.scalar(
            select(func.count(Interaction.id))
            .join(User, User.id == Interaction.user_id)
            .where(User.external_id == user_id)
        )
    history = [
        HistoryRow(item, title, kind, float(value), datetime.fromtimestamp(ts, UTC))
        for item, title, kind, value, ts in found
    ]
    if state is None:
        return UserPanel(user_id, history, int(total or 0), [], None, "no model version is loaded")
    ranked = state.retriever.recommend_user(user_id, RankOptions(k=SHOWN_RECOMMENDATIONS))
    return UserPanel(user_id, history, int(total or 0), as_items(state, ranked), ranked.strategy)


def item_panel(state: ServingState | None, item_id: str) -> ItemPanel:
    """The item's title and genres, and its most similar items in the served version."""
    if state is None:
        return ItemPanel(item_id, None, [], [], "no model version is loaded")
    try:
        indices = state.retriever.item_indices([item_id])
        similar = as_items(
            state, Ranked.row(state.retriever.similar(indices, RankOptions(k=SHOWN_RECOMMENDATIONS)))
        )
    except UnknownIdError as exc:
        return ItemPanel(item_id, None, [], [], str(exc))
    index = int(indices[0])
    return ItemPanel(item_id, state.catalogue.titles[index], list(state.catalogue.genres[index]), similar)


def recent_users(engine: Engine, count: int = 6) -> list[str]:
    """Users of the newest stored interactions (by arrival, which the primary key orders
    without scanning the table): examples to click on."""
    with engine.connect() as connection:
        found = connection.execute(
            select(User.external_id)
            .join(Interaction, Interaction.user_id == User.id)
            .order_by(Interaction.id.desc())
            .limit(count * 20)
        ).all()
    return list(dict.fromkeys(row[0] for row in found))[:count]


def popular_items(state: ServingState | None, count: int = 6) -> list[tuple[str, str | None]]:
    if state is None:
        return []
    counts = state.retriever.popular_counts
    if counts is None:
        return []
    top = np.argsort(-counts, kind="stable")[:count].tolist()
    return [(str(state.items.external_ids[i]), state.catalogue.titles[i]) for i in top]


def version_points(versions: list[VersionInfo], notes: dict[str, str]) -> list[dict[str, Any]]:
    """The versions oldest first, with their numeric metrics and why they may not compare with
    production's (``notes``), for the chart."""
    return [
        {
            "version": info.version,
            "model": info.model,
            "status": info.status,
            "note": notes.get(info.version, ""),
            "created": info.created_at.timestamp(),
            "metrics": {
                name: float(value)
                for name, value in info.metrics.items()
                if isinstance(value, int | float) and not isinstance(value, bool)
            },
        }
        for info in sorted(versions, key=lambda info: (info.created_at, info.version))
    ]


# --- live traffic from the Prometheus metrics -------------------------------------------------


class EndpointTraffic(BaseModel):
    endpoint: str = Field(description="Route template, 'unmatched' for unknown paths.")
    own: bool = Field(description="An endpoint of the dashboard, docs or metrics themselves.")
    requests: float = Field(description="Requests answered since the service started.")
    client_errors: float = Field(description="Of which answered 4xx.")
    server_errors: float = Field(description="Of which answered 5xx.")
    latency_sum: float = Field(description="Seconds spent answering them.")
    buckets: list[float] = Field(description="Cumulative request counts at each of LiveTraffic.bounds.")


class LiveTraffic(BaseModel):
    """Cumulative counters: the page turns two samples into a rate and a latency."""

    time: float = Field(description="Epoch seconds of the sample.")
    bounds: list[float] = Field(description="Latency histogram bucket upper bounds, in seconds.")
    endpoints: list[EndpointTraffic]


def live_traffic() -> LiveTraffic:
    """Parse the service's own /metrics exposition (all workers in multiprocess mode)."""
    body, _ = metrics.render()
    requests: dict[str, list[float]] = {}
    latency_sum: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "recsys_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts = requests.setdefault(sample.labels["endpoint"], [0.0, 0.0, 0.0])
                    code = sample.labels["status"]
                    counts[0] += sample.value
                    counts[1] += sample.value if code.startswith("4") else 0.0
                    counts[2] += sample.value if code.startswith("5") else 0.0
        elif family.name == "recsys_http_request_duration_seconds":
            for sample in family.samples:
                endpoint = sample.labels["endpoint"]
                if sample.name.endswith("_sum"):
                    latency_sum[endpoint] = latency_sum.get(endpoint, 0.0) + sample.value
                elif sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
                    per_bound = buckets.setdefault(endpoint, {})
                    bound = float(sample.labels["le"])
                    per_bound[bound] = per_bound.get(bound, 0.0) + sample.value
    bounds = sorted({bound for per_bound in buckets.values() for bound in per_bound})
    endpoints = [
        EndpointTraffic(
            endpoint=endpoint,
            own=endpoint.startswith(OWN_PREFIXES),
            requests=counts[0],
            client_errors=counts[1],
            server_errors=counts[2],
            latency_sum=latency_sum.get(endpoint, 0.0),
            buckets=[buckets.get(endpoint, {}).get(bound, 0.0) for bound in bounds],
        )
        for endpoint, counts in sorted(requests.items())
    ]
    return LiveTraffic(time=time.time(), bounds=bounds, endpoints=endpoints)


# --- routes ------------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def dashboard(
    request: Request,
    holder: HolderDep,
    engine: EngineDep,
    settings: SettingsDep,
    user: Annotated[str | None, Query(max_length=255)] = None,
    item: Annotated[str | None, Query(max_length=255)] = None,
) -> HTMLResponse:
    """The page; ``user`` and ``item`` choose whose history and which item's neighbours it shows."""
    state = holder.current
    user = (user or "").strip() or None
    item = (item or "").strip() or None
    context: dict[str, Any] = {
        "state": state,
        "static": request.scope.get("root_path", "") + STATIC_URL,
        "user": user,
        "item": item,
        "api_key_configured": bool(settings.api_key and settings.api_key.get_secret_value()),
    }
    try:
        registry = ModelRegistry(engine, settings.artifacts)
        versions = registry.list()
        notes = metric_notes(versions)
        context.update(
            versions=versions[:SHOWN_VERSIONS],
            notes=notes,
            production=next((info for info in versions if info.status == "production"), None),
            points=version_points(versions[: SHOWN_VERSIONS * 4], notes),
            runs=ingestion_runs(engine),
            locks=locks(engine),
            recent_users=recent_users(engine),
            popular_items=popular_items(state),
            user_panel=user_panel(engine, state, user) if user else None,
            item_panel=item_panel(state, item) if item else None,
            database_error=None,
        )
    except (SQLAlchemyError, RecsysError) as exc:
        context.update(
            versions=[], notes={}, production=None, points=[], runs=[], locks=[], recent_users=[],
            popular_items=popular_items(state), user_panel=None,
            item_panel=item_panel(state, item) if item else None,
            database_error=f"the database is unavailable: {type(exc).__name__}: {exc}",
        )  # fmt: skip
    return templates.TemplateResponse(request, "dashboard.html", context)


@router.get("/live", response_model=LiveTraffic)
def live() -> LiveTraffic:
    """Cumulative request counters and latency histograms, polled by the page."""
    return live_traffic()
