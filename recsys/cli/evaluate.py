"""`recsys evaluate` (a registered version on a protocol split) and `recsys benchmark`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from recsys.cli.common import DatabaseUrlOption, JsonOption, console, load_settings, open_database, print_json
from recsys.errors import ConfigError, DataError

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from recsys.data.interactions import IdMap, Interactions
    from recsys.registry.registry import LoadedVersion
    from recsys.retrieval import Catalogue, Retriever

OPTIMISTIC_CAVEAT = (
    "caveat: version {version} was fitted on the interactions up to its watermark, and "
    "{seen:.0%} of these test interactions are among them, so the figures are optimistic. A fair "
    "figure comes from `recsys benchmark`, which fits on the train part only."
)


def to_version_indices(
    data: Interactions, users: IdMap, items: IdMap
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Map the rows of ``data`` to a version's user and item indices.

    Users the version does not know get indices after its own users (the model folds them in
    from their train rows); interactions with items it does not know cannot be ranked or
    predicted and are dropped. Returns (user index, item index, kept mask, number of users).
    """
    import numpy as np

    user_of_data = users.indices(data.users.external_ids)
    item_of_data = items.indices(data.items.external_ids)
    new_users = np.flatnonzero(user_of_data < 0)
    user_of_data[new_users] = len(users) + np.arange(len(new_users))
    kept = item_of_data[data.item_index] >= 0
    return (
        user_of_data[data.user_index[kept]],
        item_of_data[data.item_index[kept]],
        kept,
        len(users) + len(new_users),
    )


def _matrix(part: Interactions, users: IdMap, items: IdMap, binary: bool) -> sp.csr_matrix:
    import numpy as np
    import scipy.sparse as sp

    user_index, item_index, kept, n_users = to_version_indices(part, users, items)
    values = np.ones(int(kept.sum()), np.float32) if binary else part.values[kept]
    return sp.csr_matrix((values, (user_index, item_index)), shape=(n_users, len(items)), dtype=np.float32)


def ranking_inputs(
    loaded: LoadedVersion, train: Interactions, catalogue: Catalogue | None = None
) -> tuple[Retriever, sp.csr_matrix, np.ndarray]:
    """What Protocol K ranks with: the version's retriever (its saved index, the popular counts
    of ``train``), the ``train`` matrix in the version's indices with the stored values (what the
    service folds in) and, per row, whether the user has train interactions newer than the
    version's watermark (the service folds those users in). ``catalogue`` enables genre filters."""
    import numpy as np

    from recsys.retrieval import Retriever
    from recsys.retrieval.loading import history_rule, version_index

    matrix = _matrix(train, loaded.users, loaded.items, binary=False)
    counts = np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float32)
    retriever = Retriever.for_model(
        loaded.model, version_index(loaded), popular_counts=counts, history_rule=history_rule(loaded)
    )
    if catalogue is not None:
        retriever.catalogue = catalogue
    fold = np.zeros(matrix.shape[0], dtype=bool)
    watermark = loaded.info.watermark
    if watermark is not None:
        user_index, _, kept, _ = to_version_indices(train, loaded.users, loaded.items)
        fold[user_index[train.timestamps[kept] > watermark]] = True
    return retriever, matrix, fold


def evaluate_command(
    version: Annotated[
        str | None,
        typer.Option(
            "--version", help="Registered version id (default: the production version).", show_default=False
        ),
    ] = None,
    protocol: Annotated[str, typer.Option(help="K (top-k ranking) or R (rating prediction).")] = "K",
    k: Annotated[int, typer.Option(help="Cut-off of the ranking metrics.")] = 10,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 42,
    database_url: DatabaseUrlOption = None,
    json_output: JsonOption = False,
) -> None:
    """Evaluate a registered version on the Protocol K split or the Protocol R folds of the
    database's interactions (docs/protocol.md)."""
    import numpy as np

    from recsys.data.matrix import build_interactions
    from recsys.data.splits import protocol_k_split, protocol_r_folds
    from recsys.evaluation import evaluate_ranking, evaluate_rating
    from recsys.registry.registry import ModelRegistry
    from recsys.training.trainer import RATING_MODELS

    if protocol not in ("K", "R"):
        raise ConfigError(f"--protocol must be K or R, got {protocol!r}")
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    settings = load_settings(database_url)
    engine = open_database(settings)
    loaded = ModelRegistry(engine, settings.artifacts).load(version)
    data = build_interactions(engine)
    if len(data) == 0:
        raise DataError(
            "the database has no interactions to evaluate on; ingest some first (`recsys ingest`)"
        )
    is_rating_model = loaded.info.model in RATING_MODELS

    metrics: dict[str, Any]
    if protocol == "K":
        train, test = protocol_k_split(data, seed=seed)
        binary = not is_rating_model
        test_csr = _matrix(test, loaded.users, loaded.items, binary)
        if test_csr.nnz == 0:
            raise DataError("no test interaction is on an item the version knows: nothing to evaluate")
        # Ranked through the version's retriever, exactly as the service would answer.
        retriever, train_csr, fold = ranking_inputs(loaded, train)
        metrics = evaluate_ranking(retriever, train_csr, test_csr, k=k, fold=fold)
        tested = [test]
    else:
        folds = protocol_r_folds(data, seed=seed)
        low, high = float(data.values.min()), float(data.values.max())
        per_fold = [
            evaluate_rating(
                loaded.model,
                _matrix(train, loaded.users, loaded.items, binary=False),
                _matrix(test, loaded.users, loaded.items, binary=False),
                clip=(low, high),
            )
            for train, test in folds
        ]
        rmses = [fold["rmse"] for fold in per_fold]
        metrics = {
            "rmse": float(np.mean(rmses)),
            "rmse_std": float(np.std(rmses)),
            "mae": float(np.mean([fold["mae"] for fold in per_fold])),
            "folds": float(len(folds)),
        }
        tested = [test for _, test in folds]
    watermark = loaded.info.watermark
    stamps = np.concatenate([part.timestamps for part in tested])
    seen = float(np.mean(stamps <= watermark)) if watermark is not None and len(stamps) else 1.0
    caveat = OPTIMISTIC_CAVEAT.format(version=loaded.info.version, seen=seen) if seen > 0 else None
    if json_output:
        print_json(
            {"version": loaded.info.version, "model": loaded.info.model, "protocol": protocol,
             "k": k, "seed": seed, "metrics": metrics, "caveat": caveat}
        )  # fmt: skip
        return
    console.print(f"{loaded.info.version} ({loaded.info.model}), Protocol {protocol}, seed {seed}")
    for name, value in metrics.items():
        label = f"{name}@{k}" if protocol == "K" and name not in ("users", "coverage") else name
        console.print(
            f"  {label:<14} {value:.4f}" if name not in ("users", "folds") else f"  {label:<14} {value:.0f}"
        )
    if caveat:
        console.print(f"[yellow]{caveat}[/yellow]")


def register(root: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    from pipelines.benchmark_movielens import benchmark_command

    root.command("evaluate")(evaluate_command)
    root.command("benchmark")(benchmark_command)
