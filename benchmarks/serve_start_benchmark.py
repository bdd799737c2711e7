"""Service start at scale: `recsys serve --workers 2` from start to /ready, and each worker's memory,
with the version's memory-mapped seen-items snapshot next to the database path, in one run.

Set-up (not measured): `recsys generate-synthetic` writes the log (162k users, 62k items by
default), which is loaded straight into the recsys schema of a fresh SQLite database with
sqlite3's executemany (ingestion is not what this measures, and the set-up at 25M would take
longer than the rest); the catalogue goes through `recsys ingest items`; `recsys train` fits an
iALS model (2 epochs: the start does not depend on how well it fits; ``--model popularity`` sets
up faster), registers it (with its ``seen/`` snapshot), builds its index and promotes it.

Measured, in alternating rounds (``--rounds`` each):

- ``snapshot``: `recsys serve --workers 2` on that version: each worker memory-maps ``seen/``
  and reads only the interactions stored after it;
- ``database``: the same version without ``seen/`` (the folder moved aside and its lines taken
  out of the checksum file: a version registered before snapshots existed), where each worker
  reads the whole log from the database as every version did before.

Per round: seconds from the process start until every worker logged "ready" (and /ready answered
200), the CPU seconds the server's processes used until then (what other jobs on a shared
machine do not change), and per worker its peak resident memory (VmHWM), resident memory and
proportional set size (PSS: shared pages divided between the processes that map them) once
ready. Both modes must answer the same top 10 for a sample of users, checked over HTTP in every
round.

    python benchmarks/serve_start_benchmark.py --interactions 5000000 [--rounds 2] [--model ials]
        [--workdir DIR]

Target: start to /ready under 10 s at 25M interactions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_process import free_port, wait_ready  # noqa: E402

SAMPLE_USERS = 50
READY_LINE = re.compile(r"ready in ")


def run(command: list[str], env: dict[str, str]) -> str:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    print(f"  {' '.join(command[:3])} ... {time.perf_counter() - started:.1f} s", flush=True)
    return result.stdout


def load_sqlite(database: Path, events: Path) -> None:
    """The generated log into the schema `recsys db upgrade` made, with sqlite3's executemany."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(events, columns=["user_id", "item_id", "rating", "timestamp"])
    user_keys, user_index = _encode(table.column("user_id"))
    item_keys, item_index = _encode(table.column("item_id"))
    values = table.column("rating").to_numpy().astype(float)
    stamps = table.column("timestamp").to_numpy().astype(np.int64)
    order = np.argsort(stamps, kind="stable")  # ids in time order, as a log grows
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=OFF")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("PRAGMA cache_size=-2000000")  # 2 GB: the indexes' pages stay in memory
    with connection:
        connection.executemany(
            "INSERT INTO users (id, external_id, attributes) VALUES (?, ?, '{}')",
            zip(range(1, len(user_keys) + 1), user_keys, strict=True),
        )
        connection.executemany(
            "INSERT OR IGNORE INTO items (id, external_id, attributes) VALUES (?, ?, '{}')",
            zip(range(1, len(item_keys) + 1), item_keys, strict=True),
        )
        block = 1_000_000
        for start in range(0, len(order), block):
            part = order[start : start + block]
            connection.executemany(
                "INSERT INTO interactions (user_id, item_id, kind, value, ts) VALUES (?, ?, 'rating', ?, ?)",
                zip(
                    (user_index[part] + 1).tolist(),
                    (item_index[part] + 1).tolist(),
                    values[part].tolist(),
                    stamps[part].tolist(),
                    strict=True,
                ),
            )
    connection.close()


def _encode(column: Any) -> tuple[list[str], Any]:
    """Distinct values (in order of first sight) and each row's position among them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column.combine_chunks())  # one dictionary for all rows
    assert isinstance(encoded, pa.DictionaryArray)
    return [str(key) for key in encoded.dictionary.to_pylist()], encoded.indices.to_numpy().astype("int64")


def prepare(
    workdir: Path, n_users: int, n_items: int, n_interactions: int, model: str
) -> tuple[dict[str, str], str]:
    """A database with the log and a promoted version with its index and snapshot."""
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(data),
        "RECSYS_DATABASE_URL": f"sqlite:///{data / 'recsys.db'}",
        "RECSYS_RELOAD_POLL_SECONDS": "0",
        "RECSYS_LOG_LEVEL": "INFO",
        "PYTHONPATH": str(REPO_ROOT),
    }
    recsys = [sys.executable, "-m", "recsys"]
    if (data / "recsys.db").exists():  # set up by an earlier run in --workdir: measure it again
        out = run([*recsys, "models", "list", "--json"], env)
        versions = [row["version"] for row in json.loads(out) if row["status"] == "production"]
        if versions:
            print(f"  reusing {data} and its production version {versions[0]}")
            return env, versions[0]
        raise SystemExit(f"{data} holds a database without a production version: remove it first")
    events = workdir / f"events-{n_interactions}.parquet"
    print(f"set-up in {workdir}:", flush=True)
    if not events.exists():
        run(
            [*recsys, "generate-synthetic", "--users", str(n_users), "--items", str(n_items),
             "--interactions", str(n_interactions), "--out", str(events), "--items-out",
             str(workdir / "items.parquet")],
            env,
        )  # fmt: skip
    run([*recsys, "db", "upgrade"], env)
    started = time.perf_counter()
    load_sqlite(data / "recsys.db", events)
    print(
        f"  loaded {n_interactions:,} interactions with executemany ... {time.perf_counter() - started:.1f} s"
    )
    run([*recsys, "ingest", "items", str(workdir / "items.parquet")], env)
    params = ["--param", "epochs=2", "--param", "min_epochs=1"] if model == "ials" else []
    out = run([*recsys, "train", "--model", model, *params, "--json"], env)
    version = json.loads(out)["version"]
    return env, version


def without_snapshot(version_dir: Path, aside: Path) -> None:
    """Make the version look registered before snapshots: seen/ moved out, its checksums dropped."""
    shutil.move(str(version_dir / "seen"), str(aside))
    checksums = version_dir / "checksums.sha256"
    kept = [line for line in checksums.read_text().splitlines() if "  seen/" not in line]
    checksums.write_text("".join(f"{line}\n" for line in kept))


def with_snapshot(version_dir: Path, aside: Path, checksums_text: str) -> None:
    shutil.move(str(aside), str(version_dir / "seen"))
    (version_dir / "checksums.sha256").write_text(checksums_text)


def cpu_seconds(master: int) -> float:
    """CPU seconds (user + system) the server's processes have used so far: the work of a start,
    which other jobs on a shared machine do not change (its wall time they do)."""
    total = 0.0
    for proc in [psutil.Process(master), *psutil.Process(master).children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def worker_memory(master: int) -> list[dict[str, float]]:
    """Peak and current resident memory and PSS (MB) of each worker process of the server."""
    found = []
    for child in psutil.Process(master).children(recursive=True):
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
            rollup = Path(f"/proc/{child.pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = dict(re.findall(r"^(\w+):\s+(\d+) kB", status + rollup, flags=re.M))
        if "python" not in " ".join(child.cmdline()) or "Pss" not in fields:
            continue
        if int(fields.get("VmRSS", 0)) < 50_000:  # uvicorn's small process helpers, not a worker
            continue
        found.append({
            "peak_rss_mb": int(fields["VmHWM"]) / 1024,
            "rss_mb": int(fields["VmRSS"]) / 1024,
            "pss_mb": int(fields["Pss"]) / 1024,
        })  # fmt: skip
    return found


def serve_once(
    env: dict[str, str], workdir: Path, label: str, users: list[str], timeout: float
) -> dict[str, Any]:
    port = free_port()
    log = workdir / f"serve-{label}-{time.time_ns()}.log"
    command = [sys.executable, "-m", "recsys", "serve", "--workers", "2", "--port", str(port)]
    started = time.perf_counter()
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        # Every worker logged "ready" (/ready alone answers from whichever worker is ready first).
        ready_at = wait_ready(
            f"{base}/ready",
            timeout=timeout,
            started=started,
            process=process,
            log=log,
            condition=lambda: len(READY_LINE.findall(log.read_text(errors="replace"))) >= 2,
        )
        cpu = cpu_seconds(process.pid)
        memory = worker_memory(process.pid)
        lists = {}
        with httpx.Client(base_url=base, timeout=30) as client:
            for user in users:
                body = client.get(f"/users/{user}/recommendations", params={"k": 10}).json()
                lists[user] = [entry["item_id"] for entry in body["items"]]
        return {"seconds": ready_at, "cpu": cpu, "workers": memory, "lists": lists, "log": log.name}
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=162_000)
    parser.add_argument("--items", type=int, default=62_000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per mode, alternating")
    parser.add_argument(
        "--model", default="ials", help="model trained (ials: 2 epochs; popularity is quicker to set up)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds a start may take")
    parser.add_argument(
        "--modes",
        default="snapshot,database",
        help="which starts to measure (the database start reads the whole log in every worker: "
        "minutes at 25M on a busy machine; the ratio needs both)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the data here, and reuse it on the next run (default: a temporary folder)",
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="serve-start-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        env, version = prepare(workdir, args.users, args.items, args.interactions, args.model)
        version_dir = workdir / "data" / "artifacts" / version
        checksums_text = (version_dir / "checksums.sha256").read_text()
        seen_bytes = sum(path.stat().st_size for path in (version_dir / "seen").iterdir())
        import numpy as np

        with np.load(version_dir / "id_maps.npz") as maps:
            users = [str(user) for user in maps["users"][:: max(1, len(maps["users"]) // SAMPLE_USERS)]]
        aside = workdir / "seen-aside"
        modes = [mode for mode in ("snapshot", "database") if mode in args.modes.split(",")]
        if not modes:
            raise SystemExit("--modes names neither snapshot nor database")
        results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for number in range(args.rounds):
            for mode in modes:
                if mode == "database":
                    without_snapshot(version_dir, aside)
                try:
                    result = serve_once(env, workdir, mode, users, args.timeout)
                finally:
                    if mode == "database":
                        with_snapshot(version_dir, aside, checksums_text)
                results[mode].append(result)
                workers = ", ".join(
                    f"peak {w['peak_rss_mb']:.0f} / rss {w['rss_mb']:.0f} / pss {w['pss_mb']:.0f} MB"
                    for w in result["workers"]
                )
                print(
                    f"round {number + 1} {mode:>8}: ready in {result['seconds']:.2f} s "
                    f"({result['cpu']:.1f} CPU s); workers: {workers}; "
                    f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
                    flush=True,
                )
        reference = results[modes[-1]][0]["lists"]
        same = all(result["lists"] == reference for rounds in results.values() for result in rounds)
        print()
        print(
            f"{args.interactions:,} interactions, {args.users:,} users, {args.items:,} items; seen/ is "
            f"{seen_bytes / 2**20:.0f} MB; `recsys serve --workers 2`, medians of {args.rounds} rounds"
        )
        print(
            "| mode | start to /ready | CPU seconds | peak RSS per worker | RSS per worker | PSS per worker |"
        )
        print("|---|---|---|---|---|---|")
        summary = {}
        for mode, rounds in results.items():
            seconds = statistics.median(r["seconds"] for r in rounds)
            workers = [w for r in rounds for w in r["workers"]]
            row = {
                key: statistics.median(w[key] for w in workers) for key in ("peak_rss_mb", "rss_mb", "pss_mb")
            }
            cpu = statistics.median(r["cpu"] for r in rounds)
            summary[mode] = {"seconds": seconds, "cpu": cpu, **row}
            memory = " | ".join(f"{row[key]:.0f} MB" for key in ("peak_rss_mb", "rss_mb", "pss_mb"))
            print(f"| {mode} | {seconds:.2f} s | {cpu:.1f} s | {memory} |")
        if len(modes) == 2:
            ratio = summary["database"]["seconds"] / summary["snapshot"]["seconds"]
            print(f"snapshot start {ratio:.1f}x faster")
        print(f"same top 10 for {len(users)} users in every round: {same}; load average {os.getloadavg()}")
        if "snapshot" in summary:
            met = "met" if summary["snapshot"]["seconds"] < 10 else "NOT met"
            print(f"target: under 10 s at 25M -> {met} at {args.interactions:,}")
        if not same:
            raise SystemExit("the two modes answered different lists")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
