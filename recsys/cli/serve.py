"""`recsys serve`: the recommendation API on uvicorn."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Annotated

import typer

from recsys.cli.common import DatabaseUrlOption, console, load_settings


def serve_command(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default: RECSYS_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default: RECSYS_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Worker processes (default: RECSYS_WORKERS).")
    ] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Serve the production model version over HTTP (OpenAPI docs at /docs)."""
    import uvicorn

    from recsys.log import logging_config
    from service import MULTIPROC_ENV

    settings = load_settings(database_url)
    if database_url:
        # Workers are fresh processes that read their settings from the environment.
        os.environ["RECSYS_DATABASE_URL"] = database_url
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    console.print(f"serving on http://{host}:{port} with {workers} worker(s); docs at /docs")
    with contextlib.ExitStack() as cleanup:
        if workers > 1 and not os.environ.get(MULTIPROC_ENV):
            # Each worker writes its metrics here so that /metrics sums all workers; the folder
            # goes when the server stops.
            metrics_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="recsys-metrics-"))
            os.environ[MULTIPROC_ENV] = metrics_dir
        if workers > 1:
            _fork_workers_from_here()
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            # Timestamped text or JSON lines (RECSYS_LOG_FORMAT) in every worker, uvicorn's included.
            log_config=logging_config(settings.log_level, settings.log_format),
        )


def _fork_workers_from_here() -> None:
    """Import the service here and have uvicorn fork its workers from this process.

    uvicorn starts each worker as a fresh interpreter (multiprocessing's spawn) that imports the
    service again: seconds of CPU per worker, paid by all of them at once on a busy machine. A
    forked worker starts with everything imported (and shares those pages with the other
    workers until it writes to them); each still loads the model in its lifespan. Nothing here
    has opened a database connection or started a thread pool that a fork would copy: the
    service's engine is made in each worker, and FAISS is imported by the first model load.
    """
    import multiprocessing

    import service.app  # noqa: F401

    try:
        import uvicorn._subprocess as workers
    except ImportError:  # a uvicorn that moved its private module: it spawns, as it always did
        return
    if isinstance(getattr(workers, "spawn", None), multiprocessing.context.BaseContext):
        workers.spawn = multiprocessing.get_context("fork")  # type: ignore[assignment]


def register(root: typer.Typer) -> None:
    root.command("serve")(serve_command)
