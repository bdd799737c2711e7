"""Serving benchmark: latency and throughput of GET /users/{id}/recommendations on ml-100k.

Loads ml-100k into a temporary SQLite database, trains the default model with its default
settings, as ``recsys train`` does (the trainer registers it, promotes it and builds its FAISS
index), starts ``recsys serve``
with 2 workers on 127.0.0.1 and drives it with ``wrk`` (bounded duration, loopback only) at
concurrency 1, 8 and 32 over all ml-100k user ids. In the same run a bare FastAPI app that only
looks up the user vector and searches the same FAISS index is measured the same way, in one-second
rounds that alternate with the service's at each level, so the service's overhead is visible and
the ratio holds up when other work on the machine comes and goes. p50/p99 are the medians of the
rounds' figures ("worst" is the highest round p99).

Then the users who just acted: 200 users post one feedback event each (POST /interactions), so
the service folds them in (and caches their vector until they act again). In alternating rounds:
at concurrency 8, a trained user's GET, a folded-in user's GET and POST /recommendations with a
20-item history (a different random history each request: never cached); at concurrency 32, a
trained user's GET, a folded-in user's GET and the bare endpoint.

    python benchmarks/serve_benchmark.py [--seconds 5] [--data-dir PATH/TO/ml-100k]

Targets on the 2-core machine: p99 < 20 ms at concurrency 8; >= 1000 requests/s at 32; the
service keeps >= 70 % of the bare endpoint's throughput; zero errors. For users who just acted:
a folded-in user's GET p99 <= 2x a trained user's, POST /recommendations (20 items) p99 <= 2x a
trained user's GET, and a folded-in user's throughput at 32 >= 0.7x the bare endpoint's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# uvicorn imports this file as ``benchmarks.serve_benchmark`` for the bare app: its sibling
# module must be importable then too, not only when the script runs from its own folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_process import free_port, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)
BARE_ENV = "RECSYS_BENCH_VERSION_DIR"
API_KEY = "serve-benchmark"
#: Users who post feedback before the fold-in rounds (and are then folded in).
ACTING_USERS = 200


# --- the bare comparison app (imported by uvicorn in its workers) ------------------------------


def bare_app() -> Any:
    """FastAPI app that answers with a FAISS search only: user vector lookup + top 10 from the
    version's saved FAISS index, called directly."""
    import faiss
    import numpy as np
    from fastapi import FastAPI, HTTPException

    from recsys.models import load_model
    from recsys.registry.registry import load_id_maps

    version_dir = Path(os.environ[BARE_ENV])
    model = load_model(version_dir / "model")
    users, items = load_id_maps(version_dir / "id_maps.npz")
    index = faiss.read_index(str(version_dir / "index" / "index.faiss"))
    vectors = model.user_factors
    assert vectors is not None
    external = items.external_ids
    app = FastAPI()

    @app.get("/users/{user_id}/recommendations")
    async def recommend(user_id: str, k: int = 10) -> dict[str, Any]:
        position = users.index(user_id)
        if position is None:
            raise HTTPException(404, user_id)
        scores, ids = index.search(vectors[position : position + 1], k)
        return {"items": [str(external[i]) for i in ids[0]], "scores": np.asarray(scores[0]).tolist()}

    return app


# --- driving -------------------------------------------------------------------------------


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %f %f %f\\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout, summary.errors.status, summary.duration,
    0, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""
GET_SCRIPT = """
local ids = {%s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/users/" .. ids[(n %% #ids) + 1] .. "/recommendations?k=10")
end
"""
POST_SCRIPT = """
local bodies = {%s}
local n = 0
local headers = {["Content-Type"] = "application/json"}
request = function()
  n = n + 1
  return wrk.format("POST", "/recommendations", headers, bodies[(n %% #bodies) + 1])
end
"""


def get_script(users: list[str]) -> str:
    """GET /users/{id}/recommendations over ``users`` in turn."""
    return GET_SCRIPT % ",".join(json.dumps(user) for user in users) + WRK_DONE


def post_script(items: list[str], n_bodies: int = 500, length: int = 20, seed: int = 0) -> str:
    """POST /recommendations with ``n_bodies`` random ``length``-item histories in turn."""
    import random

    rng = random.Random(seed)
    bodies = [json.dumps({"items": rng.sample(items, length), "k": 10}) for _ in range(n_bodies)]
    return POST_SCRIPT % ",".join(json.dumps(body) for body in bodies) + WRK_DONE


def run_wrk(base: str, script_text: str, concurrency: int, seconds: float, workdir: Path) -> dict[str, float]:
    script = workdir / "bench.lua"
    script.write_text(script_text)
    command = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "2s", "-s", str(script), base,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) \d+ ([\d.]+) ([\d.]+) ([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    requests, socket_errors, status_errors, duration_us = (int(match.group(i)) for i in range(1, 5))
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": socket_errors + status_errors,
        "seconds": duration_us / 1e6,
        "throughput": requests / (duration_us / 1e6),
        "p50_ms": float(match.group(5)) / 1000,
        "p99_ms": float(match.group(6)) / 1000,
    }


def prepare(workdir: Path, data_dir: Path | None) -> tuple[dict[str, str], Path, list[str], list[str]]:
    """ml-100k in a fresh database and a trained, promoted version of the default model with its index."""
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(workdir / "data"),
        "RECSYS_DATABASE_URL": f"sqlite:///{workdir / 'data' / 'recsys.db'}",
        "RECSYS_RELOAD_POLL_SECONDS": "0",
        "RECSYS_LOG_LEVEL": "warning",
        "RECSYS_API_KEY": API_KEY,
        "PYTHONPATH": str(REPO_ROOT),
    }
    os.environ.update(env)
    from recsys.db import get_engine, upgrade
    from recsys.ingest import ingest_movielens
    from recsys.registry.registry import ModelRegistry
    from recsys.settings import get_settings
    from recsys.training.trainer import train

    get_settings.cache_clear()
    settings = get_settings()
    engine = get_engine(settings.database_url)
    upgrade(engine)
    started = time.perf_counter()
    ingest_movielens(engine, "ml-100k", data_dir=data_dir)
    info = train(engine, settings, promote=True, force=True)  # the default model, as a user gets it
    seconds = time.perf_counter() - started
    print(f"prepared ml-100k and trained {settings.default_model} {info.version} in {seconds:.1f}s")
    loaded = ModelRegistry(engine, settings.artifacts).load(info.version)
    assert (loaded.path / "index").is_dir(), "the trainer did not attach an index"
    return env, loaded.path, loaded.users.to_list(), loaded.items.to_list()


Scenario = tuple[str, int, str]  # (label, port, wrk script)


def alternate(
    scenarios: list[Scenario], concurrency: int, seconds: int, workdir: Path
) -> dict[str, dict[str, float]]:
    """``seconds`` one-second rounds of each scenario, in an order that alternates (A B B A ...):
    background load that comes and goes on the shared machine then hits all alike."""
    rounds: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in scenarios}
    for round_ in range(seconds):
        for label, port, script in scenarios if round_ % 2 == 0 else list(reversed(scenarios)):
            rounds[label].append(run_wrk(f"http://127.0.0.1:{port}", script, concurrency, 1, workdir))
    return {label: combine(rows) for label, rows in rounds.items()}


def measure(
    servers: dict[str, tuple[list[str], dict[str, str], int]],
    users: list[str],
    items: list[str],
    seconds: int,
    workdir: Path,
) -> tuple[dict[str, list[dict[str, float]]], dict[str, dict[str, float]]]:
    """Start both servers; at each concurrency drive them with trained users' GETs in
    alternating rounds; then let ``ACTING_USERS`` users post feedback and measure the fold-in
    scenarios. An idle server waiting on its socket costs nothing while the other is measured."""
    processes = []
    try:
        for name, (command, env, port) in servers.items():
            processes.append(start(command, env, workdir / f"{name}.log"))
            ready_url = f"http://127.0.0.1:{port}/" + ("ready" if name == "service" else "docs")
            print(f"{name}: ready after {wait_ready(ready_url, timeout=120):.2f}s")
        port, bare_port = servers["service"][2], servers["bare"][2]
        acting, trained = users[:ACTING_USERS], users[ACTING_USERS:]
        trained_get = get_script(trained)
        for each in (port, bare_port):
            run_wrk(f"http://127.0.0.1:{each}", trained_get, 8, 1, workdir)  # warm-up of both workers
        results: dict[str, list[dict[str, float]]] = {"service": [], "bare": []}
        for concurrency in CONCURRENCY:
            level = alternate(
                [("service", port, trained_get), ("bare", bare_port, get_script(users))],
                concurrency, seconds, workdir,
            )  # fmt: skip
            for name in results:
                results[name].append(level[name])
        post_feedback(port, acting, items)
        folded_get = get_script(acting)
        # Each worker folds every acting user in once (the cost POST /recommendations shows), then
        # answers from its cache until the user acts again: warm up long enough for all of them.
        run_wrk(f"http://127.0.0.1:{port}", folded_get, 8, 3, workdir)
        fold_in = alternate(
            [("trained GET", port, trained_get), ("folded-in GET", port, folded_get),
             ("POST 20 items", port, post_script(items))],
            8, seconds, workdir,
        )  # fmt: skip
        at_32 = alternate(
            [("trained GET", port, trained_get), ("folded-in GET", port, folded_get),
             ("bare", bare_port, get_script(users))],
            32, seconds, workdir,
        )  # fmt: skip
        fold_in.update({f"{label} at 32": row for label, row in at_32.items()})
        return results, fold_in
    finally:
        for process in processes:
            stop(process)


def post_feedback(port: int, users: list[str], items: list[str]) -> None:
    """One event per user (an item picked at random), stored through the API in one request."""
    import random

    rng = random.Random(1)
    events = [{"user_id": user, "item_id": rng.choice(items), "value": 4.0} for user in users]
    response = httpx.post(
        f"http://127.0.0.1:{port}/interactions", json=events, headers={"X-API-Key": API_KEY}, timeout=60
    )
    response.raise_for_status()
    check = httpx.get(f"http://127.0.0.1:{port}/users/{users[0]}/recommendations", timeout=10).json()
    assert check["strategy"] == "folded-in", check


def combine(rounds: list[dict[str, float]]) -> dict[str, float]:
    """One level from its rounds: throughput over all of them, median and worst p50/p99."""
    return {
        "concurrency": rounds[0]["concurrency"],
        "requests": sum(row["requests"] for row in rounds),
        "errors": sum(row["errors"] for row in rounds),
        "throughput": sum(row["requests"] for row in rounds) / sum(row["seconds"] for row in rounds),
        "p50_ms": statistics.median(row["p50_ms"] for row in rounds),
        "p99_ms": statistics.median(row["p99_ms"] for row in rounds),
        "p99_worst_ms": max(row["p99_ms"] for row in rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="Duration of each load level.")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="extracted ml-100k folder (default: download it)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="recsys-serve-bench-"))
    try:
        env, version_dir, users, items = prepare(workdir, args.data_dir)
        seconds = max(1, round(args.seconds))
        port, bare_port = free_port(), free_port()
        recsys_cli = str(Path(sys.executable).parent / "recsys")
        service_cmd = [recsys_cli, "serve", "--port", str(port), "--workers", "2"]
        bare_cmd = [sys.executable, "-m", "uvicorn", "benchmarks.serve_benchmark:bare_app", "--factory",
                    "--port", str(bare_port), "--workers", "2", "--log-level", "warning"]  # fmt: skip
        servers = {
            "service": (service_cmd, env, port),
            "bare": (bare_cmd, {**env, BARE_ENV: str(version_dir)}, bare_port),
        }
        results, fold_in = measure(servers, users, items, seconds, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    service, bare = results["service"], results["bare"]
    print(
        f"\nGET /users/{{id}}/recommendations?k=10, ml-100k, default model, 2 workers, {seconds}s per level"
    )
    print(
        f"{'server':<8} {'conc':>4} {'requests':>9} {'errors':>6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'worst':>7} {'of bare':>7}"
    )
    for name, rows in (("service", service), ("bare", bare)):
        for row, reference in zip(rows, bare, strict=True):
            print(
                f"{name:<8} {row['concurrency']:>4} {row['requests']:>9} {row['errors']:>6} "
                f"{row['throughput']:>8.0f} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} "
                f"{row['p99_worst_ms']:>7.2f} {row['throughput'] / reference['throughput']:>7.0%}"
            )
    at8, at32 = service[1], service[2]
    ratio = at32["throughput"] / bare[2]["throughput"]
    print(
        f"\np99 at 8: {at8['p99_ms']:.2f} ms (median of 1 s rounds; worst {at8['p99_worst_ms']:.2f}; "
        "target < 20) | "
        f"throughput at 32: {at32['throughput']:.0f} req/s (target >= 1000) | "
        f"service/bare at 32: {ratio:.0%} (target >= 70%) | "
        f"errors: {sum(row['errors'] for row in service)}"
    )
    print_fold_in(fold_in, seconds)


def print_fold_in(rows: dict[str, dict[str, float]], seconds: int) -> None:
    print(
        f"\nUsers who just acted ({ACTING_USERS} users posted one event each), alternating "
        f"1 s rounds, {seconds} per scenario"
    )
    print(
        f"{'scenario':<22} {'conc':>4} {'requests':>9} {'errors':>6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
    )
    for label, row in rows.items():
        print(
            f"{label:<22} {row['concurrency']:>4} {row['requests']:>9} {row['errors']:>6} "
            f"{row['throughput']:>8.0f} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}"
        )
    trained = rows["trained GET"]["p99_ms"]
    folded = rows["folded-in GET"]["p99_ms"] / trained
    history = rows["POST 20 items"]["p99_ms"] / trained
    throughput = rows["folded-in GET at 32"]["throughput"] / rows["bare at 32"]["throughput"]
    print(
        f"\nfolded-in GET p99 / trained GET p99 at 8: {folded:.2f}x (target <= 2) | "
        f"POST /recommendations (20 items) p99 / trained GET p99 at 8: {history:.2f}x (target <= 2) | "
        f"folded-in GET throughput at 32 / bare: {throughput:.0%} (target >= 70%) | "
        f"errors: {sum(row['errors'] for row in rows.values())}"
    )


if __name__ == "__main__":
    main()
