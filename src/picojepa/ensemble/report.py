"""The experiment report: ``predictions.csv``, ``report.json`` and ``report.md`` from test-set outputs.

``predictions.csv`` is the source of truth: one row per (test video, model or ensemble) with the label,
the prediction and one probability column per class. Every accuracy/confidence number and bootstrap
gap in ``report.json`` can be rebuilt from it with :func:`recompute_from_predictions`.

Names: models are ``general`` and ``partial_1`` ... ``partial_N`` (the ensemble members); every other
name is an aggregation (``vote``, ``soft``, ``weighted``, ``stack``; ``route`` in the domains protocol).
The vote's probabilities are its vote fractions.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ConfigError, DataError
from ..metrics import check_labels, check_probs, evaluate_model, paired_bootstrap_gap, pairwise_disagreement
from ..utils import write_json, write_text
from .aggregation import HARD_VOTE_TIE_RULE, hard_vote, vote_fractions

GENERAL = "general"
RANDOM_INIT = "random_init"  # the General's head on the same architecture at initialisation: the baseline
MEMBER_PATTERN = re.compile(r"^partial_([1-9]\d*)$")
ENSEMBLE_ORDER = ("vote", "soft", "weighted", "stack", "route")
CSV_COLUMNS = ("video", "label", "model", "pred")
DEFAULT_RESAMPLES = 2000


@dataclass
class ReportInputs:
    """Everything the report needs about the test set; probabilities are (n test videos, C) arrays.

    ``models`` holds ``general`` and ``partial_k``; ``ensembles`` the aggregations (``vote`` as vote
    fractions). ``predictions`` optionally gives explicit predicted labels for any name whose decision is
    not the argmax; the vote's prediction defaults to :func:`picojepa.ensemble.aggregation.hard_vote` over the partial
    members. ``best_single`` names the member chosen on validation. ``compute`` maps a model name to
    facts such as clip-steps, mode, preset, seed and seconds; ``extra`` entries are added to the top
    level of ``report.json``.
    """

    class_names: Sequence[str]
    test_videos: Sequence[str]
    test_labels: ArrayLike
    models: Mapping[str, ArrayLike]
    ensembles: Mapping[str, ArrayLike] = field(default_factory=dict)
    predictions: Mapping[str, ArrayLike] = field(default_factory=dict)
    split_counts: Mapping[str, Any] = field(default_factory=dict)
    best_single: str | None = None
    compute: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Outputs:
    """Validated per-name probabilities and predictions, models first then ensembles, in report order."""

    classes: list[str]
    videos: list[str]
    y: np.ndarray
    probs: dict[str, np.ndarray]
    preds: dict[str, np.ndarray]
    model_names: list[str]
    ensemble_names: list[str]

    @property
    def member_names(self) -> list[str]:
        return [name for name in self.model_names if MEMBER_PATTERN.match(name)]


# --------------------------------------------------------------------------------------------- naming


def is_model_name(name: str) -> bool:
    return name in (GENERAL, RANDOM_INIT) or MEMBER_PATTERN.match(name) is not None


def _model_order(names: Sequence[str]) -> list[str]:
    members = sorted((n for n in names if MEMBER_PATTERN.match(n)), key=lambda n: int(n.split("_")[1]))
    return [n for n in (GENERAL, RANDOM_INIT) if n in names] + members


def _ensemble_order(names: Sequence[str]) -> list[str]:
    return [n for n in ENSEMBLE_ORDER if n in names] + [n for n in names if n not in ENSEMBLE_ORDER]


def display_name(name: str) -> str:
    """``partial_3`` -> ``Partial 3``, ``general`` -> ``General``, ``best_single`` -> ``Best single``."""
    if name == RANDOM_INIT:
        return "Random init"
    return name.replace("_", " ").capitalize()


# --------------------------------------------------------------------------------------------- validation


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    classes = [str(c) for c in class_names]
    if len(set(classes)) != len(classes) or not classes:
        raise DataError(f"class names must be unique and non-empty, got {classes}")
    clashing = sorted(set(classes) & set(CSV_COLUMNS))
    if clashing:
        raise DataError(f"class names {clashing} clash with predictions.csv columns {', '.join(CSV_COLUMNS)}")
    return classes


def _validate(inputs: ReportInputs) -> _Outputs:
    classes = _check_class_names(inputs.class_names)
    videos = [str(v) for v in inputs.test_videos]
    y = check_labels(inputs.test_labels, len(classes), "test labels")
    if len(videos) != len(y) or not videos:
        raise DataError(f"got {len(videos)} test videos for {len(y)} test labels (need the same, non-zero)")
    if len(set(videos)) != len(videos):
        raise DataError("test video names must be unique")
    if GENERAL not in inputs.models:
        raise ConfigError(f"models must include {GENERAL!r} (the reference for every gap)")
    bad_models = [n for n in inputs.models if not is_model_name(n)]
    bad_ensembles = [n for n in inputs.ensembles if is_model_name(n)]
    if bad_models or bad_ensembles:
        raise ConfigError(
            "models must be named 'general', 'random_init' or 'partial_<k>' (k = 1, 2, ...) and ensembles "
            "anything else; "
            f"got models {bad_models}, ensembles {bad_ensembles}"
        )
    model_names = _model_order(list(inputs.models))
    ensemble_names = _ensemble_order(list(inputs.ensembles))
    probs = {n: _check_output(inputs.models[n], n, len(y), len(classes)) for n in model_names}
    probs.update({n: _check_output(inputs.ensembles[n], n, len(y), len(classes)) for n in ensemble_names})
    unknown = sorted(set(inputs.predictions) - set(probs))
    if unknown:
        raise ConfigError(f"predictions given for unknown model(s)/ensemble(s) {unknown}")
    preds = {n: _prediction(inputs, n, probs, len(classes), len(y)) for n in probs}
    if "vote" in probs and "vote" not in inputs.predictions:
        preds["vote"] = _vote_prediction(probs, model_names)
    if inputs.best_single is not None and not MEMBER_PATTERN.match(str(inputs.best_single)):
        raise ConfigError(f"best_single must name a partial member, got {inputs.best_single!r}")
    if inputs.best_single is not None and inputs.best_single not in probs:
        raise ConfigError(f"best_single {inputs.best_single!r} is not among the models {model_names}")
    return _Outputs(classes, videos, y, probs, preds, model_names, ensemble_names)


def _check_output(probs: ArrayLike, name: str, n: int, num_classes: int) -> np.ndarray:
    arr = check_probs(probs, name=f"probabilities of {name!r}")
    if arr.shape != (n, num_classes):
        raise DataError(f"probabilities of {name!r} have shape {arr.shape}, expected ({n}, {num_classes})")
    return arr


def _prediction(inputs: ReportInputs, name: str, probs: dict[str, np.ndarray], num_classes: int, n: int):
    if name not in inputs.predictions:
        return np.argmax(probs[name], axis=1)
    pred = check_labels(inputs.predictions[name], num_classes, f"predictions of {name!r}")
    if len(pred) != n:
        raise DataError(f"predictions of {name!r} have {len(pred)} entries for {n} test videos")
    return pred


def _vote_prediction(probs: dict[str, np.ndarray], model_names: list[str]) -> np.ndarray:
    """Apply the hard-vote tie rule over the partial members, checking they produced the given fractions."""
    members = [n for n in model_names if MEMBER_PATTERN.match(n)]
    stacked = np.stack([probs[n] for n in members]) if members else None
    if stacked is None or not np.allclose(vote_fractions(stacked), probs["vote"], atol=1e-9):
        raise ConfigError(
            "the 'vote' fractions do not come from the partial members' votes; pass predictions['vote'] "
            "(Ensemble.predict) so the hard-vote tie rule is applied"
        )
    return hard_vote(stacked)[0]


# --------------------------------------------------------------------------------------------- report.json


def build_report(
    inputs: ReportInputs, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, gap_metric: str = "micro"
) -> dict[str, Any]:
    """The ``report.json`` structure (see the module docstring of :mod:`picojepa.ensemble.report`)."""
    return _build_report(_validate(inputs), inputs, n_resamples, seed, gap_metric)


def _build_report(
    out: _Outputs, inputs: ReportInputs, n_resamples: int, seed: int, gap_metric: str
) -> dict[str, Any]:
    report = _metrics_from_outputs(out, n_resamples, seed, gap_metric)
    report["splits"] = dict(inputs.split_counts)
    report["reference"]["best_single"] = _best_single(out, inputs.best_single, n_resamples, seed, gap_metric)
    report["compute"] = {name: dict(info) for name, info in inputs.compute.items()}
    report["vote_tie_rule"] = HARD_VOTE_TIE_RULE
    report["predictions_csv"] = "predictions.csv"
    clashing = sorted(set(inputs.extra) & set(report))
    if clashing:
        raise ConfigError(f"extra report entries {clashing} would overwrite built-in report keys")
    report.update(inputs.extra)
    return report


def _metrics_from_outputs(out: _Outputs, n_resamples: int, seed: int, gap_metric: str) -> dict[str, Any]:
    """The part of the report that depends only on predictions.csv's content."""

    members = out.member_names

    def evaluate(name: str) -> dict[str, Any]:
        if name != "vote" or not members:
            return evaluate_model(out.y, out.probs[name], out.classes, pred=out.preds[name])
        # The vote's "probabilities" are vote shares; its confidence is the members' mean probability of the
        # class it chose, so the confidence table compares probabilities with probabilities.
        chosen, rows = out.preds[name], np.arange(len(out.y))
        member_conf = np.stack([out.probs[m][rows, chosen] for m in members]).mean(axis=0)
        entry = evaluate_model(out.y, out.probs[name], out.classes, pred=chosen, confidence=member_conf)
        share = out.probs[name][rows, chosen]
        per_class = [float(share[out.y == c].mean()) if np.any(out.y == c) else None for c in range(len(out.classes))]
        entry["vote_share"] = {"per_class": dict(zip(out.classes, per_class, strict=True)),
                               "mean": float(np.mean([v for v in per_class if v is not None])),
                               "micro": float(share.mean())}
        entry["confidence_definition"] = "mean member probability of the voted class"
        return entry

    ensembles = {}
    for name in out.ensemble_names:
        ensembles[name] = evaluate(name)
        ensembles[name]["gap_vs_general"] = paired_bootstrap_gap(
            out.y, out.preds[name], out.preds[GENERAL], n_resamples=n_resamples, seed=seed, metric=gap_metric
        )
    models = {name: evaluate(name) for name in out.model_names}
    gain = None
    if RANDOM_INIT in out.preds:
        gain = paired_bootstrap_gap(out.y, out.preds[GENERAL], out.preds[RANDOM_INIT], n_resamples=n_resamples,
                                    seed=seed, metric=gap_metric)
    return {
        "classes": out.classes,
        "n_test": len(out.y),
        "chance": 1.0 / len(out.classes),
        "pretraining_gain": gain,
        "models": models,
        "ensembles": ensembles,
        "ece": {name: entry["ece"] for name, entry in {**models, **ensembles}.items()},
        "diversity": _diversity(out, members),
        "reference": {"oracle": _oracle(out, members)},
        "bootstrap": {"n_resamples": int(n_resamples), "seed": int(seed), "metric": gap_metric},
    }


def _diversity(out: _Outputs, members: list[str]) -> dict[str, Any]:
    if not members:
        return {"members": [], "mean_pairwise_disagreement": None, "matrix": []}
    mean, matrix = pairwise_disagreement(np.stack([out.preds[n] for n in members]))
    return {
        "members": members,
        "mean_pairwise_disagreement": None if np.isnan(mean) else mean,
        "matrix": matrix.tolist(),
    }


def _oracle(out: _Outputs, members: list[str]) -> dict[str, Any] | None:
    if not members:
        return None
    any_right = np.any(np.stack([out.preds[n] for n in members]) == out.y, axis=0)
    return {"members": members, "accuracy": float(np.mean(any_right))}


def _best_single(
    out: _Outputs, member: str | None, n_resamples: int, seed: int, gap_metric: str
) -> dict[str, Any] | None:
    if member is None:
        return None
    metrics = evaluate_model(out.y, out.probs[member], out.classes, pred=out.preds[member])
    return {
        "member": member,
        "chosen_on": "validation",
        "test_accuracy": {"micro": metrics["accuracy"]["micro"], "macro": metrics["accuracy"]["macro"]},
        "gap_vs_general": paired_bootstrap_gap(
            out.y,
            out.preds[member],
            out.preds[GENERAL],
            n_resamples=n_resamples,
            seed=seed,
            metric=gap_metric,
        ),
    }


# ------------------------------------------------------------------------------------------ predictions.csv


def predictions_csv_text(out: _Outputs) -> str:
    """CSV text; probabilities use ``repr`` so they read back as the exact same floats."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *out.classes])
    for name in out.model_names + out.ensemble_names:
        for i, video in enumerate(out.videos):
            row = [video, out.classes[out.y[i]], name, out.classes[out.preds[name][i]]]
            writer.writerow(row + [repr(float(p)) for p in out.probs[name][i]])
    return buffer.getvalue()


def read_predictions_csv(csv_path: str | Path) -> _Outputs:
    """Parse ``predictions.csv`` back into aligned labels, probabilities and predictions per name."""
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"predictions file not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0][: len(CSV_COLUMNS)]) != CSV_COLUMNS or len(rows[0]) <= len(CSV_COLUMNS):
        raise DataError(f"{path}: header must be {', '.join(CSV_COLUMNS)} followed by one column per class")
    classes = _check_class_names(rows[0][len(CSV_COLUMNS) :])
    index = {c: i for i, c in enumerate(classes)}
    per_name: dict[str, dict[str, tuple[int, int, list[float]]]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        video, label, name, pred, probs = _parse_row(row, len(classes), index, f"{path}:{line_no}")
        entries = per_name.setdefault(name, {})
        if video in entries:
            raise DataError(f"{path}:{line_no}: duplicate row for video {video!r} and model {name!r}")
        entries[video] = (label, pred, probs)
    return _align(per_name, classes, path)


def _parse_row(row: list[str], num_classes: int, index: dict[str, int], where: str):
    if len(row) != len(CSV_COLUMNS) + num_classes:
        raise DataError(f"{where}: expected {len(CSV_COLUMNS) + num_classes} columns, got {len(row)}")
    video, label, name, pred = row[: len(CSV_COLUMNS)]
    unknown = [c for c in (label, pred) if c not in index]
    if unknown:
        raise DataError(f"{where}: unknown class name(s) {unknown}")
    try:
        probs = [float(p) for p in row[len(CSV_COLUMNS) :]]
    except ValueError as exc:
        raise DataError(f"{where}: probabilities must be numbers ({exc})") from exc
    return video, index[label], name, index[pred], probs


def _align(per_name: dict[str, dict[str, tuple[int, int, list[float]]]], classes: list[str], path: Path):
    if GENERAL not in per_name:
        raise DataError(f"{path}: no rows for model {GENERAL!r}")
    videos = list(per_name[GENERAL])
    labels = {v: per_name[GENERAL][v][0] for v in videos}
    probs, preds = {}, {}
    for name, entries in per_name.items():
        if set(entries) != set(videos):
            raise DataError(f"{path}: model {name!r} does not cover the same test videos as {GENERAL!r}")
        if any(entries[v][0] != labels[v] for v in videos):
            raise DataError(f"{path}: model {name!r} gives some video a different label than {GENERAL!r}")
        preds[name] = np.asarray([entries[v][1] for v in videos], dtype=np.int64)
        probs[name] = check_probs([entries[v][2] for v in videos], name=f"probabilities of {name!r}")
    y = np.asarray([labels[v] for v in videos], dtype=np.int64)
    names = list(per_name)
    return _Outputs(
        classes,
        videos,
        y,
        probs,
        preds,
        _model_order(names),
        _ensemble_order([n for n in names if not is_model_name(n)]),
    )


def recompute_from_predictions(
    csv_path: str | Path, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, gap_metric: str = "micro"
) -> dict[str, Any]:
    """Rebuild ``classes``, ``models``, ``ensembles`` (with gaps), ``ece``, ``diversity`` and the oracle
    from ``predictions.csv`` alone; with the report's bootstrap settings the numbers match ``report.json``.
    """
    return _metrics_from_outputs(read_predictions_csv(csv_path), n_resamples, seed, gap_metric)


# --------------------------------------------------------------------------------------------- tables


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


SMALL_FIT_MARK = "⚠"  # fitted on fewer validation videos than the documented minimum, reported on request
SHARD_GAP_MARK = "†"  # a member whose training shard lacks some class


def marked_name(name: str, report: Mapping[str, Any], label: str | None = None) -> str:
    """The display name with the report's marks: ⚠ for a fit on too few videos, † for a member whose shard
    lacks a class (both explained under "Fits and coverage")."""
    text = label or display_name(name)
    if name in (report.get("flags") or {}):
        text += f" {SMALL_FIT_MARK}"
    if name in (report.get("shard_coverage") or {}):
        text += f" {SHARD_GAP_MARK}"
    return text


def _columns(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(display name, entry) for models then ensembles, in report order."""
    entries = [(marked_name(n, report), e) for n, e in report["models"].items()]
    return entries + [(marked_name(n, report), e) for n, e in report.get("ensembles", {}).items()]


def per_class_table(report: Mapping[str, Any], metric: str) -> tuple[list[str], list[list[str]]]:
    """Rows = classes + mean rows, columns = General, Partial 1..N, aggregations; values in percent.

    ``metric`` is ``accuracy`` (mean row = macro, then a per-video row) or ``confidence`` (mean row =
    mean over classes, then a per-video row).
    """
    columns = _columns(report)
    headers = ["Class", *[name for name, _ in columns]]
    rows = [[cls, *[_pct(e[metric]["per_class"][cls]) for _, e in columns]] for cls in report["classes"]]
    mean_key = "macro" if metric == "accuracy" else "mean"
    rows.append(["Mean (per class)", *[_pct(e[metric][mean_key]) for _, e in columns]])
    rows.append(["Overall (per video)", *[_pct(e[metric]["micro"]) for _, e in columns]])
    return headers, rows


def gap_table(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each aggregation (and the best single member) vs General: gap and 95 % CI in percentage points."""
    headers = ["Aggregation", "Gap vs General (pp)", "95 % CI (pp)", "CI includes 0"]
    gaps = [(marked_name(n, report), e["gap_vs_general"]) for n, e in report.get("ensembles", {}).items()]
    best = (report.get("reference") or {}).get("best_single")
    if best:
        label = f"Best single ({display_name(best['member'])})"
        gaps.append((marked_name("best_single", report, label), best["gap_vs_general"]))
    rows = []
    for name, gap in gaps:
        low, high = gap["ci95"]
        verdict = "yes (not significant)" if gap["ci_includes_zero"] else "no"
        rows.append(
            [name, _pct(gap["mean"], signed=True), f"[{_pct(low, True)}, {_pct(high, True)}]", verdict]
        )
    for name, reason in (report.get("not_fitted") or {}).items():
        label = "Best single" if name == "best_single" else display_name(name)
        rows.append([label, "–", "–", reason])
    return headers, rows


def resolution_text(report: Mapping[str, Any]) -> str:
    """How finely this test split can tell accuracies apart, and what to do when that is coarse."""
    res = report.get("resolution")
    if not res:
        return ""
    text = (f"Resolution: {res['test_videos']} test videos; an accuracy near 50 % is known to about "
            f"±{res['half_width_pp']:.1f} pp (95 %).")
    if res["half_width_pp"] > 10:
        text += (" That is wider than ±10 pp: differences smaller than that cannot be told from test sampling. "
                 "Use more labelled videos, experiment --folds K (every video tested once) or --repeats K.")
    return text


def fits_text(report: Mapping[str, Any]) -> str:
    """Fits left out or flagged for having too few validation videos, and members whose shard lacks classes."""
    lines = [f"- {display_name(n) if n != 'best_single' else 'Best single'}: not fitted — {reason}"
             for n, reason in (report.get("not_fitted") or {}).items()]
    lines += [f"- {SMALL_FIT_MARK} {display_name(n) if n != 'best_single' else 'Best single'}: reported although "
              f"{reason} (--allow-small-fits)" for n, reason in (report.get("flags") or {}).items()]
    lines += [f"- {SHARD_GAP_MARK} {display_name(n)}: its training shard has no video of {', '.join(missing)}; "
              "it can never predict what it never saw"
              for n, missing in (report.get("shard_coverage") or {}).items()]
    return "\n".join(lines)


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        first = str(row[0]).ljust(widths[0])
        return "  ".join([first, *(str(c).rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, default=str)
    return str(value)


# --------------------------------------------------------------------------------------------- report.md


def render_markdown(report: Mapping[str, Any], figures: Sequence[tuple[str, str]] | None = None) -> str:
    """``report.md``: the two per-class tables, gaps, references, diversity, ECE, splits, compute, figures."""
    parts = ["# pico-JEPA report", ""]
    if resolution_text(report):
        parts += [resolution_text(report), ""]
    parts += _section("Did pretraining help?", pretraining_gain_text(report))
    parts += _section("Accuracy per class (%)", _markdown_table(*per_class_table(report, "accuracy")))
    parts += _section(
        "Mean confidence per class (%)",
        "Confidence is the probability a model gives the class it predicts; for the vote, the members' mean "
        "probability of the voted class.\n\n" + _markdown_table(*per_class_table(report, "confidence"))
        + _vote_share_text(report),
    )
    parts += _section(
        "Gaps vs General", _markdown_table(*gap_table(report)) + "\n\n" + _bootstrap_note(report)
    )
    if fits_text(report):
        parts += _section("Fits and coverage", fits_text(report))
    if report.get("fitting"):
        parts += _section("What each choice was fitted on",
                          "\n".join(f"- {k.replace('_', ', ')}: {v}" for k, v in report["fitting"].items()))
    parts += _section("Reference lines", _reference_text(report))
    parts += _section("Diversity", _diversity_text(report))
    ece = [[display_name(n), f"{v:.4f}"] for n, v in report.get("ece", {}).items()]
    parts += _section("Calibration (ECE, 15 bins)", _markdown_table(["Model", "ECE"], ece))
    parts += _section(
        "Videos per split", _markdown_table(["Split", "Videos"], _split_rows(report.get("splits", {})))
    )
    if report.get("compute"):
        parts += _section("Compute per model", _compute_table(report["compute"]))
    if (report.get("ensemble_compute") or {}).get("ensemble"):
        parts += _section("Compute: ensemble vs General", ensemble_compute_text(report["ensemble_compute"]))
    if report.get("domains"):
        parts += _section("Domains (routing)", domains_text(report["domains"]))
    if figures:
        parts += _section(
            "Figures", "\n\n".join(f"![{caption}]({path})\n\n*{caption}*" for caption, path in figures)
        )
    return "\n".join(parts).rstrip() + "\n"


def pretraining_gain_text(report: Mapping[str, Any]) -> str:
    """One line: General minus the random-init encoder (same head, splits and seed), with its CI."""
    gain = report.get("pretraining_gain")
    chance = report.get("chance")
    chance_text = f"chance {_pct(chance)} %" if chance is not None else ""
    if not gain:
        return f"No random-init baseline in this report ({chance_text})."
    models = report["models"]
    low, high = gain["ci95"]
    verdict = "includes 0: not significant" if gain["ci_includes_zero"] else "excludes 0"
    lines = [f"Pretraining gain: {_pct(gain['mean'], signed=True)} pp [95 % CI {_pct(low, True)}, "
             f"{_pct(high, True)}; {verdict}] — General {_pct(models[GENERAL]['accuracy']['micro'])} % vs "
             f"random-init encoder {_pct(models[RANDOM_INIT]['accuracy']['micro'])} % (same architecture, seed, "
             f"head and splits; paired bootstrap over test videos); {chance_text}."]
    other = report.get("other_head")
    if other:
        o_low, o_high = other["gain"]["ci95"]
        lines.append(f"With the other head ({other['head']}): General {_pct(other['general'])} % vs random init "
                     f"{_pct(other['random_init'])} %, gain {_pct(other['gain']['mean'], signed=True)} pp "
                     f"[{_pct(o_low, True)}, {_pct(o_high, True)}].")
    low_shot = report.get("low_shot") or []
    if low_shot:
        rows = [[str(r["per_class"]), str(r["train_videos"]), _pct(r["general"]), _pct(r["random_init"]),
                 _pct(r["gain"]["mean"], signed=True),
                 f"[{_pct(r['gain']['ci95'][0], True)}, {_pct(r['gain']['ci95'][1], True)}]"] for r in low_shot]
        rows.append(["all", str(report.get("splits", {}).get("train", "")), _pct(models[GENERAL]["accuracy"]["micro"]),
                     _pct(models[RANDOM_INIT]["accuracy"]["micro"]), _pct(gain["mean"], signed=True),
                     f"[{_pct(low, True)}, {_pct(high, True)}]"])
        lines.append("Low-shot frozen evaluation (the same head trained on k labelled videos per class; test "
                     "accuracy %):\n\n" + _markdown_table(
                         ["Labels per class", "Training videos", "General", "Random init", "Gain (pp)", "95 % CI"],
                         rows))
    monitor = ((report.get("encoders") or {}).get(GENERAL) or {}).get("monitor")
    if monitor:
        lines.append(f"General's {monitor}.")
    return "\n\n".join(lines)


def _vote_share_text(report: Mapping[str, Any]) -> str:
    share = (report.get("ensembles", {}).get("vote") or {}).get("vote_share")
    if not share:
        return ""
    cells = ", ".join(f"{c} {_pct(v)}" for c, v in share["per_class"].items())
    return (f"\n\nVote share of the voted class (a share of members, not a probability): {cells}; mean over "
            f"classes {_pct(share['mean'])} %, over videos {_pct(share['micro'])} %.")


def _bootstrap_note(report: Mapping[str, Any]) -> str:
    boot = report.get("bootstrap", {})
    comparisons = len(report.get("ensembles", {})) + bool((report.get("reference") or {}).get("best_single"))
    return (
        f"Paired bootstrap over test videos, stratified by class ({boot.get('n_resamples')} resamples, seed "
        f"{boot.get('seed')}, {boot.get('metric')} accuracy). When the 95 % CI includes 0 the gap is not "
        f"significant. {comparisons} comparisons are made against General with no multiplicity correction: "
        f"by chance alone about {0.05 * comparisons:.2f} of them would exclude 0 (Bonferroni would ask for "
        f"{100 * (1 - 0.05 / max(comparisons, 1)):.1f} % intervals). The bootstrap covers the sampling of "
        f"test videos only, not training variance: repeat over seeds (experiment --repeats) for that."
    )


def _section(title: str, body: str) -> list[str]:
    return [f"## {title}", "", body, ""]


def _reference_text(report: Mapping[str, Any]) -> str:
    reference = report.get("reference") or {}
    lines = []
    best = reference.get("best_single")
    if best:
        acc = best["test_accuracy"]
        lines.append(
            f"- Best single member (chosen on validation): {display_name(best['member'])}, test accuracy "
            f"{_pct(acc['micro'])} % (macro {_pct(acc['macro'])} %)"
        )
    oracle = reference.get("oracle")
    if oracle:
        lines.append(f"- Oracle (any partial member right): {_pct(oracle['accuracy'])} %")
    return "\n".join(lines) if lines else "No reference lines."


def _diversity_text(report: Mapping[str, Any]) -> str:
    diversity = report.get("diversity") or {}
    members = diversity.get("members") or []
    if len(members) < 2:
        return "Fewer than two partial members: no disagreement to report."
    text = (
        f"Mean pairwise disagreement between partial members (share of test videos on which two members "
        f"predict different classes): {_pct(diversity['mean_pairwise_disagreement'])} %\n\n"
    )
    names = [display_name(m) for m in members]
    rows = [[names[i], *[_pct(v) for v in row]] for i, row in enumerate(diversity["matrix"])]
    return text + _markdown_table(["", *names], rows)


def _split_rows(splits: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for name, value in splits.items():
        if isinstance(value, (list, tuple)):
            label = name[:-1] if name.endswith("s") else name
            rows += [[f"{label} {k}", str(v)] for k, v in enumerate(value, start=1)]
        else:
            rows.append([name, str(value)])
    return rows


def _compute_table(compute: Mapping[str, Mapping[str, Any]]) -> str:
    keys: list[str] = []
    for info in compute.values():
        keys += [k for k in info if k not in keys]
    rows = [
        [display_name(n), *[_format_value(info.get(k, "–")) for k in keys]] for n, info in compute.items()
    ]
    return _markdown_table(["Model", *keys], rows)


def ensemble_compute_text(compute: Mapping[str, Any]) -> str:
    """Pretraining clip-steps (steps × batch, as each run recorded them) and head steps of General, each
    Partial and the ensemble in total, and the ratio ensemble / General, so gaps can be read at their cost."""
    headers = ["Model", "Encoder", "Pretraining steps", "Batch", "Clip-steps", "Head steps"]

    def row(name: str, c: Mapping[str, Any]) -> list[str]:
        return [display_name(name), str(c["encoder"]), str(c["pretrain_steps"]), str(c["pretrain_batch"]),
                str(c["pretrain_clip_steps"]), str(c["head_steps"])]

    total = compute["ensemble"]
    rows = [row("general", compute["general"]), *[row(n, c) for n, c in compute["members"].items()],
            ["Ensemble total", "–", "–", "–", str(total["pretrain_clip_steps"]), str(total["head_steps"])]]
    ratio = (f"Ensemble total / General: pretraining clip-steps ×{compute['ratio_ensemble_to_general']:g}, head "
             f"steps ×{compute['head_steps_ratio_ensemble_to_general']:g}. An encoder shared by several models is "
             f"counted once. Protocol: {compute.get('note', '')}.")
    return _markdown_table(headers, rows) + "\n\n" + ratio


def domains_text(domains: Mapping[str, Any]) -> str:
    """The domains protocol's pool clustering: what it embedded, the domain sizes and the routing τ."""
    sizes = ", ".join(str(n) for n in domains["sizes"])
    skipped = f"; {domains['not_embedded']} pool video(s) could not be embedded" if domains["not_embedded"] else ""
    return (f"The pool was clustered without labels (k-means on the {domains['embedding']}) into "
            f"{len(domains['sizes'])} domains of {sizes} videos{skipped}; Partial i pretrained on domain i. "
            f"Route weighs each test video's members by softmax(−d²/τ) over its squared distances to the "
            f"centroids, τ = {domains['tau']:.4g} ({domains['tau_rule']}). Centroids: `{domains['file']}`.")


def format_terminal_tables(report: Mapping[str, Any]) -> str:
    """Plain-text accuracy and confidence tables plus the gaps, for printing in a terminal."""
    blocks = [
        *[text for text in (resolution_text(report),) if text],
        pretraining_gain_text(report),
        "Accuracy per class (%)\n" + _text_table(*per_class_table(report, "accuracy")),
        "Mean confidence per class (%)\n" + _text_table(*per_class_table(report, "confidence")),
        "Gaps vs General (percentage points, paired bootstrap 95 % CI)\n" + _text_table(*gap_table(report)),
        *[text for text in (fits_text(report),) if text],
    ]
    return "\n\n".join(blocks) + "\n"


# --------------------------------------------------------------------------------------------- writing


def write_report(
    out_dir: str | Path,
    inputs: ReportInputs,
    figures: Sequence[tuple[str, str]] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    gap_metric: str = "micro",
) -> dict[str, Any]:
    """Write ``predictions.csv``, ``report.json`` and ``report.md`` atomically into ``out_dir``.

    ``figures`` is an optional list of (caption, PNG path relative to ``out_dir``) embedded in the Markdown.
    Returns the report dict.
    """
    out_dir = Path(out_dir)
    out = _validate(inputs)
    report = _build_report(out, inputs, n_resamples, seed, gap_metric)
    write_text(out_dir / "predictions.csv", predictions_csv_text(out))
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", render_markdown(report, figures))
    return report
