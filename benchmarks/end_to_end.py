"""The whole path at scale, as a user runs it: generate -> ingest (SQLite, PostgreSQL) -> train the
default model (which builds its index) -> score every user -> serve and answer a request.

Every stage is the ``recsys`` command a user types, with its defaults, in a fresh data folder;
each prints its seconds and peak memory (the command's whole process tree, sampled every 0.1 s)
next to a bare baseline measured in the same run on the same data (benchmarks/baselines.py):

    python benchmarks/end_to_end.py --interactions 1000000
    python benchmarks/end_to_end.py --sizes 1000000,5000000,25000000 --plot e2e.png
    python benchmarks/end_to_end.py --interactions 25000000 --results runs/ --workdir /data/e2e --plot e2e.png
    python benchmarks/end_to_end.py --interactions 25000000 --postgres-url postgresql://postgres@127.0.0.1:5432/postgres

Users and items grow with the log like MovieLens 25M (162k users, 62k items at 25M interactions).
With several sizes, ``--plot`` draws seconds per stage against size on log-log axes: a line of
slope 1 grows linearly. Target on the 2-core machine: 25M through the whole path in under 15 min.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines
from scratch_postgres import scratch_postgres
from service_process import free_port, wait_ready

RECSYS = str(Path(sys.executable).parent / "recsys")
#: MovieLens 25M's shape: users and items per interaction.
USERS_PER_INTERACTION = 162_000 / 25_000_000
ITEMS_PER_INTERACTION = 62_000 / 25_000_000


@dataclass
class Stage:
    name: str
    seconds: float
    peak_mb: float
    baseline: str = ""
    baseline_seconds: float | None = None
    note: str = ""
    load: str = field(default_factory=lambda: " ".join(f"{x:.1f}" for x in os.getloadavg()))
    """The load average (1, 5, 15 min) when the stage ended: the machine is shared."""


@dataclass
class Run:
    interactions: int
    stages: list[Stage] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(stage.seconds for stage in self.stages if stage.name != "ingest PostgreSQL")


class PeakMemory:
    """Peak resident memory of a process and its children, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._stop.wait(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def run(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a recsys command to completion: seconds, peak MB and its stdout."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(process.pid)
    out, err = process.communicate()
    peak = memory.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - started, peak, out


def serve_and_answer(env: dict[str, str], user: str) -> Stage:
    """`recsys serve --workers 2` from start to /ready, then one request answered."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [RECSYS, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    memory = PeakMemory(process.pid)
    try:
        ready = wait_ready(f"http://127.0.0.1:{port}/ready", timeout=600, started=started, process=process)
        asked = time.perf_counter()
        response = httpx.get(f"http://127.0.0.1:{port}/users/{user}/recommendations", timeout=30)
        response.raise_for_status()
        answered_ms = (time.perf_counter() - asked) * 1000
        workers = [p.memory_info().rss / 2**20 for p in psutil.Process(process.pid).children(recursive=True)]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        peak = memory.stop()
    per_worker = ", ".join(f"{mb:.0f}" for mb in workers)
    note = f"first answer {answered_ms:.0f} ms; {response.json()['strategy']}; worker RSS MB: {per_worker}"
    return Stage("serve: start to /ready", ready, peak, note=note)


def ingest_command(csv_path: Path) -> list[str]:
    return [
        RECSYS, "ingest", "csv", str(csv_path), "--user-col", "user_id", "--item-col", "item_id",
        "--value-col", "rating", "--timestamp-col", "timestamp", "--kind", "rating",
    ]  # fmt: skip


def measure(interactions: int, workdir: Path, postgres_url: str) -> Run:
    users = max(100, round(interactions * USERS_PER_INTERACTION))
    items = max(50, round(interactions * ITEMS_PER_INTERACTION))
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(workdir / "data"),
        "RECSYS_DATABASE_URL": f"sqlite:///{workdir / 'data' / 'recsys.db'}",
        "RECSYS_LOG_LEVEL": "warning",
        "RECSYS_RELOAD_POLL_SECONDS": "0",
    }
    result = Run(interactions)
    csv_path = workdir / "events.csv"
    seconds, peak, _ = run(
        [RECSYS, "generate-synthetic", "--users", str(users), "--items", str(items),
         "--interactions", str(interactions), "--out", str(csv_path), "--no-catalogue"],
        env,
    )  # fmt: skip
    result.stages.append(Stage("generate", seconds, peak, note=f"{users:,} users, {items:,} items"))
    print(f"  generated {interactions:,} interactions in {seconds:.1f} s", flush=True)

    run([RECSYS, "db", "upgrade"], env)
    seconds, peak, _ = run([*ingest_command(csv_path), "--json"], env)
    bare = baselines.sqlite_executemany(csv_path, workdir / "bare.db")
    result.stages.append(Stage("ingest SQLite", seconds, peak, "sqlite3 executemany, plain table", bare))
    print(f"  ingested into SQLite in {seconds:.1f} s (bare {bare:.1f} s)", flush=True)

    if postgres_url:
        with scratch_postgres(postgres_url) as url, scratch_postgres(postgres_url) as bare_url:
            pg_env = {**env, "RECSYS_DATABASE_URL": url}
            run([RECSYS, "db", "upgrade"], pg_env)
            seconds, peak, _ = run([*ingest_command(csv_path), "--json"], pg_env)
            bare = baselines.postgres_copy(csv_path, bare_url)
        result.stages.append(Stage("ingest PostgreSQL", seconds, peak, "psycopg COPY, plain table", bare))
        print(f"  ingested into PostgreSQL in {seconds:.1f} s (bare {bare:.1f} s)", flush=True)

    seconds, peak, out = run([RECSYS, "train", "--promote", "--force", "--json"], env)
    trained = json.loads(out)
    params, metrics = trained["params"], trained["metrics"]
    implicit_seconds = None
    note = f"{trained['model']}, nDCG@10 {metrics.get('ndcg@10', float('nan')):.4f}"
    if _fits_ials_alone(trained):
        run([RECSYS, "export-matrix", "--out", str(workdir / "matrix.npz")], env)
        matrix = sp.load_npz(workdir / "matrix.npz")
        matrix.data[:] = 1.0  # the default recipe binarises
        epochs = int(metrics.get("best_epoch", params["epochs"]))
        implicit_seconds = baselines.implicit_als(matrix, params["factors"], epochs, params["regularization"])
        fit = trained["fit_seconds"]
        note += f"; final fit {fit:.1f} s for {epochs} epochs, {fit / implicit_seconds:.1f}x implicit's"
    result.stages.append(
        Stage("train + index (default model)", seconds, peak, "implicit ALS fit", implicit_seconds, note)
    )
    print(f"  trained {trained['version']} in {seconds:.1f} s", flush=True)

    out_dir = workdir / "scores.parquet"
    seconds, peak, _ = run([RECSYS, "score", "--out", str(out_dir), "--json"], env)
    user_vectors, item_vectors = _vectors_of(trained["path"])
    bare = baselines.numpy_top_k(user_vectors, item_vectors, 10)
    result.stages.append(Stage("score every user", seconds, peak, "numpy GEMM + argpartition", bare))
    print(f"  scored every user in {seconds:.1f} s (bare {bare:.1f} s)", flush=True)

    with csv_path.open() as lines:
        first_user = lines.readlines(1 << 16)[1].split(",")[0]
    result.stages.append(serve_and_answer(env, user=first_user))
    return result


def _fits_ials_alone(trained: dict) -> bool:
    """iALS, or the default blend where it fit iALS alone (above its ``max_items``): then
    implicit's ALS at the same factors and epochs is the bare baseline of the fit."""
    if trained["model"] == "ials":
        return True
    version = json.loads((Path(trained["path"]) / "version.json").read_text())
    return bool(version.get("training", {}).get("fit_notes", {}).get("parts") == ["ials"])


def _vectors_of(version_path: str) -> tuple[np.ndarray, np.ndarray]:
    from recsys.models import load_model

    model = load_model(Path(version_path) / "model")
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def report(result: Run) -> None:
    print(f"\n{result.interactions:,} interactions")
    print(f"{'stage':<32}{'seconds':>9}{'peak MB':>9}  {'baseline (same run)':<34}{'seconds':>9}{'ratio':>8}")
    for stage in result.stages:
        base = f"{stage.baseline_seconds:>9.1f}" if stage.baseline_seconds is not None else f"{'':>9}"
        ratio = f"{stage.seconds / stage.baseline_seconds:>7.1f}x" if stage.baseline_seconds else f"{'':>8}"
        print(
            f"{stage.name:<32}{stage.seconds:>9.1f}{stage.peak_mb:>9.0f}  {stage.baseline:<34}{base}{ratio}"
        )
        print(f"{'':<34}{stage.note + '; ' if stage.note else ''}load average {stage.load}")
    print(f"whole path (generate, SQLite ingest, train, score, serve): {result.total:.1f} s (target < 900 s)")


def save(result: Run, folder: Path) -> None:
    """This size's figures as ``folder/e2e-<size>.json``, for a plot that combines runs."""
    folder.mkdir(parents=True, exist_ok=True)
    stages = [stage.__dict__ for stage in result.stages]
    path = folder / f"e2e-{result.interactions}.json"
    path.write_text(json.dumps({"interactions": result.interactions, "stages": stages}, indent=2))


def saved(folder: Path) -> list[Run]:
    """Every size saved in ``folder`` by :func:`save`, smallest first."""
    runs = []
    for path in folder.glob("e2e-*.json"):
        loaded = json.loads(path.read_text())
        runs.append(Run(loaded["interactions"], [Stage(**stage) for stage in loaded["stages"]]))
    return sorted(runs, key=lambda run: run.interactions)


def plot(results: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [result.interactions for result in results]
    figure, axes = plt.subplots(figsize=(7, 5))
    names = dict.fromkeys(stage.name for result in results for stage in result.stages)
    for name in names:  # a stage a run skipped (PostgreSQL) is left out of that size
        points = [
            (result.interactions, stage.seconds)
            for result in results
            for stage in result.stages
            if stage.name == name
        ]
        axes.loglog(*zip(*points, strict=True), marker="o", label=name)
    axes.loglog(sizes, [result.total for result in results], marker="s", color="black", label="whole path")
    axes.set_xlabel("interactions")
    axes.set_ylabel("seconds")
    axes.set_title("recsys end to end: seconds per stage (log-log; slope 1 = linear)")
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"plot written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interactions", type=int, default=1_000_000, help="size of the synthetic log")
    parser.add_argument("--sizes", default="", help="comma-separated sizes (overrides --interactions)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("RECSYS_TEST_POSTGRES_URL", ""),
        help="server for scratch databases (default RECSYS_TEST_POSTGRES_URL; empty skips PostgreSQL)",
    )
    parser.add_argument("--plot", type=Path, default=None, help="PNG of seconds per stage against size")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="folder for each size's figures (e2e-<size>.json); --plot then draws every size saved there",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep each size's data folder under this folder (default: a temporary one, removed)",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size] or [args.interactions]
    print(
        f"machine: {platform.machine()}, {psutil.cpu_count()} logical cores, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM; python {platform.python_version()}"
    )
    results = []
    for size in sizes:
        if args.workdir is not None:
            workdir = args.workdir / f"e2e-{size}"
            if workdir.exists():
                raise SystemExit(f"{workdir} exists: remove it or pass another --workdir")
            workdir.mkdir(parents=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="recsys-e2e-"))
        try:
            print(f"{size:,} interactions in {workdir}", flush=True)
            results.append(measure(size, workdir, args.postgres_url))
            report(results[-1])
            if args.results is not None:
                save(results[-1], args.results)
        finally:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    if args.results is not None:
        results = saved(args.results)
    if args.plot and len(results) > 1:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
