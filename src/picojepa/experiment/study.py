"""The ensemble study's table: rows read from each experiment's ``report.json`` (and ``predictions.csv``), their
summary over repeats, the Markdown table and the figure (accuracy against pretraining clip-steps).

Every accuracy, ECE, clip-step count and gap to General is copied from the report. The one number the report
lacks, an aggregation's gap to the best single member, is the same paired bootstrap (resamples, seed, metric
from the report's ``bootstrap`` entry) applied to the two prediction columns of ``predictions.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..ensemble.report import ENSEMBLE_ORDER, GENERAL, read_predictions_csv
from ..metrics import paired_bootstrap_gap

BEST_SINGLE = "best_single"


def _gap(gap: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The parts of a paired-bootstrap result the table uses."""
    if gap is None:
        return None
    return {"mean": float(gap["mean"]), "ci95": [float(gap["ci95"][0]), float(gap["ci95"][1])]}


def gap_vs_best(report: Mapping[str, Any], y: np.ndarray, preds: Mapping[str, np.ndarray],
                name: str) -> dict[str, Any] | None:
    """Aggregation ``name`` minus the best single member (chosen on validation), paired on the test videos with
    the report's own bootstrap settings; None when the experiment chose no best member."""
    best = (report.get("reference") or {}).get(BEST_SINGLE)
    if not best:
        return None
    boot = report["bootstrap"]
    return _gap(paired_bootstrap_gap(y, preds[name], preds[best["member"]], n_resamples=int(boot["n_resamples"]),
                                     seed=int(boot["seed"]), metric=boot["metric"]))


def experiment_rows(report: Mapping[str, Any], y: np.ndarray, preds: Mapping[str, np.ndarray],
                    **keys: Any) -> list[dict[str, Any]]:
    """One row for General, one for the best single member and one per aggregation of one experiment; ``keys``
    (pool, protocol, …) are added to every row. Clip-steps are pretraining clips × steps from
    ``ensemble_compute``: General's own, a member's own, and the ensemble's total for an aggregation."""
    compute = report["ensemble_compute"]
    seed = int(report["settings"]["seed"])
    base = {**keys, "seed": seed, "general_clip_steps": int(compute["general_clip_steps"]),
            "ensemble_clip_steps": int(compute["ensemble_clip_steps"]), "n_test": int(report["n_test"])}
    general = report["models"][GENERAL]
    rows = [{**base, "name": GENERAL, "accuracy": float(general["accuracy"]["micro"]),
             "ece": report["ece"].get(GENERAL), "clip_steps": base["general_clip_steps"],
             "gap_vs_general": None, "gap_vs_best": None}]
    best = (report.get("reference") or {}).get(BEST_SINGLE)
    if best:
        member = best["member"]
        rows.append({**base, "name": BEST_SINGLE, "member": member,
                     "accuracy": float(best["test_accuracy"]["micro"]), "ece": report["ece"].get(member),
                     "clip_steps": int(compute["members"][member]["pretrain_clip_steps"]),
                     "gap_vs_general": _gap(best["gap_vs_general"]), "gap_vs_best": None})
    for name in [n for n in ENSEMBLE_ORDER if n in report["ensembles"]]:
        entry = report["ensembles"][name]
        rows.append({**base, "name": name, "accuracy": float(entry["accuracy"]["micro"]),
                     "ece": report["ece"].get(name), "clip_steps": base["ensemble_clip_steps"],
                     "gap_vs_general": _gap(entry["gap_vs_general"]),
                     "gap_vs_best": gap_vs_best(report, y, preds, name)})
    return rows


def rows_from_experiment(out: str | Path, report: Mapping[str, Any], **keys: Any) -> list[dict[str, Any]]:
    """:func:`experiment_rows` of the experiment folder ``out`` (its ``predictions.csv``)."""
    outputs = read_predictions_csv(Path(out) / "predictions.csv")
    return experiment_rows(report, outputs.y, outputs.preds, **keys)


# ------------------------------------------------------------------------------------ summary
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else math.nan


def _gap_summary(gaps: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    present = [g for g in gaps if g is not None]
    if not present:
        return None
    mean, std = _mean_std([g["mean"] for g in present])
    return {"mean": mean, "std": std, "per_repeat": [[g["mean"], *g["ci95"]] for g in present],
            "ci_above_zero": sum(g["ci95"][0] > 0 for g in present),
            "ci_below_zero": sum(g["ci95"][1] < 0 for g in present), "repeats": len(present)}


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by (pool, protocol, name) in first-seen order: accuracy mean ± std over repeats, each gap's
    per-repeat value and CI (in seed order, whatever order the rows came in, e.g. from parallel processes),
    how many CIs lie wholly above or below 0, mean ECE and clip-steps."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["pool"], row["protocol"], row["name"]), []).append(row)
    summary = []
    for (pool, protocol, name), unordered in groups.items():
        group = sorted(unordered, key=lambda r: r["seed"])
        acc, acc_std = _mean_std([r["accuracy"] for r in group])
        eces = [r["ece"] for r in group if r.get("ece") is not None]
        summary.append({"pool": pool, "protocol": protocol, "name": name, "repeats": len(group),
                        "accuracy": acc, "accuracy_std": acc_std,
                        "ece": float(np.mean(eces)) if eces else None,
                        "clip_steps": float(np.mean([r["clip_steps"] for r in group])),
                        "general_clip_steps": float(np.mean([r["general_clip_steps"] for r in group])),
                        "ensemble_clip_steps": float(np.mean([r["ensemble_clip_steps"] for r in group])),
                        "gap_vs_general": _gap_summary([r["gap_vs_general"] for r in group]),
                        "gap_vs_best": _gap_summary([r["gap_vs_best"] for r in group])})
    return summary


def _pp(value: float | None, signed: bool = True) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _gap_cell(gap: Mapping[str, Any] | None) -> str:
    if gap is None:
        return "–"
    per = "; ".join(f"{_pp(m)} [{_pp(lo)}, {_pp(hi)}]" for m, lo, hi in gap["per_repeat"])
    return f"**{_pp(gap['mean'])}** ({per}); >0: {gap['ci_above_zero']}/{gap['repeats']}"


def markdown_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """The study's table: one line per (pool, protocol, model or aggregation)."""
    head = ["Pool", "Protocol", "Model", "Accuracy % (mean ± std)", "− General, pp: mean (per seed [95 % CI])",
            "− best single, pp", "ECE", "Clip-steps General / ensemble"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join([":---"] * 3 + ["---:"] * 5) + " |"]
    for s in summary:
        ece = "–" if s["ece"] is None else f"{s['ece']:.3f}"
        clips = f"{s['general_clip_steps']:.0f} / {s['ensemble_clip_steps']:.0f}"
        lines.append(f"| {s['pool']} | {s['protocol']} | {s['name']} | {_pp(s['accuracy'], False)} ± "
                     f"{_pp(s['accuracy_std'], False)} | {_gap_cell(s['gap_vs_general'])} | "
                     f"{_gap_cell(s['gap_vs_best'])} | {ece} | {clips} |")
    return "\n".join(lines) + "\n"


def study_figure(summary: Sequence[Mapping[str, Any]], path: str | Path, names: Sequence[str] = ("soft",)) -> Path:
    """Accuracy against pretraining clip-steps, one panel per pool: per protocol its aggregations ``names``
    (one colour per protocol) at the ensemble's clip-steps joined to its General (black) at General's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    pools = list(dict.fromkeys(s["pool"] for s in summary))
    fig, axes = plt.subplots(1, len(pools), figsize=(5.5 * len(pools), 4.2), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = {"vote": "v", "soft": "o", "weighted": "D", "stack": "s", "route": "*"}
    for ax, pool in zip(axes[0], pools, strict=True):
        protocols = list(dict.fromkeys(s["protocol"] for s in summary if s["pool"] == pool))
        for k, protocol in enumerate(protocols):
            entries = {s["name"]: s for s in summary if s["pool"] == pool and s["protocol"] == protocol}
            colour = colours[k % len(colours)]
            general = entries.get(GENERAL)
            for name in [n for n in names if n in entries] + (["route"] if "route" in entries else []):
                e = entries[name]
                ax.errorbar(e["clip_steps"], 100 * e["accuracy"], yerr=_err(e), color=colour, marker=markers[name],
                            markersize=9, capsize=3, linestyle="none", label=f"{protocol}: {name}")
                if general is not None:
                    ax.plot([general["clip_steps"], e["clip_steps"]], [100 * general["accuracy"], 100 * e["accuracy"]],
                            color=colour, linewidth=1, alpha=0.6)
            if general is not None:
                ax.errorbar(general["clip_steps"], 100 * general["accuracy"], yerr=_err(general), color="black",
                            marker="^", markersize=7, capsize=3, linestyle="none", alpha=0.7)
        ax.errorbar([], [], color="black", marker="^", linestyle="none", label="General (of each protocol)")
        ax.set_xscale("log")
        ticks = sorted({s[key] for s in summary if s["pool"] == pool for key in ("clip_steps", "general_clip_steps")})
        ax.set_xticks(ticks, [_clips(t) for t in ticks])  # the budgets measured, not log decades between them
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"pool: {pool}")
        ax.set_xlabel("total pretraining clip-steps (log)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[0][0].set_ylabel("test accuracy (%), mean ± std over repeats")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _clips(value: float) -> str:
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


def _err(entry: Mapping[str, Any]) -> float:
    std = entry["accuracy_std"]
    return 0.0 if math.isnan(std) else 100 * std


# ------------------------------------------------------------------------------------ planning
def pretraining_plan(protocols: Sequence[str], members: int, clip_budget: int, fixed_budget: bool) -> dict[str, int]:
    """How many pretraining runs the study starts per repeat and their clip-steps, counting an encoder that
    several protocols share once (General, and the deep members that compute-matched reuses). ``clip_budget`` is
    one run's clip-steps on the whole pool (epochs × videos, or --clip-steps). With ``fixed_budget``
    (--clip-steps) a run on part of the pool (an independent shard, a domain) costs as much as one on all of it;
    with epochs, the parts of the pool cost one pool's worth together."""
    chosen = set(protocols)
    runs, clips = 0, 0
    if chosen & {"shared", "independent", "deep", "domains"}:
        runs, clips = 1, clip_budget  # the General, shared by these protocols
    if chosen & {"deep", "compute-matched"}:
        runs, clips = runs + members, clips + members * clip_budget
    if "compute-matched" in chosen:
        runs, clips = runs + 1, clips + members * clip_budget
    for protocol in ("independent", "domains"):
        if protocol in chosen:
            runs, clips = runs + members, clips + (members * clip_budget if fixed_budget else clip_budget)
    return {"runs_per_repeat": runs, "clip_steps_per_repeat": clips}


def domain_families(groups: Sequence[Sequence[str]], pool_root: str | Path) -> dict[str, Any]:
    """How the domains k-means found (``domains.json``'s video lists) split a pool whose top-level folders are
    known families (``synth --domains``): per domain, its videos per family, and the purity (share of the pool's
    videos that sit in their domain's most common family; 1 = the families recovered exactly)."""
    root = Path(pool_root).resolve()
    counts = []
    for group in groups:
        families = [Path(p).resolve().relative_to(root).parts[0] for p in group]
        counts.append({f: families.count(f) for f in sorted(set(families))})
    total = sum(sum(c.values()) for c in counts)
    purity = sum(max(c.values(), default=0) for c in counts) / max(total, 1)
    return {"per_domain": counts, "purity": purity}
