"""Serving benchmark: latency and throughput of GET /users/{id}/recommendations on ml-100k.

Loads ml-100k into a temporary SQLite database, trains an iALS model (64 factors) through the
trainer (which registers it, promotes it and builds its FAISS index), starts ``recsys serve``
with 2 workers on 127.0.0.1 and drives it with ``wrk`` (bounded duration, loopback only) at
concurrency 1, 8 and 32 over all ml-100k user ids. In the same run a bare FastAPI app that only
looks up the user vector and searches the same FAISS index is measured the same way, in one-second
rounds that alternate with the service's at each level, so the service's overhead is visible and
the ratio holds up when other work on the machine comes and goes. p50/p99 are the medians of the
rounds' figures ("worst" is the highest round p99).

    python benchmarks/serve_benchmark.py [--seconds 5] [--data-dir /work/shared/data/ml-100k]

Targets on the 2-core machine: p99 < 20 ms at concurrency 8; >= 1000 requests/s at 32; the
service keeps >= 70 % of the bare endpoint's throughput; zero errors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)
BARE_ENV = "RECSYS_BENCH_VERSION_DIR"


# --- the bare comparison app (imported by uvicorn in its workers) ------------------------------


def bare_app() -> Any:
    """FastAPI app that answers with the FAISS search only: user vector lookup + top 10."""
    import numpy as np
    from fastapi import FastAPI, HTTPException

    from recsys.index import load_index
    from recsys.models import load_model
    from recsys.registry.registry import load_id_maps

    version_dir = Path(os.environ[BARE_ENV])
    model = load_model(version_dir / "model")
    users, items = load_id_maps(version_dir / "id_maps.npz")
    index = load_index(version_dir / "index")
    vectors = model.user_factors
    assert vectors is not None
    external = items.external_ids
    app = FastAPI()

    @app.get("/users/{user_id}/recommendations")
    async def recommend(user_id: str, k: int = 10) -> dict[str, Any]:
        position = users.index(user_id)
        if position is None:
            raise HTTPException(404, user_id)
        ids, scores = index.search(vectors[position : position + 1], k)
        return {"items": [str(external[i]) for i in ids[0]], "scores": np.asarray(scores[0]).tolist()}

    return app


# --- driving -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 120) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready within {timeout}s")


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


WRK_SCRIPT = """
local ids = {%s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/users/" .. ids[(n %% #ids) + 1] .. "/recommendations?k=10")
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%f %%f %%f\\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout, summary.errors.status, summary.duration,
    0, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def run_wrk(base: str, users: list[str], concurrency: int, seconds: float, workdir: Path) -> dict[str, float]:
    script = workdir / "users.lua"
    script.write_text(WRK_SCRIPT % ",".join(json.dumps(user) for user in users))
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


def prepare(workdir: Path, data_dir: Path) -> tuple[dict[str, str], Path, list[str]]:
    """ml-100k in a fresh database and a trained, promoted iALS version with its index."""
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(workdir / "data"),
        "RECSYS_DATABASE_URL": f"sqlite:///{workdir / 'data' / 'recsys.db'}",
        "RECSYS_RELOAD_POLL_SECONDS": "0",
        "RECSYS_LOG_LEVEL": "warning",
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
    info = train(engine, settings, "ials", {"factors": 64, "epochs": 5}, promote=True, force=True)
    print(f"prepared ml-100k and trained {info.version} in {time.perf_counter() - started:.1f}s")
    loaded = ModelRegistry(engine, settings.artifacts).load(info.version)
    assert (loaded.path / "index").is_dir(), "the trainer did not attach an index"
    return env, loaded.path, loaded.users.to_list()


def measure(
    servers: dict[str, tuple[list[str], dict[str, str], int]],
    users: list[str],
    seconds: int,
    workdir: Path,
) -> dict[str, list[dict[str, float]]]:
    """Start both servers, then at each concurrency drive them in alternating one-second rounds
    (A B B A A B ...) for ``seconds`` rounds each. The machine is shared: background load that
    comes and goes then hits both alike instead of skewing their ratio. An idle server waiting
    on its socket costs nothing while the other is measured."""
    processes = []
    try:
        for name, (command, env, port) in servers.items():
            processes.append(start(command, env, workdir / f"{name}.log"))
            ready_url = f"http://127.0.0.1:{port}/" + ("ready" if name == "service" else "docs")
            print(f"{name}: ready after {wait_ready(ready_url):.2f}s")
        for _, _, port in servers.values():
            run_wrk(f"http://127.0.0.1:{port}", users, 8, 1, workdir)  # warm-up of both workers
        names = list(servers)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for concurrency in CONCURRENCY:
            rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
            for round_ in range(seconds):
                for name in names if round_ % 2 == 0 else reversed(names):
                    url = f"http://127.0.0.1:{servers[name][2]}"
                    rounds[name].append(run_wrk(url, users, concurrency, 1, workdir))
            for name in names:
                results[name].append(combine(rounds[name]))
        return results
    finally:
        for process in processes:
            stop(process)


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
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "ml-100k")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="recsys-serve-bench-"))
    try:
        env, version_dir, users = prepare(workdir, args.data_dir)
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
        results = measure(servers, users, seconds, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    service, bare = results["service"], results["bare"]
    print(
        f"\nGET /users/{{id}}/recommendations?k=10, ml-100k iALS 64 factors, 2 workers, {seconds}s per level"
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


if __name__ == "__main__":
    main()
