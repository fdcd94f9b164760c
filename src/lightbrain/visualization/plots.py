"""Training curves from a run's `metrics.jsonl`: loss (train and validation) and learning rate, as a PNG.

The trainer appends one JSON object per line to `{log_dir}/metrics.jsonl`:
  {"kind": "train", "iter", "loss", "lr", "tokens_per_sec", "elapsed_s", ...}
  {"kind": "eval", "iter", "train_loss", "val_loss", "val_bpb", "lr"}
A resumed run appends to the same file, so an iteration can appear twice; the later record wins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lightbrain.atomic_io import atomic_path

METRICS_FILE = "metrics.jsonl"


class MetricsError(ValueError):
    """metrics.jsonl is missing, empty or malformed; the message names the file and line."""


def metrics_path(path: str | Path) -> Path:
    """A log folder (holding metrics.jsonl) or the metrics file itself."""
    path = Path(path)
    return path / METRICS_FILE if path.is_dir() else path


def read_metrics(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """{"train": [...], "eval": [...]} records, each list sorted by iteration with repeats resolved
    to the latest record (a resumed or restarted run writes its iterations again)."""
    file = metrics_path(path)
    if not file.is_file():
        raise MetricsError(f"no training metrics at {file}: train a model first (lightbrain train), "
                           f"or point at the run's log folder (train.log_dir)")
    by_kind: dict[str, dict[int, dict[str, Any]]] = {"train": {}, "eval": {}}
    lines = file.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            # A run killed mid-write can leave a partial last line; anything else is corruption.
            if number == len(lines):
                continue
            raise MetricsError(f"{file}: line {number} is not valid JSON: {line[:80]!r}") from None
        if not isinstance(record, dict) or "iter" not in record or record.get("kind") not in by_kind:
            raise MetricsError(f"{file}: line {number} is not a train/eval record with an 'iter': {line[:80]!r}")
        by_kind[record["kind"]][int(record["iter"])] = record
    out = {kind: [records[i] for i in sorted(records)] for kind, records in by_kind.items()}
    if not out["train"] and not out["eval"]:
        raise MetricsError(f"{file} holds no train or eval records yet; wait for the first log_interval")
    return out


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["iter"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def draw_training_curves(metrics: dict[str, list[dict[str, Any]]], fig: Figure | None = None,
                         title: str | None = None) -> Figure:
    """Draw loss (top) and learning rate (bottom) against the optimizer step on `fig` (a new figure
    when None); returns the figure. The notebook calls this again and again for its live plot."""
    if fig is None:
        fig = new_figure((8, 6.5), layout="tight")
    fig.clear()
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    train, evals = metrics["train"], metrics["eval"]

    x, y = _series(train, "loss")
    if x:
        loss_ax.plot(x, y, color="tab:blue", alpha=0.6, linewidth=1.2, label="train loss (per step)")
    best = min((r for r in evals if isinstance(r.get("val_loss"), (int, float))),
               key=lambda r: r["val_loss"], default=None)
    val_label = "validation loss"
    if best is not None:
        val_label += f" (best {best['val_loss']:.3f} at step {best['iter']}"
        if isinstance(best.get("val_bpb"), (int, float)):
            val_label += f", {best['val_bpb']:.3f} bits/byte"
        val_label += ")"
    for key, style, label in (("train_loss", dict(color="tab:blue", marker="o"), "train loss (eval)"),
                              ("val_loss", dict(color="tab:orange", marker="s"), val_label)):
        x, y = _series(evals, key)
        if x:
            loss_ax.plot(x, y, linewidth=2, markersize=5, label=label, **style)
    if best is not None:
        loss_ax.plot([best["iter"]], [best["val_loss"]], marker="*", markersize=14, color="tab:red", zorder=5,
                     linestyle="none")
    loss_ax.set_ylabel("cross-entropy loss (nats/token)")
    loss_ax.grid(True, alpha=0.3)
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend(loc="upper right", fontsize=9)
    loss_ax.set_title(title or "Training curves")

    # The learning rate of each logged step; eval records carry the rate of the step about to run,
    # so they are used only when no step was logged.
    x, y = _series(train or evals, "lr")
    if x:
        lr_ax.plot(x, y, color="tab:green", linewidth=1.5)
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("optimizer step (iteration)")
    lr_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    lr_ax.grid(True, alpha=0.3)
    return fig


def new_figure(size: tuple[float, float], layout: str = "constrained") -> Figure:
    """A figure drawn by Agg, outside pyplot: no display needed, no global backend changed (a notebook's
    inline plots keep working), and nothing to close. The layout engine spaces titles and labels at draw time."""
    fig = Figure(figsize=size, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_path: str | Path, dpi: int = 120) -> Path:
    """Write a figure as PNG atomically."""
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")  # keep outer labels and colorbars
    return out_path


def plot_training_curves(log_dir_or_file: str | Path, out_path: str | Path | None = None,
                         title: str | None = None) -> Path:
    """metrics.jsonl -> PNG of loss and learning-rate curves; default out_path is
    `training_curves.png` beside the metrics file. Returns the path written."""
    file = metrics_path(log_dir_or_file)
    metrics = read_metrics(file)
    fig = draw_training_curves(metrics, title=title or f"Training curves: {file}")
    return save_figure(fig, out_path or file.with_name("training_curves.png"))
