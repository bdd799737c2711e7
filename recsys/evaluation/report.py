"""Benchmark report: a markdown table, a JSON file with every figure, and PNG plots.

The input is the benchmark's result dictionary (see ``pipelines/benchmark_movielens.py``):
``{"dataset", "seed", "k", "machine", "versions", "command", "protocols": {"K": {...},
"R": {...}}}`` where each protocol holds ``"rows"``: one dict per model with ``model``, ``kind``
(``recsys`` / ``peer``), ``params``, ``metrics``, ``fit_seconds``, ``topk_seconds``,
``peak_rss_mb`` and ``history``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError

#: Columns of the Protocol K and Protocol R tables: (result key, header, format).
RANKING_COLUMNS = (
    ("ndcg", "nDCG@{k}", "{:.4f}"),
    ("recall", "Recall@{k}", "{:.4f}"),
    ("precision", "Precision@{k}", "{:.4f}"),
    ("map", "MAP@{k}", "{:.4f}"),
    ("hr", "HR@{k}", "{:.4f}"),
    ("coverage", "Coverage", "{:.4f}"),
)
RATING_COLUMNS = (
    ("rmse", "RMSE", "{:.4f}"),
    ("rmse_std", "RMSE std", "{:.4f}"),
    ("mae", "MAE", "{:.4f}"),
)
#: The peer whose fit time the ratio column divides by, per protocol (the closest public analogue).
RATIO_REFERENCE = {"K": "implicit-als", "R": "surprise-svd"}


def _number(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def protocol_table(result: dict[str, Any], protocol: str) -> str:
    """The markdown table of one protocol, best model first."""
    section = result["protocols"][protocol]
    k = result["k"]
    columns = RANKING_COLUMNS if protocol == "K" else RATING_COLUMNS
    reference = RATIO_REFERENCE[protocol]
    reference_rows = [row for row in section["rows"] if row["model"] == reference]
    reference_fit = reference_rows[0]["fit_seconds"] if reference_rows else None
    headers = ["Model", "Kind", *(header.format(k=k) for _, header, _ in columns), "Fit s"]
    headers += [f"Fit / {reference}" if reference_fit else "Fit ratio", "Top-k s", "Peak RSS MB", "RSS +MB"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in sorted_rows(section["rows"], protocol):
        metrics = row["metrics"]
        ratio = row["fit_seconds"] / reference_fit if reference_fit else None
        cells = [row["model"], row["kind"]]
        cells += [_number(metrics.get(key), fmt) for key, _, fmt in columns]
        cells += [
            _number(row["fit_seconds"], "{:.2f}"),
            _number(ratio, "{:.2f}x"),
            _number(row.get("topk_seconds"), "{:.3f}"),
            _number(row.get("peak_rss_mb"), "{:.0f}"),
            _number(row.get("rss_growth_mb"), "{:.0f}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sorted_rows(rows: list[dict[str, Any]], protocol: str) -> list[dict[str, Any]]:
    if protocol == "K":
        return sorted(rows, key=lambda row: -row["metrics"]["ndcg"])
    return sorted(rows, key=lambda row: row["metrics"]["rmse"])


def comparison(result: dict[str, Any], protocol: str) -> str:
    """One sentence: the best recsys model against the best peer on the headline metrics."""
    rows = result["protocols"][protocol]["rows"]
    ours = [row for row in rows if row["kind"] == "recsys" and row["model"] != "popularity"]
    peers = [row for row in rows if row["kind"] == "peer"]
    if not ours or not peers:
        return "No recsys model and peer to compare in this run."
    k = result["k"]
    if protocol == "K":
        lines = []
        for metric, label in (("ndcg", f"nDCG@{k}"), ("recall", f"Recall@{k}")):
            best = max(ours, key=lambda row: row["metrics"][metric])
            peer = max(peers, key=lambda row: row["metrics"][metric])
            gap = best["metrics"][metric] - peer["metrics"][metric]
            verdict = "at or above" if gap >= 0 else "below"
            lines.append(
                f"- {label}: best recsys model {best['model']} {best['metrics'][metric]:.4f} is {verdict} "
                f"the best peer {peer['model']} {peer['metrics'][metric]:.4f} (difference {gap:+.4f})."
            )
        return "\n".join(lines)
    best = min(ours, key=lambda row: row["metrics"]["rmse"])
    peer = min(peers, key=lambda row: row["metrics"]["rmse"])
    gap = best["metrics"]["rmse"] - peer["metrics"]["rmse"]
    verdict = "at or below" if gap <= 0 else "above"
    return (
        f"- RMSE: best recsys model {best['model']} {best['metrics']['rmse']:.4f} is {verdict} the best "
        f"peer {peer['model']} {peer['metrics']['rmse']:.4f} (difference {gap:+.4f})."
    )


def markdown(result: dict[str, Any]) -> str:
    """The whole report as markdown: context, one table per protocol, skipped models, tuning."""
    machine = result["machine"]
    quick = "; QUICK run: a slice with few epochs, not comparable" if result["quick"] else ""
    parts = [
        f"# Benchmark: {result['dataset']}",
        "",
        f"- Command: `{result['command']}`",
        f"- Date: {result['date']}; seed {result['seed']}; k = {result['k']}; "
        f"repeats {result['repeats']} (timings are medians){quick}",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']:.1f} GB RAM, "
        f"GPU: {machine['gpu']}; {machine['platform']}",
        f"- Data: {result['data']['interactions']} interactions, {result['data']['users']} users, "
        f"{result['data']['items']} items",
    ]
    for protocol, title in (
        ("K", "Protocol K: top-k recommendation"),
        ("R", "Protocol R: rating prediction"),
    ):
        if protocol not in result["protocols"]:
            continue
        section = result["protocols"][protocol]
        parts += ["", f"## {title}", "", section["description"], ""]
        parts += [protocol_table(result, protocol), "", comparison(result, protocol)]
        tuned = [row for row in section["rows"] if row.get("tuning")]
        if tuned:
            parts += ["", "Chosen settings (validation split):", ""]
            parts += [f"- {row['model']}: `{json.dumps(row['params'], sort_keys=True)}`" for row in tuned]
        if section.get("skipped"):
            parts += ["", "Skipped:", ""] + [f"- {reason}" for reason in section["skipped"]]
    if result.get("checks"):
        parts += ["", "## Threshold checks", ""]
        parts += [
            f"- {check['model']} {check['metric']} {check['value']:.4f} {check['op']} {check['bound']}: "
            f"{'pass' if check['passed'] else 'FAIL'}"
            for check in result["checks"]
        ]
    versions = ", ".join(f"{name} {version}" for name, version in sorted(result["versions"].items()))
    parts += ["", f"Library versions: {versions}", ""]
    return "\n".join(parts)


def write_report(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write report.md, results.json and the plots into ``out_dir``; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(result, out_dir)
    # The plots sit beside report.md, so relative links show them wherever the folder is viewed.
    figures = ["", "## Plots", ""]
    for path in plots.values():
        figures += [f"![{path.stem.replace('_', ' ')}]({path.name})", ""]
    return {
        "markdown": _atomic_write(out_dir / "report.md", markdown(result) + "\n".join(figures)),
        "json": _atomic_write(out_dir / "results.json", json.dumps(result, indent=2, default=str)),
        **plots,
    }


def _atomic_write(path: Path, text: str) -> Path:
    # A report folder read while the benchmark rewrites it never shows a half-written file.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    # mkstemp creates the file readable by its owner only; a report gets a plain file's mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)
    return path


def write_plots(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """metrics.png (metric per model), training_curves.png, quality_vs_fit_time.png."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("the benchmark's plots need matplotlib: pip install 'recsys[plots]'") from None

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}
    protocols = [p for p in ("K", "R") if p in result["protocols"]]
    k = result["k"]
    headline = {"K": ("ndcg", f"nDCG@{k}"), "R": ("rmse", "RMSE")}

    figure, axes = plt.subplots(1, len(protocols), figsize=(6 * len(protocols), 4), squeeze=False)
    for axis, protocol in zip(axes[0], protocols, strict=True):
        rows = sorted_rows(result["protocols"][protocol]["rows"], protocol)
        key, label = headline[protocol]
        colours = ["tab:blue" if row["kind"] == "recsys" else "tab:gray" for row in rows]
        axis.barh([row["model"] for row in rows], [row["metrics"][key] for row in rows], color=colours)
        if protocol == "K":
            axis.barh(
                [row["model"] for row in rows],
                [row["metrics"]["recall"] for row in rows],
                color="none",
                edgecolor="black",
                label=f"Recall@{k} (outline)",
            )
            axis.legend(loc="lower right")
        axis.invert_yaxis()
        axis.set_xlabel(label)
        axis.set_title(f"{result['dataset']}, Protocol {protocol} (blue: recsys, grey: peers)")
    figure.tight_layout()
    paths["metrics_plot"] = _save(figure, out_dir / "metrics.png")

    curve_keys = ("val_ndcg", "val_rmse")  # one panel each: their scales differ
    figure, axes = plt.subplots(1, 2, figsize=(12, 4), squeeze=False)
    for axis, key in zip(axes[0], curve_keys, strict=True):
        plotted = False
        for protocol in protocols:
            for row in result["protocols"][protocol]["rows"]:
                points = [(e["epoch"], e[key]) for e in row.get("history", []) if e.get(key) is not None]
                if points:
                    epochs, values = zip(*points, strict=True)
                    axis.plot(epochs, values, marker="o", label=f"{row['model']} (Protocol {protocol})")
                    plotted = True
        axis.set_xlabel("epoch")
        axis.set_ylabel(key)
        axis.set_title(f"{key} per epoch on the validation split")
        if plotted:
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, f"no model in this run logs {key}", ha="center", transform=axis.transAxes)
    figure.tight_layout()
    paths["training_curves_plot"] = _save(figure, out_dir / "training_curves.png")

    figure, axes = plt.subplots(1, len(protocols), figsize=(6 * len(protocols), 4), squeeze=False)
    for axis, protocol in zip(axes[0], protocols, strict=True):
        key, label = headline[protocol]
        for row in result["protocols"][protocol]["rows"]:
            seconds = max(row["fit_seconds"], 1e-4)  # log axis: a 0 s fit sits at 0.1 ms
            marker = "o" if row["kind"] == "recsys" else "s"
            axis.scatter(seconds, row["metrics"][key], marker=marker)
            axis.annotate(row["model"], (seconds, row["metrics"][key]), fontsize="small")
        axis.set_xscale("log")
        axis.set_xlabel("fit seconds (log)")
        axis.set_ylabel(label)
        axis.set_title(f"Quality vs fit time, Protocol {protocol}")
    figure.tight_layout()
    paths["quality_vs_time_plot"] = _save(figure, out_dir / "quality_vs_fit_time.png")
    return paths


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
