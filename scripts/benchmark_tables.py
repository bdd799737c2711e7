"""Render the seed tables of docs/benchmarks.md from the ``results.json`` of benchmark runs.

    python scripts/benchmark_tables.py reports/ml-100k-42/results.json reports/ml-100k-1/results.json ...

Each file is one run of ``python -m pipelines.benchmark_movielens`` (``--out DIR`` writes
``DIR/results.json``). Per dataset, one Protocol K table: every model of the runs with its
nDCG@10 on seed 42 and on the mean of seeds 1-3, each next to the EASE reference of the same run
(the mean of the per-seed ratios), its fit seconds, peak memory and what it learned from (recipe
and settings). Nothing is measured here: every figure is copied from a run's results.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

REFERENCE = "ease-reference"
MAIN_SEED = 42
OTHER_SEEDS = (1, 2, 3)


def load(paths: list[Path]) -> dict[str, dict[int, dict[str, Any]]]:
    """dataset -> seed -> result; a later file of the same dataset and seed replaces rows by model."""
    runs: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for path in paths:
        result = json.loads(path.read_text())
        if "K" not in result["protocols"]:
            continue
        rows = {row["model"]: row for row in result["protocols"]["K"]["rows"]}
        known = runs[result["dataset"]].setdefault(result["seed"], {"rows": {}, "dates": set()})
        known["rows"].update(rows)
        known["dates"].add(result["date"][:10])
    return runs


def recipe(row: dict[str, Any]) -> str:
    """What the row learned from, briefly: the recipe's value rule and the settings chosen."""
    if row["kind"] == "peer":
        return f"every rating a 1; {json.dumps(row['params'], sort_keys=True)}"
    values = row.get("recipe", {}).get("values", "raw")
    chosen = []
    if row["params"].get("chosen_epochs"):
        chosen.append(f"{row['params']['chosen_epochs']} epochs")
    if "weight" in row["params"]:
        chosen.append(f"weight {row['params']['weight']}")
    return f"values={values}, defaults" + (f"; chosen: {', '.join(chosen)}" if chosen else "")


def ratio(row: dict[str, Any], rows: dict[str, Any]) -> float | None:
    reference = rows.get(REFERENCE)
    return row["metrics"]["ndcg"] / reference["metrics"]["ndcg"] if reference else None


def table(seeds: dict[int, dict[str, Any]]) -> str:
    main = seeds.get(MAIN_SEED, {"rows": {}})["rows"]
    others = [seeds[seed]["rows"] for seed in OTHER_SEEDS if seed in seeds]
    models = list(dict.fromkeys([*main, *(name for rows in others for name in rows)]))
    models.sort(key=lambda name: -main[name]["metrics"]["ndcg"] if name in main else 0.0)
    header = (
        "| model | nDCG@10 seed 42 | / EASE ref. | nDCG@10 mean of seeds 1-3 | / EASE ref. (mean) | "
        "fit s (42) | fit s (1-3) | peak RSS MB (42) | RSS +MB (42) | learned from (seed 42) |"
    )
    lines = [header, "|" + "---|" * 10]
    for name in models:
        row = main.get(name)
        seen = [rows[name] for rows in others if name in rows]
        ratios = [ratio(rows[name], rows) for rows in others if name in rows]
        ratios_known = [value for value in ratios if value is not None]
        complete = bool(ratios_known) and len(ratios_known) == len(seen)
        mean_ratio = statistics.mean(ratios_known) if complete else None
        fits = [r["fit_seconds"] for r in seen]
        cells = [
            name + ("" if len(seen) == len(OTHER_SEEDS) else f" ({len(seen)} of seeds 1-3)"),
            f"{row['metrics']['ndcg']:.4f}" if row else "-",
            f"{ratio(row, main):.3f}x" if row and ratio(row, main) is not None else "-",
            f"{statistics.mean(r['metrics']['ndcg'] for r in seen):.4f}" if seen else "-",
            f"{mean_ratio:.3f}x" if mean_ratio is not None else "-",
            f"{row['fit_seconds']:.2f}" if row else "-",
            f"{min(fits):.2f}-{max(fits):.2f}" if fits else "-",
            f"{row['peak_rss_mb']:.0f}" if row else "-",
            f"{row['rss_growth_mb']:.0f}" if row else "-",
            recipe(row) if row else recipe(seen[0]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed(seeds: dict[int, dict[str, Any]]) -> str:
    """nDCG@10 of every model on every seed run, and its ratio to the EASE reference of that run."""
    order = [seed for seed in (MAIN_SEED, *OTHER_SEEDS) if seed in seeds]
    models = list(dict.fromkeys(name for seed in order for name in seeds[seed]["rows"]))
    header = "| model | " + " | ".join(f"seed {seed}" for seed in order) + " |"
    lines = [header, "|" + "---|" * (len(order) + 1)]
    for name in models:
        cells = [name]
        for seed in order:
            rows = seeds[seed]["rows"]
            if name not in rows:
                cells.append("-")
                continue
            value = ratio(rows[name], rows)
            cells.append(f"{rows[name]['metrics']['ndcg']:.4f}" + (f" ({value:.3f}x)" if value else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files of benchmark runs")
    args = parser.parse_args()
    for dataset, seeds in load(args.results).items():
        dates = sorted(set().union(*(run["dates"] for run in seeds.values())))
        print(f"#### {dataset} (runs of {', '.join(dates)}; seeds {', '.join(map(str, sorted(seeds)))})\n")
        print(table(seeds))
        print()
        print(per_seed(seeds))
        print()


if __name__ == "__main__":
    main()
