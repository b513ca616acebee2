"""The HTML of a run report (:mod:`stellarpop.pipeline.report.run_report`): the page, its sections and
their tables, the benchmark results; each section writes its figures
(:mod:`stellarpop.pipeline.report.figures`) into the report folder and refers to them by
file name.

The page is self-contained: inline CSS, no script, no web font, no external URL (its only
links are ``#section`` anchors and ``<img src="NAME.png">`` beside it), so it opens offline
and from an archive. Every text taken from the run is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from stellarpop.components import bpt
from stellarpop.components.portable import portable_path
from stellarpop.pipeline.evaluation import metrics
from stellarpop.pipeline.report import figures as figs
from stellarpop.pipeline.report.records import Evaluation, RunArtifacts
from stellarpop.schema import features as F
from stellarpop.transforms import preprocessing as P

CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #c62828; font-weight: bold; }
.verdict { font-size: 1.3em; padding: 0.4em 0.8em; display: inline-block; border-radius: 4px; }
.verdict.pass { background: #e6f4ea; } .verdict.fail { background: #fdecea; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #555; font-size: 0.9em; }
nav a { margin-right: 1em; }
"""
SLICE_NOTE = (
    "3-sigma-clipped mean and standard deviation of prediction - label, as mean / sigma, from the "
    "Evaluator (the whole test split); baseline: the latest blessed model on the same examples."
)


# --- HTML helpers ----------------------------------------------------------------------------
def esc(value: Any) -> str:
    return html.escape(str(value))


def num(value: Any, decimals: int = 3, signed: bool = False) -> str:
    """A number for a table cell; "-" for None and NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (bool, str)) or not isinstance(value, (int, float, np.number)):
        return esc(value)
    return f"{value:{'+' if signed else ''}.{decimals}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], text_columns: int = 1) -> str:
    """An HTML table; cells are escaped unless they are already markup (``Markup``); the first
    ``text_columns`` columns are left-aligned."""

    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="text"' if i < text_columns else ""
        return f"<{tag}{cls}>{value if isinstance(value, Markup) else esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Markup(str):
    """Text that is already HTML (not escaped again by :func:`table`)."""


def status(passed: bool | None, yes: str = "passed", no: str = "FAILED") -> Markup:
    return Markup(f'<span class="{"pass" if passed else "fail"}">{yes if passed else no}</span>')


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def image(name: str, alt: str) -> str:
    return f'<p><img src="{esc(name)}" alt="{esc(alt)}"></p>'


def page(title: str, sections: Sequence[str]) -> str:
    """The whole document: inline CSS, a table of contents of the sections' anchors."""
    anchors = [(s.split('id="', 1)[1].split('"', 1)[0], s.split("<h2>", 1)[1].split("</h2>", 1)[0]) for s in sections]
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in anchors)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head>\n<body><h1>{esc(title)}</h1><nav>{nav}</nav>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


# --- Sections of the run ---------------------------------------------------------------------
def blessing_section(run: RunArtifacts, checks: list[dict], validation) -> str:
    """The Evaluator's decision, each threshold with its value and outcome, and the push."""
    failed = [c for c in checks if not c["passed"]]
    verdict = "BLESSED" if run.blessed else "NOT BLESSED"
    body = [
        f'<p class="verdict {"pass" if run.blessed else "fail"}">{verdict}</p>',
        f"<p>The Evaluator {'blessed' if run.blessed else 'did not bless'} the candidate model: "
        f"{len(checks) - len(failed)} of {len(checks)} thresholds passed"
        f"{', failed: ' + esc(', '.join(c['output'] + ' ' + c['kind'] for c in failed)) if failed else ''}.</p>",
    ]
    if getattr(validation, "rubber_stamp", False) or not run.baseline_model:
        body.append(
            '<p class="note">No blessed baseline model: change thresholds were not applied '
            "(the first model is judged on its value thresholds alone).</p>"
        )
    rows = [
        (
            c["output"],
            c["metric"],
            c["kind"],
            c["bound"],
            num(c["value"], figs.DECIMALS.get(c["output"], 3) + 1),
            status(c["passed"]),
            c["message"],
        )
        for c in checks
    ]
    body.append(
        table(("output", "metric (overall slice)", "threshold", "bound", "value", "result", "message"), rows, 4)
    )
    pushed = run.pushed
    if pushed.get("pushed"):
        body.append(
            f"<p>Pushed as version {esc(pushed.get('pushed_version', '?'))} to "
            f"<code>{esc(_where(pushed.get('pushed_destination', '?'), run.run_root))}</code>.</p>"
        )
    else:
        body.append(f"<p>{'Not pushed' if pushed else 'No Pusher execution read this blessing'}.</p>")
    return section("blessing", "Blessing", "\n".join(body))


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted key, leaf) pairs; lists stay leaves."""
    if isinstance(value, dict) and value:
        return [pair for k, v in value.items() for pair in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, value)]


def _leaf(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return (
        ", ".join(map(str, value))
        if isinstance(value, list)
        else json.dumps(value)
        if isinstance(value, dict)
        else str(value)
    )


def _where(path: str, run_root: str) -> str:
    """A path as the report shows it: relative to the run folder (``RUN/...``) or to the
    checkout, never the machine's own folders."""
    return portable_path(path, {"RUN": run_root}) if path else path


def mean_sigma(stats: dict, key: str) -> str:
    """A slice's clipped mean and sigma of ``key`` as one cell: ``+0.0012 / 0.0650``."""
    d = figs.DECIMALS[key] + 1
    mean, std = (stats.get(metrics.metric_name(kind, key)) for kind in ("clipped_mean", "clipped_std"))
    return f"{num(mean, d, True)} / {num(std, d)}"


def _by_kind_rows(evaluation: Evaluation) -> list[tuple]:
    """Per BPT class of the test split: N and clipped mean / sigma of each label."""
    rows = []
    for value in slice_values(evaluation.candidate, F.BPT_CLASS):
        m = evaluation.candidate.get(((F.BPT_CLASS, value),), {})
        row = [bin_label(F.BPT_CLASS, value), num(m.get(metrics.metric_name("example_count", F.LOG_AGE)), 0)]
        for key in F.LABEL_KEYS:
            row += [mean_sigma(m, key), num(m.get(metrics.metric_name("coverage68", key)), 2)]
        rows.append(row)
    return rows


def _calibration_rows(calibration: dict) -> list[tuple]:
    scale, before, after = (
        calibration.get(k, {}) for k in ("interval_scale", "eval_coverage_before", "eval_coverage_after")
    )
    return [
        (key, num(scale.get(key), 3), num(before.get(key), 3), num(after.get(key), 3))
        for key in F.LABEL_KEYS
        if key in scale
    ]


def model_section(run: RunArtifacts, info: dict, evaluation: Evaluation) -> str:
    """The model as a model card: what it is, what it was trained on, its figures by kind of
    galaxy on the run's test split, its calibration; all of ``model_info.json`` folded below."""
    same = run.baseline_model and run.baseline_model == run.model
    baseline = (
        "the candidate itself (a re-run after its push)" if same else _where(run.baseline_model, run.run_root) or "none"
    )
    if not info:
        return section(
            "model",
            "Model",
            '<p class="note">The model has no assets.extra/model_info.json.</p>'
            + table(("field", "value"), [("model", _where(run.model, run.run_root)), ("baseline model", baseline)], 2),
        )
    training, grid = info.get("training", {}), info.get("wavelength_grid", {})
    units = {k: v.get("unit", "") for k, v in info.get("labels", {}).items()}
    what = (
        f"<p>The <b>{esc(info.get('architecture', '?'))}</b> network of stellarpop "
        f"{esc(info.get('stellarpop_version', '?'))}: it reads the {esc(grid.get('frame', '?'))} spectrum on "
        f"{esc(grid.get('n_pixels', '?'))} pixels from {num(grid.get('start'), 0)} A in steps of "
        f"{num(grid.get('step'), 1)} A, normalised at {num(info.get('normalisation_window', {}).get('centre'), 0)} A, "
        f"and predicts {esc(', '.join(f'{k} ({unit})' for k, unit in units.items()))}"
        f"{' with a 1-sigma error each' if info.get('predicts_variance') else ''}, an out-of-domain score "
        "and flag.</p>"
    )
    warm_from = info.get("warm_start_from")
    warm = ", warm-started from " + esc(_where(str(warm_from), run.run_root)) if warm_from else ""
    trained = (
        f"<p>Trained on <code>{esc(_where(run.examples, run.run_root))}</code> with "
        f"<b>{esc(info.get('label_source', '?'))}</b> labels"
        f"{warm}: "
        f"{esc(training.get('epochs_run', '?'))} epochs (best {esc(training.get('best_epoch', '?'))}, "
        f"{esc(training.get('monitor', 'val_loss'))} {num(training.get('best_val_loss'), 4)}), "
        f"{num(training.get('seconds'), 0)} s, seed {esc(training.get('seed', '?'))}. "
        f"Model: <code>{esc(_where(run.model, run.run_root))}</code>; baseline: {esc(baseline)}.</p>"
    )
    kind_rows = _by_kind_rows(evaluation)
    header = ["kind (BPT class)", "N"] + [c for k in F.LABEL_KEYS for c in (f"{k} mean / sigma", f"{k} cov68")]
    by_kind = (
        "<h3>By kind of galaxy (the run's test split)</h3>"
        f'<p class="note">{SLICE_NOTE} cov68: the share of examples whose label lies within the '
        "predicted 1-sigma interval.</p>"
        + (table(header, kind_rows) if kind_rows else "<p>No BPT slices in the evaluation.</p>")
    )
    cal = info.get("calibration") or {}
    calibration = "<h3>Calibration</h3>" + (
        (
            f"<p>{esc(cal.get('method', ''))}. Fitted on {esc(cal.get('n_eval', '?'))} evaluation examples; "
            f"out-of-domain threshold {num(cal.get('ood_threshold'), 2)} (the {num(cal.get('flag_quantile'), 2)} "
            f"quantile), flagging {num(100 * cal.get('eval_flagged', math.nan), 1)}% of them.</p>"
            + table(("output", "interval scale", "68% coverage before", "after"), _calibration_rows(cal))
        )
        if cal
        else "<p>Not calibrated: the intervals are the network's own.</p>"
    )
    metadata = (
        "<details><summary>All of <code>model_info.json</code></summary>"
        + table(("field", "value"), [(k, _leaf(v)) for k, v in flatten(info)], 2)
        + "</details>"
    )
    return section("model", "Model", what + trained + by_kind + calibration + metadata)


def training_section(record: dict | None, out_dir: str) -> str:
    """The loss curves (the paper's Fig. 3) and the history per epoch."""
    if record is None:
        return section("training", "Training", '<p class="note">No history.json in the Trainer\'s model_run.</p>')
    name = figs.save(
        figs.plot_loss_curve(record, title=f"{record.get('config', {}).get('model', '')} model"),
        os.path.join(out_dir, "loss_curve.png"),
    )
    history = record.get("history", {})
    keys = sorted(history, key=lambda k: (k.startswith("val_"), k))
    epochs = max((len(v) for v in history.values()), default=0)
    rows = [(i + 1, *(num(history[k][i], 5) if i < len(history[k]) else "-" for k in keys)) for i in range(epochs)]
    facts = (
        f"<p>Best epoch {esc(record.get('best_epoch'))} ({esc(record.get('monitor', 'val_loss'))} "
        f"{num(record.get('best_val_loss'), 5)}), "
        f"{epochs} epochs, {num(record.get('seconds'), 1)} s of training, loss {esc(record.get('loss', '?'))}"
        f", resumed from epoch {esc(record.get('resumed_from_epoch', 0))}.</p>"
    )
    return section("training", "Training", facts + image(name, "loss curves") + table(("epoch", *keys), rows))


def _overall_rows(evaluation: Evaluation) -> list[tuple]:
    cand, base = evaluation.candidate.get((), {}), evaluation.baseline.get((), {})
    rows = []
    for key, label in evaluation.label_keys.items():
        d = figs.DECIMALS.get(key, 3)
        m = {kind: cand.get(metrics.metric_name(kind, key), math.nan) for kind in metrics.METRIC_KINDS}
        row = [
            key,
            label,
            num(m["example_count"], 0),
            num(m["clipped_mean"], d + 1, True),
            num(m["clipped_std"], d + 1),
            num(m["mae"], d + 1),
            num(m["rmse"], d + 1),
            num(m["coverage68"], 3),
        ]
        if base:
            row.append(num(base.get(metrics.metric_name("clipped_std", key)), d + 1))
        rows.append(row)
    return rows


def accuracy_section(evaluation: Evaluation, predictions: dict, out_dir: str) -> str:
    """Overall metrics of the Evaluator and predicted-against-label densities (Fig. 4)."""
    header = ["output", "label", "N", "clipped mean", "clipped sigma", "MAE", "RMSE", "68% coverage"]
    header += ["baseline clipped sigma"] * bool(evaluation.baseline)
    labels = {k: predictions[f"label/{k}"] for k in evaluation.label_keys}
    preds = {k: predictions[f"pred/{k}"] for k in evaluation.label_keys}
    n = len(predictions[F.Z])
    name = figs.save(
        figs.density_figure(labels, preds, f"{n} test examples"), os.path.join(out_dir, "pred_vs_label.png")
    )
    return section(
        "accuracy",
        "Accuracy on the test split",
        (
            "<p>The Evaluator's overall statistics of prediction - label (label units).</p>"
            + table(header, _overall_rows(evaluation), 2)
            + f'<p class="note">Below: the exported model run again on the first {n} test examples; '
            + "clipped mean and sigma of the residuals on each panel (the paper's Fig. 4).</p>"
            + image(name, "predicted against label")
        ),
    )


def bin_label(feature: str, value: Any) -> str:
    """A slice value as the report names it: S/N and z bins by their edges (the buckets of
    ``preprocessing.bucketize``), BPT classes as they are ("" -> "unknown")."""
    if feature in (P.SNR_BIN_XF, P.Z_BIN_XF):
        edges, value = (F.SNR_BIN_EDGES if feature == P.SNR_BIN_XF else F.Z_BIN_EDGES), int(value)
        if value < 0:
            return f"< {edges[0]:g}"
        if value >= len(edges) - 1:
            return f">= {edges[-1]:g}" if feature == P.SNR_BIN_XF else f"> {edges[-1]:g}"
        return f"{edges[value]:g}-{edges[value + 1]:g}"
    value = value.decode() if isinstance(value, bytes) else str(value)
    return value or "unknown"


def slice_values(by_slice: dict, feature: str) -> list:
    """The values of ``feature`` that have a slice, in order: bins by index, BPT classes as
    ``bpt.CLASSES`` (others after)."""
    values = {key[0][1] for key in by_slice if len(key) == 1 and key[0][0] == feature}
    if feature == F.BPT_CLASS:
        order = {c: i for i, c in enumerate(bpt.CLASSES)}
        return sorted(values, key=lambda v: (order.get(v, len(order)), str(v)))
    return sorted(values, key=int)


def slice_section(evaluation: Evaluation, feature: str, name: str, stem: str, out_dir: str) -> str:
    """Clipped mean and sigma per bin of ``feature`` (Figs. 5-7), candidate and baseline."""
    values = slice_values(evaluation.candidate, feature)
    models = {"candidate": evaluation.candidate, **({"baseline": evaluation.baseline} if evaluation.baseline else {})}
    header = ["bin", "N"] + [f"{k}{' (' + m + ')' if len(models) > 1 else ''}" for k in F.LABEL_KEYS for m in models]
    rows = []
    for value in values:
        per = {m: by.get(((feature, value),), {}) for m, by in models.items()}
        row = [bin_label(feature, value), num(per["candidate"].get(metrics.metric_name("example_count", F.LOG_AGE)), 0)]
        for key in F.LABEL_KEYS:
            row += [mean_sigma(p, key) for p in per.values()]
        rows.append(row)
    series = {
        m: {
            metrics.metric_name(kind, key): [
                by.get(((feature, v),), {}).get(metrics.metric_name(kind, key), math.nan) for v in values
            ]
            for kind in ("clipped_mean", "clipped_std")
            for key in F.LABEL_KEYS
        }
        for m, by in models.items()
    }
    body = f'<p class="note">Slices by {esc(name)} (<code>{esc(feature)}</code>). {SLICE_NOTE}</p>'
    if not values:
        return section(f"slices-{stem}", f"By {name}", body + "<p>No slices of this feature in the evaluation.</p>")
    fig = figs.save(
        figs.slice_figure([bin_label(feature, v) for v in values], series, name),
        os.path.join(out_dir, f"slices_{stem}.png"),
    )
    return section(f"slices-{stem}", f"By {name}", body + table(header, rows) + image(fig, f"residuals by {name}"))


def uncertainty_section(predictions: dict, stats: dict, out_dir: str) -> str:
    """68% coverage and z-scores of the model's 1-sigma errors."""
    rows = [
        (k, s["n"], num(s["coverage68"], 3), num(s["z_mean"], 3, True), num(s["z_std"], 3)) for k, s in stats.items()
    ]
    residuals = {k: predictions[f"pred/{k}"] - predictions[f"label/{k}"] for k in stats}
    errors = {k: predictions[f"err/{k}"] for k in stats}
    name = figs.save(figs.zscore_figure(residuals, errors), os.path.join(out_dir, "zscores.png"))
    return section(
        "uncertainties",
        "Uncertainties",
        (
            '<p class="note">Coverage: fraction of test examples with |prediction - label| &lt;= the predicted 1-sigma '
            "error (0.683 for calibrated Gaussian errors); z = (prediction - label) / error.</p>"
            + table(("output", "N", "68% coverage", "mean z", "sigma of z"), rows)
            + image(name, "z-score histograms")
        ),
    )


def executions_section(run: RunArtifacts) -> str:
    rows = [(name, eid, state, when) for name, eid, state, when in run.executions]
    return section(
        "executions",
        "Pipeline executions",
        '<p class="note">The latest finished execution of each component (MLMD).</p>'
        + table(("component", "execution", "state", "started (UTC)"), rows, 1),
    )


# --- Benchmarks ------------------------------------------------------------------------------
def _cells(values: dict, keys: Sequence[str], decimals: int = 3) -> list[str]:
    return [num(values.get(k), decimals, k.endswith("mean")) for k in keys]


def real_sdss_tables(result: dict) -> str:
    """``benchmarks/real_sdss.py``: VD - VDISP, network - pPXF, repeat pairs, each spectrum."""
    vd = [
        (who, num(v.get("n"), 0), *_cells(v, ("rms", "clipped_mean", "clipped_std", "target_rms"), 1))
        for who, v in result.get("vd_minus_vdisp", {}).items()
    ]
    net = [
        (
            k,
            num(v.get("n"), 0),
            *_cells(v, ("clipped_mean", "clipped_std", "paper", "target"), figs.DECIMALS.get(k, 3) + 1),
        )
        for k, v in result.get("net_minus_ppxf", {}).items()
    ]
    pairs = [
        (" / ".join(p["pair"]), who, *(num(p.get(f"{who}_{k}", {}).get("ratio"), 2, True) for k in F.LABEL_KEYS))
        for p in result.get("pairs", [])
        for who in ("net", "ppxf")
    ]
    rows = [
        (
            r.get("spec_id") or r.get("file"),
            num(r.get("z"), 4),
            num(r.get("snr_r"), 1),
            r.get("class", ""),
            num(r.get("sdss_vdisp"), 1),
            *(f"{num(r.get(w, {}).get(k), figs.DECIMALS[k])}" for k in F.LABEL_KEYS for w in ("net", "ppxf")),
            r.get("ppxf", {}).get("status", ""),
            r.get("quality") or r.get("error") or "",
        )
        for r in result.get("rows", [])
    ]
    return (
        "<h4>VD - SDSS VDISP (km/s)</h4>"
        + table(("method", "N", "rms", "clipped mean", "clipped sigma", "target rms"), vd)
        + "<h4>Network - pPXF (clipped)</h4>"
        + table(("parameter", "N", "mean", "sigma", "paper", "target"), net)
        + "<h4>Repeat pairs: difference / combined 1-sigma</h4>"
        + table(("pair", "method", *F.LABEL_KEYS), pairs, 2)
        + "<h4>Spectra</h4>"
        + table(
            (
                "spectrum",
                "z",
                "S/N_r",
                "class",
                "VDISP",
                *(f"{k} {w}" for k in F.LABEL_KEYS for w in ("net", "pPXF")),
                "pPXF status",
                "quality",
            ),
            rows,
            1,
        )
    )


def model_vs_truth_tables(result: dict) -> str:
    """``benchmarks/model_vs_truth.py``: accuracy against truth by group, speed, pPXF."""
    facts = [(k, _leaf(result[k])) for k in ("model", "test", "n_test", "predict_s", "spectra_per_s") if k in result]
    header = ["group", "N"] + [f"{k} {s}" for k in F.LABEL_KEYS for s in ("mean", "sigma", "cov68")]
    rows = [
        (
            g,
            row.get("n"),
            *(
                c
                for k in F.LABEL_KEYS
                for c in (
                    num((row.get(k) or [math.nan, math.nan])[0], figs.DECIMALS[k] + 1, True),
                    num((row.get(k) or [math.nan, math.nan])[1], figs.DECIMALS[k] + 1),
                    num(row.get(k + "_cover68"), 3),
                )
            ),
        )
        for g, row in result.get("table", {}).items()
    ]
    out = table(("field", "value"), facts, 2) + "<h4>Model - truth (clipped)</h4>" + table(header, rows)
    versus = result.get("versus_ppxf")
    if versus:
        # model - pPXF: recorded since 2026-11-26, absent from older results
        vrows = [
            (
                k,
                *(num(versus[k][who][i], figs.DECIMALS[k] + 1, i == 0) for who in ("model", "ppxf") for i in (0, 1)),
                num((versus[k].get("model_minus_ppxf") or [math.nan, math.nan])[1], figs.DECIMALS[k] + 1),
            )
            for k in F.LABEL_KEYS
            if k in versus
        ]
        out += f"<h4>Model and pPXF against truth on the same {esc(versus.get('n'))} mocks</h4>" + table(
            ("parameter", "model mean", "model sigma", "pPXF mean", "pPXF sigma", "model - pPXF sigma"), vrows
        )
    return out


def generic_tables(result: Any) -> str:
    """Any other JSON: its scalar leaves (the first 200)."""
    rows = [(k, _leaf(v)) for k, v in flatten(result) if not isinstance(v, (dict, list)) or not v][:200]
    return table(("key", "value"), rows, 2)


def benchmark_section(paths: Sequence[str], run_root: str = "") -> str:
    """One subsection per benchmark result file, rendered by what it holds."""
    if not paths:
        return section(
            "benchmarks",
            "Benchmarks",
            '<p class="note">No benchmark results: write them to '
            "RUN_ROOT/benchmarks/*.json (benchmarks/real_sdss.py --out RUN_ROOT/benchmarks, "
            "benchmarks/model_vs_truth.py --out RUN_ROOT/benchmarks/model_vs_truth.json).</p>",
        )
    parts = []
    for path in paths:
        try:
            with open(path) as fh:
                result = json.load(fh)
        except (OSError, ValueError) as err:
            parts.append(f'<h3>{esc(os.path.basename(path))}</h3><p class="fail">unreadable: {esc(err)}</p>')
            continue
        render = (
            real_sdss_tables
            if isinstance(result, dict) and "net_minus_ppxf" in result
            else model_vs_truth_tables
            if isinstance(result, dict) and "table" in result
            else generic_tables
        )
        parts.append(
            f'<h3>{esc(os.path.basename(path))}</h3><p class="note">{esc(_where(path, run_root))}</p>' + render(result)
        )
    return section("benchmarks", "Benchmarks", "\n".join(parts))
