"""Pretraining curves from ``metrics.jsonl``: loss, schedules and collapse diagnostics against step.

Several runs are overlaid in their model colours (General black, Partials greys), which is how the
experiment report compares the General encoder with each Partial one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import ScalarFormatter

from ..errors import DataError
from .style import label_name, model_color, new_figure, save, styled

METRICS_FILE = "metrics.jsonl"

# (metrics.jsonl key, panel title, y-axis label)
PANELS = (
    ("loss", "Pretraining loss", "loss"),
    ("lr", "Learning rate", "learning rate"),
    ("weight_decay", "Weight decay", "weight decay"),
    ("momentum", "EMA momentum of the target encoder", "momentum"),
    ("target_std", "Target feature std (collapse → 0)", "std"),
    ("target_rank", "Effective rank of targets (collapse → 1)", "effective rank"),
)
# Learning-monitor panels (drawn when some run logged them): EMA solid, online dotted, random init dashed.
MONITOR_PANELS = (
    ("probe", "Learning monitor: probe accuracy", "test accuracy"),
    ("heldout_local_share", "Held-out local share of token variance (collapse → 0)", "share"),
)
PARTIAL_DASHES = ("-", "--", "-.", ":")
FEW_POINTS = 25  # below this many logged points a curve also shows its points


@dataclass
class Run:
    label: str
    rows: list[dict]

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the rows that logged a finite ``key``."""
        pairs = [(r["step"], r[key]) for r in self.rows if _is_number(r.get(key))]
        if not pairs:
            return np.empty(0), np.empty(0)
        steps, values = zip(*pairs, strict=True)
        return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Metric rows of a run folder, sorted by step (rows of the same step are merged, later keys win).

    A malformed last line (a run killed mid-write) is skipped; a malformed line elsewhere is an error.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder not found: {run_dir}")
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise DataError(f"{run_dir} has no {METRICS_FILE}: is it a pretraining run folder?")
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
    by_step: dict[int, dict] = {}
    for i, (line_no, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                continue
            raise DataError(f"{path}:{line_no}: not valid JSON ({e})") from e
        if not isinstance(row, dict) or not _is_number(row.get("step")):
            raise DataError(f"{path}:{line_no}: each row must be a JSON object with a numeric 'step'")
        by_step.setdefault(int(row["step"]), {}).update(row)  # loss and monitor rows of one step merge
    if not by_step:
        raise DataError(f"{path} holds no metric rows yet (the run logs every train.log_every steps)")
    return [by_step[s] for s in sorted(by_step)]


def default_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Folder names, with the parent folder added where two runs share a name."""
    names = [p.resolve().name for p in run_dirs]
    return [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(run_dirs, names,
                                                                                         strict=True)]


def plot_curves(run_dirs: Sequence[str | Path] | str | Path, out: str | Path,
                labels: Sequence[str] | None = None) -> Path:
    """Loss, learning rate, weight decay, EMA momentum, target std and effective rank against step.

    Labels default to the run folder names; names such as ``general`` or ``partial_2`` get their
    fixed model colours.
    """
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    if not dirs:
        raise DataError("no run folders given")
    labels = list(labels) if labels is not None else default_labels(dirs)
    if len(labels) != len(dirs):
        raise DataError(f"got {len(labels)} labels for {len(dirs)} run folders")
    runs = [Run(label, read_metrics(d)) for label, d in zip(labels, dirs, strict=True)]
    return save(_figure(runs), out)


@styled
def _figure(runs: list[Run]):
    monitored = any(len(run.series("probe_ema")[0]) for run in runs)
    columns = 4 if monitored else 3
    fig = new_figure(4.0 * columns, 6.6)
    axes = fig.subplots(2, columns, sharex=True)
    panel_axes = np.concatenate([axes[:, :3].ravel()]) if monitored else axes.ravel()
    for ax, (key, title, ylabel) in zip(panel_axes, PANELS, strict=True):
        _panel(ax, runs, key, title, ylabel)
    if monitored:
        for ax, (key, title, ylabel) in zip(axes[:, 3], MONITOR_PANELS, strict=True):
            _monitor_panel(ax, runs, key, title, ylabel)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    if len(runs) > 1:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(runs), 7), frameon=False)
        fig.suptitle(f"Pretraining curves of {len(runs)} runs")
    else:
        fig.suptitle(f"Pretraining curves: {runs[0].label}")
    return fig


def _panel(ax, runs: list[Run], key: str, title: str, ylabel: str) -> None:
    drawn = []
    for index, run in enumerate(runs):
        steps, values = run.series(key)
        if len(steps):
            ax.plot(steps, values, label=label_name(run.label), **_line_style(run.label, index, len(steps)))
            drawn.append(values)
        else:  # keep the legend complete even when this run did not log the metric
            ax.plot([], [], label=label_name(run.label), **_line_style(run.label, index))
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True)
    if not drawn:
        ax.text(0.5, 0.5, f"'{key}' not logged", transform=ax.transAxes, ha="center", va="center", color="#777777")
        return
    values = np.concatenate(drawn)
    if key == "loss" and values.min() > 0 and values.max() / values.min() > 20:
        ax.set_yscale("log")
    elif key in ("momentum", "target_rank", "target_std"):
        formatter = ScalarFormatter(useOffset=False)  # momentum 0.996…1.0 would otherwise read "+9.96e-1"
        formatter.set_scientific(False)
        ax.yaxis.set_major_formatter(formatter)
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))


def _monitor_panel(ax, runs: list[Run], key: str, title: str, ylabel: str) -> None:
    """EMA (solid) and online (dotted) encoder of each run, and its step-0 random-init level (dashed)."""
    drawn = False
    for index, run in enumerate(runs):
        style = _line_style(run.label, index, FEW_POINTS - 1)
        for encoder, linestyle in (("ema", "-"), ("online", ":")):
            steps, values = run.series(f"{key}_{encoder}")
            if len(steps):
                label = f"{label_name(run.label)} ({'EMA' if encoder == 'ema' else 'online'})"
                ax.plot(steps, values, label=label, **{**style, "linestyle": linestyle})
                drawn = True
        steps, values = run.series(f"{key}_ema")
        if len(steps) and steps[0] == 0:
            ax.axhline(values[0], color=style["color"], linestyle="--", linewidth=1.0,
                       label=f"{label_name(run.label)}: random init")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True)
    if not drawn:
        ax.text(0.5, 0.5, "no learning monitor (pretrain --eval-data)", transform=ax.transAxes, ha="center",
                va="center", color="#777777")
    elif key == "probe":
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f} %")
        ax.legend(fontsize="x-small", frameon=False)


def _line_style(label: str, index: int, points: int = FEW_POINTS) -> dict:
    name = Path(label).name
    style = {"color": model_color(name, index), "linewidth": 1.6}
    if points < FEW_POINTS:  # a handful of logged steps: show where they are, not only a polyline
        style.update(marker="o", markersize=3.5)
    if name == "general":
        style.update(linewidth=2.2, zorder=3)  # the reference stays on top of the Partials
    elif name.startswith("partial_") and name[8:].isdigit():
        style["linestyle"] = PARTIAL_DASHES[(int(name[8:]) - 1) % len(PARTIAL_DASHES)]
    return style
