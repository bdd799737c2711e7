"""`recsys doctor`: check an installation end to end and say how to fix what is wrong.

Each check returns a :class:`Finding`; a check that raises is a failure with the exception's
message, so one broken part never hides the others. Exit code 0 when nothing failed (warnings
allowed), 1 otherwise.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from recsys.cli.common import DatabaseUrlOption, JsonOption, console, load_settings, print_json

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from recsys.registry.registry import LoadedVersion
    from recsys.settings import Settings

Status = Literal["ok", "warn", "fail", "skip"]

#: Free space below which the artifact folder is a warning, and a failure (a version of a large
#: catalogue needs a few hundred MB; the registry writes a whole version before it renames it).
DISK_WARN_BYTES, DISK_FAIL_BYTES = 2 * 1024**3, 200 * 1024**2
#: User vectors searched when measuring the production index's recall@10 against exact search.
RECALL_QUERIES = 500


@dataclass
class Finding:
    """The outcome of one check; ``fix`` says what to do when it is not ``ok``."""

    check: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class Context:
    """What the checks share: the settings, then what earlier checks found."""

    settings: Settings
    engine: Engine | None = None
    production: LoadedVersion | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def check_settings(context: Context) -> Finding:
    settings = context.settings
    database = _hide_password(settings.database_url)
    detail = (
        f"data dir {settings.data_dir}; database {database}; artifacts {settings.artifacts}; "
        f"log {settings.log_level} {settings.log_format}; "
        f"service URLs {', '.join(settings.service_urls) or 'none'}"
    )
    if settings.api_key is None:
        return Finding(
            "settings",
            "warn",
            f"{detail}; RECSYS_API_KEY unset",
            "set RECSYS_API_KEY before `recsys serve`: without it the write and admin endpoints refuse",
        )
    return Finding("settings", "ok", f"{detail}; API key set")


def check_database(context: Context) -> Finding:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from recsys.db import get_engine
    from recsys.db.schema import current_revision, head_revision

    url = context.settings.database_url
    where = _hide_password(url)
    parsed = make_url(url)
    is_file_database = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    if is_file_database and not Path(str(parsed.database)).expanduser().is_file():
        return Finding("database", "fail", f"no SQLite file at {parsed.database}", "run `recsys db upgrade`")
    engine = get_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # the drivers raise many types; the message is what helps
        reason = str(exc).strip().splitlines()[0]
        return Finding(
            "database",
            "fail",
            f"cannot connect to {where}: {reason}",
            "start the database server, or point RECSYS_DATABASE_URL (or --database-url) at a running one",
        )
    current, head = current_revision(engine), head_revision(engine)
    if current != head:
        return Finding(
            "database",
            "fail",
            f"{where} reachable, schema at {current or 'nothing'}, newest is {head}",
            "run `recsys db upgrade`",
        )
    context.engine = engine
    return Finding("database", "ok", f"{where} reachable, schema current ({head})")


def check_production(context: Context) -> Finding:
    from recsys.registry.registry import ModelRegistry

    if context.engine is None:
        return Finding("production version", "skip", "needs the database")
    registry = ModelRegistry(context.engine, context.settings.artifacts)
    info = registry.production()
    if info is None:
        return Finding(
            "production version",
            "warn",
            "no version is in production, so the service has nothing to serve",
            "run `recsys pipeline run`, or `recsys train --promote`",
        )
    try:
        loaded = registry.load(info.version)
    except Exception as exc:
        return Finding(
            "production version",
            "fail",
            f"{info.version} does not load: {exc}",
            "run `recsys models rollback` to serve the previous version, or retrain with "
            "`recsys pipeline run --full`",
        )
    context.production = loaded
    ndcg = info.metrics.get("ndcg@10")
    quality = "" if ndcg is None else f", validation nDCG@10 {float(ndcg):.4f}"
    return Finding(
        "production version",
        "ok",
        f"{info.version} loads and its checksums hold ({len(loaded.users):,} users, "
        f"{len(loaded.items):,} items{quality})",
    )


def check_index(context: Context) -> Finding:
    import numpy as np

    from recsys.index import INDEX_DIR, ExactIndex, load_index
    from recsys.index.faiss_index import recall_at_k

    loaded = context.production
    if loaded is None:
        return Finding("index recall", "skip", "needs a production version that loads")
    model = loaded.model
    if model.item_factors is None or model.user_factors is None or len(model.user_factors) == 0:
        return Finding("index recall", "skip", f"{loaded.info.model} ranks without item vectors")
    if not (loaded.path / INDEX_DIR).is_dir():
        return Finding(
            "index recall",
            "fail",
            f"{loaded.info.version} has no {INDEX_DIR}/ folder; the service would build one at start-up",
            "run `recsys pipeline run --full` to train and index a new version",
        )
    index = load_index(loaded.path / INDEX_DIR)
    rng = np.random.default_rng(0)
    users = np.sort(rng.choice(len(model.user_factors), min(RECALL_QUERIES, len(model.user_factors)), False))
    queries = np.ascontiguousarray(model.user_factors[users], dtype=np.float32)
    k = min(10, index.n_items)
    found, _ = index.search(queries, k)
    truth, _ = ExactIndex(model.item_factors).search(queries, k)
    recall = recall_at_k(found, truth)
    kind = type(index).__name__
    detail = f"{kind} over {index.n_items:,} items: recall@{k} {recall:.3f} on {len(queries)} users"
    if recall < context.settings.min_index_recall:
        return Finding(
            "index recall",
            "fail",
            f"{detail}, below RECSYS_MIN_INDEX_RECALL {context.settings.min_index_recall}",
            "rebuild the index: `recsys pipeline run --full` (or lower RECSYS_EXACT_INDEX_MAX_ITEMS "
            "to search exactly)",
        )
    return Finding("index recall", "ok", detail)


def check_tensorflow(context: Context) -> Finding:
    try:
        from recsys.runtime.device import import_tensorflow

        tf = import_tensorflow()
    except ImportError as exc:
        return Finding(
            "TensorFlow",
            "warn",
            f"not installed ({exc}); serving and scoring work, training does not",
            "pip install 'recsys[train]' (with 'recsys[gpu]' for CUDA)",
        )
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = ", ".join(gpu.name for gpu in gpus)
        return Finding(
            "TensorFlow", "ok", f"TensorFlow {tf.__version__}, training on {len(gpus)} GPU(s): {names}"
        )
    return Finding(
        "TensorFlow",
        "ok",
        f"TensorFlow {tf.__version__}, no GPU: training runs on the CPU "
        "(install 'recsys[gpu]' on a machine with CUDA to use one)",
    )


def check_faiss(context: Context) -> Finding:
    import numpy as np

    try:
        import faiss
    except ImportError as exc:
        return Finding("FAISS", "fail", f"cannot import faiss ({exc})", "pip install faiss-cpu")
    vectors = np.eye(4, dtype=np.float32)
    index = faiss.IndexFlatIP(4)
    index.add(vectors)
    _, ids = index.search(vectors[2:3], 1)
    if int(ids[0, 0]) != 2:
        return Finding("FAISS", "fail", "a flat index returned a wrong neighbour", "reinstall faiss-cpu")
    return Finding("FAISS", "ok", f"faiss {faiss.__version__} searches correctly")


def check_disk(context: Context) -> Finding:
    folder = context.settings.artifacts
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(existing)
    detail = f"{usage.free / 1024**3:.1f} GiB free of {usage.total / 1024**3:.0f} GiB at {existing}"
    fix = (
        "free space there (`recsys models clean` deletes leftovers; archived versions can go), "
        "or set RECSYS_ARTIFACT_DIR to a larger disk"
    )
    if usage.free < DISK_FAIL_BYTES:
        return Finding("disk space", "fail", detail, fix)
    if usage.free < DISK_WARN_BYTES:
        return Finding("disk space", "warn", detail, fix)
    return Finding("disk space", "ok", detail)


def check_services(context: Context) -> Finding:
    import httpx

    settings = context.settings
    configured = bool(settings.service_urls)
    urls = settings.service_urls or [f"http://{settings.host}:{settings.port}"]
    answers, down = [], []
    for url in urls:
        try:
            response = httpx.get(f"{url.rstrip('/')}/ready", timeout=3.0)
            answers.append(f"{url} {'ready' if response.status_code == 200 else response.status_code}")
            if response.status_code != 200:
                down.append(url)
        except httpx.HTTPError as exc:
            answers.append(f"{url} unreachable ({type(exc).__name__})")
            down.append(url)
    detail = "; ".join(answers)
    if not down:
        return Finding("service", "ok", detail)
    if not configured:
        # Nothing was configured: no service is expected, only reported.
        return Finding("service", "skip", f"RECSYS_SERVICE_URLS unset; {detail}")
    return Finding(
        "service",
        "fail",
        detail,
        "start it with `recsys serve` (GET /ready says why it is not ready), or correct "
        "RECSYS_SERVICE_URLS, which the pipeline asks to reload",
    )


CHECKS: list[Callable[[Context], Finding]] = [
    check_settings,
    check_database,
    check_production,
    check_index,
    check_tensorflow,
    check_faiss,
    check_disk,
    check_services,
]

MARKS = {
    "ok": "[green]ok  [/green]",
    "warn": "[yellow]warn[/yellow]",
    "fail": "[red]FAIL[/red]",
    "skip": "skip",
}


def run_checks(settings: Settings, skip_tensorflow: bool = False) -> list[Finding]:
    """Every check in order; an unexpected exception is that check's failure."""
    context = Context(settings)
    findings = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_").replace("_", " ")
        if skip_tensorflow and check is check_tensorflow:
            findings.append(Finding("TensorFlow", "skip", "--skip-tensorflow"))
            continue
        try:
            findings.append(check(context))
        except Exception as exc:
            findings.append(Finding(name, "fail", f"{type(exc).__name__}: {exc}", "see the message"))
    return findings


def doctor_command(
    skip_tensorflow: Annotated[
        bool,
        typer.Option("--skip-tensorflow", help="Do not import TensorFlow (it takes a few seconds)."),
    ] = False,
    as_json: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Check the settings, database, production version, index, TensorFlow, FAISS, disk space and
    services, with a fix for each problem; exit code 1 when any check fails."""
    from rich.markup import escape

    started = time.perf_counter()
    settings = load_settings(database_url)
    findings = run_checks(settings, skip_tensorflow)
    failed = [finding for finding in findings if finding.status == "fail"]
    if as_json:
        print_json({"healthy": not failed, "checks": [asdict(finding) for finding in findings]})
    else:
        for finding in findings:
            line = f"{MARKS[finding.status]}  [bold]{finding.check}[/bold]: {escape(finding.detail)}"
            console.print(line, soft_wrap=True)
            if finding.fix:
                console.print(f"      fix: {escape(finding.fix)}", soft_wrap=True)
        seconds = time.perf_counter() - started
        verdict = (
            "healthy" if not failed else f"{len(failed)} problem(s): " + ", ".join(f.check for f in failed)
        )
        console.print(f"\n{verdict} ({seconds:.1f} s)")
    if failed:
        raise typer.Exit(1)


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def register(root: typer.Typer) -> None:
    root.command("doctor")(doctor_command)
