"""The MovieLens benchmark: every recsys model next to the public peers, same splits, same run.

    python -m pipelines.benchmark_movielens --dataset ml-100k --data-dir DIR --out report/
    recsys benchmark --dataset ml-latest-small --data-dir DIR --protocol both --check

Protocols, splits and metrics follow docs/protocol.md (docs/benchmarks.md has the latest
tables). The data goes the way a user's does: the MovieLens files are loaded by the ingestion
code into a database (a temporary SQLite file unless ``--database-url`` names one), and the
splits are cut from what that database holds, ratings with their values. Every recsys model is
trained by the one fitting path of ``recsys train``
(:func:`recsys.training.fitting.fit_version`) with the defaults a user gets: its own recipe,
the validation carve-out (seed 43) choosing the epochs, the refit on the whole train part, the
version registered. Peers receive the protocol's matrix (Protocol K: every rating a positive)
and the grid stated in :mod:`recsys.evaluation.peers`, tuned on the same validation split.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from recsys.errors import ConfigError

if TYPE_CHECKING:  # the heavy modules are imported when the benchmark runs
    import pandas as pd
    import scipy.sparse as sp
    from sqlalchemy import Engine

    from recsys.data.interactions import Interactions
    from recsys.evaluation.peers import Peer
    from recsys.registry.registry import ModelRegistry
    from recsys.training.fitting import Fitted

logger = logging.getLogger(__name__)

DATASETS = ("ml-100k", "ml-latest-small", "ml-1m", "ml-20m", "ml-25m", "synthetic")
PEERS = ("implicit-als", "implicit-bpr", "ease-reference", "surprise-svd")
#: The peer the default model is held against (same run, same split).
REFERENCE_PEER = "ease-reference"
#: Synthetic data sizes (users, items, interactions): full and ``--quick``.
SYNTHETIC_SIZE = (2_000, 1_000, 100_000)
SYNTHETIC_QUICK_SIZE = (300, 150, 6_000)
#: ``--quick`` keeps the users whose external ids sort first, this many of them.
QUICK_USERS = 200
#: ``--quick`` caps every recsys model at this many epochs / iterations.
QUICK_EPOCHS = 2
#: Protocol R folds (``--quick`` runs only the first).
R_FOLDS = 5

#: ``--check`` thresholds: dataset, protocol, model ("default": RECSYS_DEFAULT_MODEL), metric, op,
#: bound, and optionally ``relative_to``: a model or peer of the same run whose value multiplies
#: the bound. ``--thresholds FILE`` replaces this table with a JSON list of objects with these keys.
THRESHOLDS: tuple[dict[str, Any], ...] = (
    # The quality goal of the default embedding model, against EASE in the same run.
    {"dataset": "ml-100k", "protocol": "K", "model": "default", "metric": "ndcg", "op": ">=", "bound": 1.02,
     "relative_to": REFERENCE_PEER},
    {"dataset": "ml-latest-small", "protocol": "K", "model": "default", "metric": "ndcg", "op": ">=",
     "bound": 1.0, "relative_to": REFERENCE_PEER},
    {"dataset": "ml-100k", "protocol": "R", "model": "mf", "metric": "rmse", "op": "<=", "bound": 0.905},
)  # fmt: skip

K_DESCRIPTION = (
    "Per-user 80/20 split (seed {seed}) of the ratings as the ingestion code stored them in a "
    "database; every test rating is a positive; top {k} of the whole catalogue, train items "
    "excluded. Recsys models: the train part with its rating values, through `recsys train`'s "
    "fitting path with a user's defaults (each model's recipe, epochs chosen on the validation "
    "carve-out, seed 43, then a refit on the whole train part). Peers: the protocol's matrix "
    "(every train rating a 1), settings chosen on the same validation carve-out. Fit s: the "
    "final fit; Top-k s: every user's top {k}."
)
R_DESCRIPTION = (
    "{folds}-fold split of the ratings (seed {seed}); mean over folds, predictions clipped to "
    "{low}..{high}. Recsys models: each fold's train part through `recsys train`'s fitting path "
    "(validation carve-out, seed 43, then refit). Peers: settings chosen on a random 20% of fold "
    "1's train part (seed 43). Fit s: median final fit per fold."
)
#: What the peers learn from, for the report's "data" column.
PEER_DATA = {"K": "the protocol's matrix: every train rating a 1", "R": "the train ratings"}


@dataclass
class Dataset:
    name: str
    data: Interactions
    catalog: pd.DataFrame | None
    rating_range: tuple[float, float]


@dataclass
class Options:
    """Everything one benchmark run needs (the CLI's options, parsed)."""

    dataset: str = "ml-100k"
    data_dir: Path | None = None
    protocol: str = "both"
    models: list[str] = field(default_factory=lambda: all_names())
    seed: int = 42
    k: int = 10
    repeats: int = 1
    out: Path = Path("benchmark-report")
    quick: bool = False
    check: bool = False
    thresholds: Path | None = None
    database_url: str | None = None


# --- data -----------------------------------------------------------------------------------


def load_dataset(
    name: str, data_dir: Path | None, seed: int, quick: bool, database_url: str | None, scratch: Path
) -> tuple[Dataset, Engine]:
    """Ingest the ratings (values kept) and the catalogue into a database as a user would, and
    read them back as the training path does: ``(dataset, engine)``.

    The database is ``database_url``, else a new SQLite file under ``scratch``.
    """
    from recsys.data.catalog import item_catalog
    from recsys.data.matrix import build_interactions
    from recsys.db.engine import get_engine
    from recsys.db.schema import upgrade

    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    engine = get_engine(database_url or f"sqlite:///{scratch / 'benchmark.db'}")
    upgrade(engine)
    if _has_interactions(engine):
        raise ConfigError(f"{database_url} already holds interactions; the benchmark needs an empty database")
    if name == "synthetic":
        from recsys.data.synthetic import generate_synthetic
        from recsys.ingest.pipeline import ingest_frame
        from recsys.ingest.specs import CsvSpec

        ratings = generate_synthetic(*(SYNTHETIC_QUICK_SIZE if quick else SYNTHETIC_SIZE), seed=seed)
        spec = CsvSpec(
            user_col="user_id",
            item_col="item_id",
            value_col="rating",
            timestamp_col="timestamp",
            kind="rating",
        )
        ingest_frame(engine, ratings, spec=spec, source="synthetic")
    else:
        from recsys.ingest.movielens import ingest_movielens

        ingest_movielens(engine, name, data_dir)
    data = build_interactions(engine)
    if quick:  # the users whose external ids sort first
        keep = np.sort(np.asarray(data.users.to_list(), dtype=object))[:QUICK_USERS]
        data = data.subset(np.isin(data.user_index, data.users.indices(keep)))
    catalog = None if name == "synthetic" else item_catalog(engine, data.items)
    low, high = float(data.values.min()), float(data.values.max())
    return Dataset(name=name, data=data, catalog=catalog, rating_range=(low, high)), engine


def _has_interactions(engine: Engine) -> bool:
    from sqlalchemy import select

    from recsys.db.models import Interaction

    with engine.connect() as connection:
        return connection.execute(select(Interaction.id).limit(1)).first() is not None


# --- measuring ------------------------------------------------------------------------------


class PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakMemory:
        self.start_bytes = self.peak_bytes = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def growth_mb(self) -> float:
        """Peak minus the resident memory at the start: what this block itself added (models run
        one after another in one process, so the peak alone includes earlier imports)."""
        return (self.peak_bytes - self.start_bytes) / 2**20


def timed(repeats: int, function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Call ``function(*args, **kwargs)`` ``repeats`` times; the last result and the median seconds."""
    seconds = []
    result = None
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        seconds.append(time.perf_counter() - started)
    return result, statistics.median(seconds)


def machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = "none"
    if "tensorflow" in sys.modules:  # only ask TensorFlow when a model already imported it
        devices = sys.modules["tensorflow"].config.list_physical_devices("GPU")
        gpu = ", ".join(device.name for device in devices) or "none"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def library_versions() -> dict[str, str]:
    versions = {}
    for package in ("recsys", "numpy", "scipy", "tensorflow", "tensorflow-recommenders", "implicit",
                    "scikit-surprise"):  # fmt: skip
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


# --- recsys models --------------------------------------------------------------------------


def fit_recsys_model(
    name: str, options: Options, train: Interactions, catalog: pd.DataFrame | None, registry: ModelRegistry
) -> Fitted:
    """``recsys train``'s fitting path on ``train`` with a user's defaults (the split seed as
    the model's seed; ``--quick`` caps the model's epoch limit)."""
    from recsys.models import get_model_class
    from recsys.training.fitting import fit_version

    model_class = get_model_class(name)
    params: dict[str, Any] = {"seed": options.seed}
    if options.quick and model_class.epoch_limit:
        params[model_class.epoch_limit] = QUICK_EPOCHS
    return fit_version(
        name, params, train, catalog=catalog if model_class.uses_catalog else None, registry=registry
    )


def recsys_figures(fitted: Fitted) -> dict[str, Any]:
    """The row fields every recsys model reports: settings, recipe, validation curve, seconds."""
    return {
        "params": {**fitted.model.params, "chosen_epochs": fitted.epochs},
        "recipe": fitted.recipe.model_dump(mode="json"),
        "data": f"the train ratings through its recipe ({fitted.recipe.describe()})",
        "history": fitted.validation_history,
        "fit_seconds": fitted.metrics["fit_seconds"],
        "tuning_seconds": fitted.metrics["validation_fit_seconds"],
        "version": fitted.info.version if fitted.info else None,
    }


def fit_peer(cls: type[Peer], seed: int, params: dict[str, Any], matrix: sp.csr_matrix) -> Peer:
    return cls(seed=seed, **params).fit(matrix)


def run_protocol_k(
    dataset: Dataset, options: Options, recsys_models: list[str], peers: list[str], registry: ModelRegistry
) -> dict[str, Any]:
    from recsys.data.splits import protocol_k_split, validation_split
    from recsys.evaluation import evaluate_ranking, recommend_top_k
    from recsys.evaluation.peers import binarize, evaluate_peer_ranking, get_peer_class, tune_peer
    from recsys.training.fitting import VALIDATION_SEED

    train, test = protocol_k_split(dataset.data, seed=options.seed)
    fit_part, valid = validation_split(train, seed=VALIDATION_SEED)
    test_csr, seen = test.to_csr(), train.to_csr()
    all_users = np.arange(dataset.data.shape[0])
    rows: list[dict[str, Any]] = []
    for name in recsys_models:
        logger.info("Protocol K: %s", name)
        with PeakMemory() as memory:
            fitted = fit_recsys_model(name, options, train, dataset.catalog, registry)
            metrics = evaluate_ranking(fitted.model, seen, test_csr, k=options.k)
            _, topk_seconds = timed(
                options.repeats, recommend_top_k, fitted.model, seen, all_users, options.k
            )
        rows.append(
            {"model": name, "kind": "recsys", "metrics": metrics, "topk_seconds": topk_seconds,
             "peak_rss_mb": memory.peak_mb, "rss_growth_mb": memory.growth_mb, **recsys_figures(fitted)}
        )  # fmt: skip
    # The protocol's matrix: every rating a positive.
    train_csr, fit_csr, valid_csr = binarize(seen), binarize(fit_part.to_csr()), valid.to_csr()
    for name in peers:
        cls = get_peer_class(name)
        logger.info("Protocol K: peer %s", name)
        with PeakMemory() as memory:
            started = time.perf_counter()
            tuning = tune_peer(name, fit_csr, valid_csr, seed=options.seed, k=options.k, quick=options.quick)
            tuning_seconds = time.perf_counter() - started
            peer, fit_seconds = timed(options.repeats, fit_peer, cls, options.seed, tuning.best, train_csr)
            metrics = evaluate_peer_ranking(peer, train_csr, test_csr, options.k)
            _, topk_seconds = timed(options.repeats, peer.recommend, all_users, train_csr, options.k)
        rows.append(
            {"model": name, "kind": "peer", "library": peer.library, "params": tuning.best,
             "tuning": tuning.trials, "metrics": metrics, "fit_seconds": fit_seconds,
             "tuning_seconds": tuning_seconds, "topk_seconds": topk_seconds, "data": PEER_DATA["K"],
             "peak_rss_mb": memory.peak_mb, "rss_growth_mb": memory.growth_mb, "history": []}
        )  # fmt: skip
    return {
        "description": K_DESCRIPTION.format(seed=options.seed, k=options.k),
        "split": {"train": len(train), "test": len(test), "validation": len(valid),
                  "evaluated_users": int((np.diff(test_csr.indptr) > 0).sum())},
        "rows": rows,
    }  # fmt: skip


def run_protocol_r(
    dataset: Dataset, options: Options, recsys_models: list[str], peers: list[str], registry: ModelRegistry
) -> dict[str, Any]:
    from recsys.data.splits import protocol_r_folds
    from recsys.evaluation import evaluate_rating
    from recsys.evaluation.peers import evaluate_peer_rating, get_peer_class, tune_peer
    from recsys.training.fitting import VALIDATION_SEED

    folds = protocol_r_folds(dataset.data, n_folds=R_FOLDS, seed=options.seed)
    if options.quick:
        folds = folds[:1]
    # Peers' validation: a random 20% of the first fold's train part (the Protocol R rule, seed 43).
    fit_part, valid = protocol_r_folds(folds[0][0], n_folds=5, seed=VALIDATION_SEED)[0]
    clip = dataset.rating_range
    rows = []
    for name in recsys_models:
        logger.info("Protocol R: %s", name)
        per_fold, fit_times = [], []
        with PeakMemory() as memory:
            for train, test in folds:
                fitted = fit_recsys_model(name, options, train, dataset.catalog, registry)
                fit_times.append(fitted.metrics["fit_seconds"])
                per_fold.append(evaluate_rating(fitted.model, train.to_csr(), test.to_csr(), clip=clip))
        figures = {**recsys_figures(fitted), "fit_seconds": statistics.median(fit_times)}
        rows.append(
            {"model": name, "kind": "recsys", "metrics": fold_summary(per_fold), "folds": per_fold,
             "peak_rss_mb": memory.peak_mb, "rss_growth_mb": memory.growth_mb, **figures}
        )  # fmt: skip
    for name in peers:
        cls = get_peer_class(name)
        logger.info("Protocol R: peer %s", name)
        per_fold, fit_times = [], []
        with PeakMemory() as memory:
            started = time.perf_counter()
            tuning = tune_peer(
                name, fit_part.to_csr(), valid.to_csr(), seed=options.seed, clip=clip, quick=options.quick
            )
            tuning_seconds = time.perf_counter() - started
            for train, test in folds:
                matrix = train.to_csr()
                peer, seconds = timed(options.repeats, fit_peer, cls, options.seed, tuning.best, matrix)
                fit_times.append(seconds)
                per_fold.append(evaluate_peer_rating(peer, test.to_csr(), clip))
        rows.append(
            {"model": name, "kind": "peer", "library": peer.library, "params": tuning.best,
             "tuning": tuning.trials, "metrics": fold_summary(per_fold), "folds": per_fold,
             "fit_seconds": statistics.median(fit_times), "tuning_seconds": tuning_seconds,
             "data": PEER_DATA["R"], "peak_rss_mb": memory.peak_mb, "rss_growth_mb": memory.growth_mb,
             "history": []}
        )  # fmt: skip
    return {
        "description": R_DESCRIPTION.format(folds=len(folds), seed=options.seed, low=clip[0], high=clip[1]),
        "split": {"folds": len(folds), "validation": len(valid)},
        "rows": rows,
    }


def fold_summary(per_fold: list[dict[str, float]]) -> dict[str, float]:
    rmses = [fold["rmse"] for fold in per_fold]
    return {
        "rmse": float(np.mean(rmses)),
        "rmse_std": float(np.std(rmses)),
        "mae": float(np.mean([fold["mae"] for fold in per_fold])),
    }


# --- the run --------------------------------------------------------------------------------


def plan(options: Options, protocol: str) -> tuple[list[str], list[str], list[str]]:
    """Which recsys models and peers run under ``protocol``, and why the others are skipped."""
    from recsys.evaluation.peers import get_peer_class, missing_requirement
    from recsys.models import MODEL_CLASSES, get_model_class

    ours, peers, skipped = [], [], []
    for name in options.models:
        if name in MODEL_CLASSES:
            if protocol == "R" and not get_model_class(name).predicts_ratings:
                skipped.append(f"{name}: ranks but does not predict ratings (Protocol K only)")
            else:
                ours.append(name)
            continue
        cls = get_peer_class(name)  # unknown names fail here with the list of choices
        missing = missing_requirement(name)
        if cls.protocol != protocol:
            continue  # a peer of the other protocol: nothing to report
        if missing:
            skipped.append(missing)
        else:
            peers.append(name)
    return ours, peers, skipped


def run_benchmark(options: Options) -> dict[str, Any]:
    """Run the benchmark and write the report; returns the result dictionary."""
    if options.protocol not in ("K", "R", "both"):
        raise ConfigError(f"--protocol must be K, R or both, got {options.protocol!r}")
    if options.k < 1 or options.repeats < 1:
        raise ConfigError(f"--k and --repeats must be at least 1, got {options.k} and {options.repeats}")
    with tempfile.TemporaryDirectory(prefix="recsys-benchmark-") as scratch:
        return _run(options, Path(scratch))


def _run(options: Options, scratch: Path) -> dict[str, Any]:
    from recsys.evaluation.report import write_report
    from recsys.registry.registry import ModelRegistry

    dataset, engine = load_dataset(
        options.dataset, options.data_dir, options.seed, options.quick, options.database_url, scratch
    )
    # Versions are registered as `recsys train` registers them, in the benchmark's database.
    registry = ModelRegistry(engine, scratch / "artifacts")
    protocols = ["K", "R"] if options.protocol == "both" else [options.protocol]
    result: dict[str, Any] = {
        "dataset": options.dataset,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "seed": options.seed,
        "k": options.k,
        "repeats": options.repeats,
        "quick": options.quick,
        "data": {
            "interactions": len(dataset.data),
            "users": dataset.data.shape[0],
            "items": dataset.data.shape[1],
            "rating_range": list(dataset.rating_range),
        },
        "protocols": {},
    }
    for protocol in protocols:
        ours, peers, skipped = plan(options, protocol)
        for reason in skipped:
            logger.warning("Protocol %s: %s", protocol, reason)
        run = run_protocol_k if protocol == "K" else run_protocol_r
        section = run(dataset, options, ours, peers, registry)
        section["skipped"] = skipped
        result["protocols"][protocol] = section
    result["machine"] = machine()
    result["versions"] = library_versions()
    result["peak_rss_mb_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if options.check or options.thresholds:
        result["checks"] = check_thresholds(result, load_thresholds(options.thresholds))
    result["files"] = {key: str(path) for key, path in write_report(result, options.out).items()}
    return result


def command_line() -> str:
    """How this run was started, for the report (``recsys benchmark ...`` or ``python -m ...``)."""
    program = Path(sys.argv[0]).name
    if program == "recsys":
        prefix = ["recsys", "benchmark"]
        args = sys.argv[2:] if sys.argv[1:2] == ["benchmark"] else sys.argv[1:]
    elif program == "benchmark_movielens.py":
        prefix, args = ["python", "-m", "pipelines.benchmark_movielens"], sys.argv[1:]
    else:  # called from Python (tests, notebooks): the arguments are not the benchmark's
        return f"{program} (called from Python)"
    return " ".join([*prefix, *map(shlex.quote, args)])


def load_thresholds(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return list(THRESHOLDS)
    try:
        loaded = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read thresholds from {path}: {exc}") from None
    required = {"dataset", "protocol", "model", "metric", "op", "bound"}
    if not isinstance(loaded, list) or not all(isinstance(e, dict) and required <= e.keys() for e in loaded):
        raise ConfigError(f"{path} must hold a JSON list of objects with keys {sorted(required)}")
    bad_ops = {entry["op"] for entry in loaded} - {">=", "<="}
    if bad_ops:
        raise ConfigError(f"{path}: op must be '>=' or '<=', got {sorted(bad_ops)}")
    return loaded


def check_thresholds(result: dict[str, Any], thresholds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compare every recsys model of the run that has a threshold; models not run are not checked.
    A rule with ``relative_to`` multiplies its bound by that model's or peer's value in this run
    (not checked when that one did not run)."""
    from recsys.settings import get_settings

    checks = []
    for rule in thresholds:
        section = result["protocols"].get(rule["protocol"])
        if rule["dataset"] != result["dataset"] or section is None:
            continue
        model = get_settings().default_model if rule["model"] == "default" else rule["model"]
        values = {row["model"]: float(row["metrics"][rule["metric"]]) for row in section["rows"]}
        bound = float(rule["bound"])
        if rule.get("relative_to"):
            if rule["relative_to"] not in values:
                continue
            bound *= values[rule["relative_to"]]
        for row in section["rows"]:
            if row["model"] == model and row["kind"] == "recsys":
                value = values[model]
                passed = value >= bound if rule["op"] == ">=" else value <= bound
                checks.append(
                    {
                        **rule,
                        "model": model,
                        "factor": rule["bound"],
                        "bound": bound,
                        "value": value,
                        "passed": passed,
                    }
                )
    return checks


# --- command line ---------------------------------------------------------------------------


def all_names() -> list[str]:
    """Every registered recsys model, then every peer."""
    from recsys.models import MODEL_CLASSES

    return [*MODEL_CLASSES, *PEERS]


def split_names(values: list[str] | None) -> list[str]:
    """``--models a,b --models c`` -> ["a", "b", "c"]; nothing given -> every model and peer."""
    if not values:
        return all_names()
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(all_names()))
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; choose from {all_names()}")
    return list(dict.fromkeys(names))


@contextmanager
def _logging_to_stderr() -> Iterator[None]:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    previous, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the CLI's root handler would print every line a second time
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        logger.propagate = propagate


def benchmark_command(
    dataset: Annotated[str, typer.Option(help=f"One of: {', '.join(DATASETS)}.")] = "ml-100k",
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with the original MovieLens files (default: download).")
    ] = None,
    protocol: Annotated[str, typer.Option(help="K (top-k), R (ratings) or both.")] = "both",
    models: Annotated[
        list[str] | None,
        typer.Option(
            help="Models and peers, comma-separated or repeated (default: every registered model "
            "and every peer): " + ", ".join(all_names())
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Split seed (the validation split uses 43).")] = 42,
    k: Annotated[int, typer.Option(help="Cut-off of the ranking metrics.")] = 10,
    repeats: Annotated[int, typer.Option(help="Timed runs per fit and scoring; the median is reported.")] = 1,
    out: Annotated[Path, typer.Option(help="Report folder (report.md, results.json, plots).")] = Path(
        "benchmark-report"
    ),
    quick: Annotated[
        bool,
        typer.Option(help=f"CI smoke run: {QUICK_USERS} users, {QUICK_EPOCHS} epochs, first grid point."),
    ] = False,
    check: Annotated[bool, typer.Option(help="Exit 1 when a recsys model misses its threshold.")] = False,
    thresholds: Annotated[
        Path | None, typer.Option(help="JSON list of thresholds replacing the built-in table.")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="An empty database to ingest into (default: a temporary SQLite file)."),
    ] = None,
) -> None:
    """Benchmark every recsys model against public peers on MovieLens (or synthetic data)."""
    from recsys.evaluation.report import check_line, markdown

    options = Options(
        dataset=dataset, data_dir=data_dir, protocol=protocol, models=split_names(models), seed=seed,
        k=k, repeats=repeats, out=out, quick=quick, check=check, thresholds=thresholds,
        database_url=database_url,
    )  # fmt: skip
    with _logging_to_stderr():
        result = run_benchmark(options)
    print(markdown(result))
    print(f"report written to {options.out}")
    failed = [c for c in result.get("checks", []) if not c["passed"]]
    if failed:
        for c in failed:
            print(f"CHECK FAILED: {check_line(c)}")
        raise typer.Exit(1)


def main() -> None:
    typer.run(benchmark_command)


if __name__ == "__main__":
    main()
