"""The figures of a run report (:mod:`stellarpop.pipeline.report.run_report`), as the paper draws them.

Pure plotting: every function takes arrays or small mappings and returns a matplotlib
``Figure`` on the Agg canvas (no pyplot, no global state, no display); :func:`save` writes
it as PNG. Nothing here reads a run.

- :func:`density_figure`: predicted against label, one panel per parameter, 1:1 line and
  the 3-sigma-clipped mean and standard deviation of the residuals (the paper's Fig. 4);
- :func:`slice_figure`: clipped mean and standard deviation of the residuals per bin of
  S/N_r, redshift or BPT class, candidate and baseline (Figs. 5-7);
- :func:`zscore_figure`: residual / predicted 1-sigma per parameter against a unit
  Gaussian, with the fraction inside 1 sigma (68% coverage);
- :func:`plot_loss_curve`: training and validation loss per epoch (Fig. 3), which the
  Trainer also writes beside its checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stellarpop.pipeline.evaluation.metrics import metric_name, sigma_clipped_mean_std
from stellarpop.schema import features as F

NAMES = {F.LOG_AGE: "log age", F.MH: "[M/H]", F.EBV: "E(B-V)", F.VD: "sigma"}
AXIS_LABELS = {k: f"{NAMES[k]} [{F.LABEL_UNITS[k]}]" for k in F.LABEL_KEYS}
DECIMALS = {F.LOG_AGE: 3, F.MH: 3, F.EBV: 3, F.VD: 1}  # printed on figures and in tables
DPI = 100
MODEL_STYLES = {"candidate": dict(color="C0", ls="-", marker="o"), "baseline": dict(color="C1", ls="--", marker="s")}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str) -> str:
    """Write ``fig`` as a PNG at ``path``; returns the file's name (for an ``<img src>``)."""
    fig.savefig(path, format="png")
    return os.path.basename(path)


def _panel_range(*arrays: np.ndarray) -> tuple[float, float]:
    """A common range for both axes: 0.5-99.5 percentiles of the finite values, padded."""
    values = np.concatenate([a[np.isfinite(a)] for a in arrays])
    if not values.size:
        return 0.0, 1.0
    low, high = np.percentile(values, [0.5, 99.5])
    pad = 0.05 * (high - low) or 0.5 * (abs(low) or 1.0)
    return float(low - pad), float(high + pad)


def density_figure(labels: Mapping[str, np.ndarray], predictions: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """Predicted against label for each parameter (the paper's Fig. 4).

    Parameters
    ----------
    labels, predictions : mapping
        Parameter (``features.LABEL_KEYS``) -> ndarray, shape (N,), physical units; the same
        parameters and N in both. Non-finite pairs are left out.
    title : str

    Returns
    -------
    Figure
        One 2-D histogram per parameter (counts, empty bins blank), the 1:1 line, and
        ``mean``, ``sigma`` (3-sigma-clipped, of prediction - label) and N written on it.
    """
    keys = [k for k in F.LABEL_KEYS if k in labels]
    fig = _figure(4.2 * len(keys), 4.4)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        x, y = np.asarray(labels[key], float), np.asarray(predictions[key], float)
        ok = np.isfinite(x) & np.isfinite(y)
        low, high = _panel_range(x[ok], y[ok])
        bins = int(np.clip(np.sqrt(ok.sum()), 10, 60))
        if ok.any():
            ax.hist2d(x[ok], y[ok], bins=bins, range=[[low, high], [low, high]], cmin=1, cmap="viridis")
        ax.plot([low, high], [low, high], color="k", lw=0.8, ls="--")
        mean, std, n = sigma_clipped_mean_std(y[ok] - x[ok])
        d = DECIMALS[key]
        ax.text(
            0.04,
            0.96,
            f"mean {mean:+.{d}f}\nsigma {std:.{d}f}\nN {ok.sum()} ({n} kept)",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
            bbox=dict(facecolor="white", alpha=0.8, lw=0),
        )
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        ax.set_xlabel(f"label {AXIS_LABELS[key]}")
        ax.set_ylabel(f"predicted {AXIS_LABELS[key]}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def slice_figure(bins: Sequence[str], series: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str) -> Figure:
    """Clipped mean and standard deviation of the residuals per bin (the paper's Figs. 5-7).

    Parameters
    ----------
    bins : sequence of str
        The bins' labels, in order (x axis, categorical).
    series : mapping
        Model name ("candidate", "baseline") -> {``metrics.metric_name(kind, parameter)``:
        one value per bin (NaN where the bin has none)}, for kinds ``clipped_mean`` and
        ``clipped_std`` of each parameter.
    xlabel : str

    Returns
    -------
    Figure
        Top row: clipped mean per parameter; bottom row: clipped standard deviation.
    """
    keys = F.LABEL_KEYS
    fig = _figure(3.6 * len(keys), 6.0)
    x = np.arange(len(bins))
    for row, kind in enumerate(("clipped_mean", "clipped_std")):
        for col, key in enumerate(keys):
            ax = fig.add_subplot(2, len(keys), row * len(keys) + col + 1)
            for model, values in series.items():
                y = np.asarray(values.get(metric_name(kind, key), [np.nan] * len(bins)), float)
                ax.plot(x, y, label=model, ms=4, **MODEL_STYLES.get(model, {}))
            if kind == "clipped_mean":
                ax.axhline(0.0, color="grey", lw=0.6)
            ax.set_xticks(x)
            ax.set_xticklabels(bins, rotation=45, ha="right", fontsize=8)
            ax.set_ylabel(
                f"{'mean' if kind == 'clipped_mean' else 'sigma'} of residual, {AXIS_LABELS[key]}", fontsize=8
            )
            if row == 1:
                ax.set_xlabel(xlabel)
            if row == 0 and col == 0 and len(series) > 1:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def zscore_figure(residuals: Mapping[str, np.ndarray], errors: Mapping[str, np.ndarray]) -> Figure:
    """Histograms of residual / predicted 1-sigma per parameter, over a unit Gaussian.

    Parameters
    ----------
    residuals : mapping
        Parameter -> prediction - label, shape (N,), physical units.
    errors : mapping
        Parameter -> the model's 1-sigma error of the prediction, same shape and units.

    Returns
    -------
    Figure
        Each panel states the fraction with |residual| <= error (0.683 when calibrated).
        A model without errors (NaN) gets an empty panel saying so.
    """
    keys = [k for k in F.LABEL_KEYS if k in residuals]
    fig = _figure(3.6 * len(keys), 3.4)
    grid = np.linspace(-5, 5, 201)
    gauss = np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        r, e = np.asarray(residuals[key], float), np.asarray(errors[key], float)
        ok = np.isfinite(r) & np.isfinite(e) & (e > 0)
        if ok.any():
            z = r[ok] / e[ok]
            ax.hist(np.clip(z, -5, 5), bins=np.linspace(-5, 5, 41), density=True, color="C0", alpha=0.7)
            ax.plot(grid, gauss, color="k", lw=1, label="N(0, 1)")
            cover = float(np.mean(np.abs(r[ok]) <= e[ok]))
            ax.text(0.03, 0.95, f"|z| <= 1: {cover:.3f}\nN {ok.sum()}", transform=ax.transAxes, va="top", fontsize=9)
        else:
            ax.text(0.5, 0.5, "no predicted errors", transform=ax.transAxes, ha="center")
        ax.set_xlabel(f"(pred - label) / err, {key}")
    fig.tight_layout()
    return fig


def plot_loss_curve(record: Mapping[str, Any], title: str = "") -> Figure:
    """Training and validation loss per epoch (the paper's Fig. 3), best epoch marked; the
    quantity early stopping read, on its own axis, where it is not the loss (beta-NLL)."""
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    history = record["history"]
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if key in history:
            values = history[key]
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=label)
    monitor, axes = record.get("monitor", "val_loss"), [ax]
    if monitor != "val_loss" and monitor in history:
        axes.append(ax.twinx())
        axes[1].plot(
            range(1, len(history[monitor]) + 1),
            history[monitor],
            color="C2",
            marker="s",
            ms=3,
            label=f"{monitor} (early stopping, right)",
        )
        axes[1].set_ylabel(monitor)
    if record.get("best_epoch"):
        ax.axvline(record["best_epoch"], color="grey", ls=":", label=f"best (epoch {record['best_epoch']})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss ({record['loss']})" if record.get("loss") else "loss")
    ax.set_title(title)
    handles = [h for a in axes for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8)
    fig.tight_layout()
    return fig
