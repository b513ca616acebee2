"""The network and the labeller's pPXF on real SDSS spectra: against SDSS's VDISP, against
each other (the paper's metric) and on repeat observations of one galaxy.

    .venv/bin/python benchmarks/real_sdss.py [--model PATH] [--files F ...] [--out runs/bench-real]

Every file is read as ``stellarpop predict`` reads it (serving/predict.py: ingest's
``process_file`` -> Example -> ``serving_default``), and the same Example is fitted as the
labeller fits it (``job.spectrum_of`` -> ``ppxf_fit.Fitter``, the default ``LabelConfig``,
one BLAS thread, timed). Default files: the 8 of ../shared/real-sdss, the 2 in the ppxf
wheel and NGC4636 of the ppxf 8.2.6 sdist. Printed: one row per spectrum; VD - VDISP (rms,
3-sigma-clipped mean and std) for the network and pPXF, over galaxies with a measured VDISP
(CLASS GALAXY, VDISP > 0; the others are listed); network minus pPXF per parameter (clipped
mean and std, the paper's metric) beside the paper's numbers and issue 10's targets; the
two repeat pairs as difference / combined 1-sigma. Only fits with status ``ok`` count for
pPXF. Everything goes to ``OUT/real_sdss.json`` with the model's path and metadata;
``--out RUN_ROOT/benchmarks`` puts it where the run's report (``pipeline/report/run_report.py``) shows it.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from ppxf_vs_truth import SHARED_REAL_SDSS, clipped, labeller_fitter, real_files  # benchmarks/, beside this script
from threadpoolctl import threadpool_limits

from stellarpop.components import examples, ppxf_fit
from stellarpop.components.fits_example_gen import job as ingest_job
from stellarpop.components.portable import portable
from stellarpop.components.ppxf_labeler import job as label_job
from stellarpop.schema import features as F
from stellarpop.schema import model_contract as contract
from stellarpop.serving import predict as pred

PAIRS = (("0266-51602-0166", "0266-51630-0174"), ("0266-51602-0526", "0266-51630-0525"))  # same galaxy, two nights
PAPER = {"log_age": 0.11, "mh": 0.11, "ebv": 0.018, "vd": 31.0}  # network minus pPXF, clipped std (the paper)
TARGET = {"log_age": 0.08, "mh": 0.10, "ebv": 0.02}  # issue 10's targets for the same statistic
VDISP_RMS_TARGET = 15.0  # km/s, issue 10: rms of VD - VDISP
WHO = ("net", "ppxf")


def default_files() -> list[str]:
    return sorted(glob.glob(str(SHARED_REAL_SDSS / "*.fits"))) + real_files()


def fit_file(path: str, fitter: ppxf_fit.Fitter) -> dict:
    """pPXF's result for the Example that ``stellarpop predict`` makes of ``path``, its time
    (s, one BLAS thread) and SDSS's VDISP error (predict's table has no column for it)."""
    spec, fail = ingest_job.process_file(path, ingest_job.IngestConfig())
    if fail is not None:
        return {"status": ppxf_fit.FAILED, "message": fail["message"]}
    example = tf.train.Example.FromString(examples.to_example(spec).SerializeToString(deterministic=True))
    with threadpool_limits(1):
        t0 = time.perf_counter()
        result = fitter.fit(*label_job.spectrum_of(example))
        seconds = time.perf_counter() - t0
    return {**dataclasses.asdict(result), "seconds": seconds, "sdss_vdisp_err": spec.sdss_vdisp_err}


def vdisp_excluded(row: dict) -> str:
    """Why a spectrum is left out of the VDISP statistics ('' when it is used)."""
    if row["error"]:
        return "unreadable"
    if row["class"] and row["class"] != "GALAXY":
        return f"CLASS {row['class']}"
    return "" if row["sdss_vdisp"] > 0 and row["sdss_vdisp_err"] > 0 else "no VDISP"


def measure(files: list[str], predictor: pred.Predictor, fitter: ppxf_fit.Fitter) -> list[dict]:
    """One row per file: predict's row with ``net`` and ``ppxf`` {key, key_err} added."""
    rows = pred.predict_files(files, predictor)
    keys = F.LABEL_KEYS + F.LABEL_ERR_KEYS
    for row in rows:
        fit = fit_file(row["file"], fitter)
        row["sdss_vdisp_err"] = fit.pop("sdss_vdisp_err", math.nan)
        row["net"] = {k: row.pop(k) for k in keys}
        row["ppxf"] = {k: fit.get(k, math.nan) for k in keys + ("chi2", "status", "message", "seconds")}
        row["vdisp_excluded"] = vdisp_excluded(row)
    return rows


def _values(rows: list[dict], who: str, key: str) -> np.ndarray:
    """``key`` of ``who`` per row; NaN where pPXF's fit is not ok (never a label then)."""
    return np.array([r[who][key] if who == "net" or r["ppxf"]["status"] == ppxf_fit.OK else math.nan for r in rows])


def summarise(rows: list[dict]) -> dict:
    """VD - VDISP, network minus pPXF and the repeat pairs (see the module docstring)."""
    used = [r for r in rows if not r["vdisp_excluded"]]
    vdisp = np.array([r["sdss_vdisp"] for r in used])
    out = {"vd_minus_vdisp": {}, "net_minus_ppxf": {}, "pairs": pairs(rows)}
    for who in WHO:
        d = _values(used, who, F.VD) - vdisp
        mean, std = clipped(d)
        out["vd_minus_vdisp"][who] = {
            "n": int(np.isfinite(d).sum()),
            "rms": float(np.sqrt(np.nanmean(d**2))),
            "clipped_mean": mean,
            "clipped_std": std,
            "target_rms": VDISP_RMS_TARGET,
        }
    for k in F.LABEL_KEYS:
        d = _values(rows, "net", k) - _values(rows, "ppxf", k)
        mean, std = clipped(d)
        out["net_minus_ppxf"][k] = {
            "n": int(np.isfinite(d).sum()),
            "clipped_mean": mean,
            "clipped_std": std,
            "paper": PAPER[k],
            "target": TARGET.get(k, math.nan),
        }
    return out


def pairs(rows: list[dict]) -> list[dict]:
    """Per repeat pair, parameter and method: difference, combined 1-sigma, their ratio."""
    by_id = {r["spec_id"]: r for r in rows}
    out = []
    for a, b in (p for p in PAIRS if set(p) <= set(by_id)):
        entry = {"pair": [a, b]}
        for who in WHO:
            for k in F.LABEL_KEYS:
                d = _values([by_id[a]], who, k)[0] - _values([by_id[b]], who, k)[0]
                s = math.hypot(by_id[a][who][k + F.ERR_SUFFIX], by_id[b][who][k + F.ERR_SUFFIX])
                entry[f"{who}_{k}"] = {"diff": d, "sigma": s, "ratio": d / s, "within_1sigma": bool(abs(d) <= s)}
        out.append(entry)
    return out


DECIMALS = {"log_age": 3, "mh": 3, "ebv": 3, "vd": 1}  # printed


def print_rows(rows: list[dict]) -> None:
    print(
        f"{'spec_id':<16} {'z':>6} {'S/N':>5} {'VDISP':>12} {'net VD':>12} {'pPXF VD':>12} "
        f"{'age net/pPXF':>13} {'[M/H] net/pPXF':>15} {'E(B-V) net/pPXF':>15}  pPXF status; quality"
    )
    for r in rows:
        n, p = r["net"], r["ppxf"]
        z, snr, vdisp = (math.nan if r[k] is None else r[k] for k in ("z", "snr_r", "sdss_vdisp"))  # None: unreadable
        print(
            f"{r['spec_id'] or os.path.basename(r['file']):<16} {z:>6.4f} {snr:>5.1f} "
            f"{vdisp:>6.1f}+-{r['sdss_vdisp_err']:<4.1f} {n['vd']:>6.1f}+-{n['vd_err']:<4.1f} "
            f"{p['vd']:>6.1f}+-{p['vd_err']:<4.1f} {n['log_age']:>6.3f}/{p['log_age']:<6.3f} "
            f"{n['mh']:>+7.3f}/{p['mh']:<+7.3f} {n['ebv']:>7.3f}/{p['ebv']:<7.3f}  "
            f"{p['status']}{' (' + p['message'] + ')' if p['message'] else ''}; {r['quality'] or '-'}{r['error']}"
        )


def _pair_cell(key: str, c: dict) -> str:
    d = DECIMALS[key]
    return f"{key} {c['diff']:+.{d}f}/{c['sigma']:.{d}f} = {c['ratio']:+5.2f}{'' if c['within_1sigma'] else '*'}"


def print_summary(rows: list[dict], s: dict) -> None:
    excluded = [f"{r['spec_id'] or r['file']} ({r['vdisp_excluded']})" for r in rows if r["vdisp_excluded"]]
    print(f"\nVD - SDSS VDISP (km/s), galaxies with a VDISP; left out: {', '.join(excluded) or 'none'}")
    for who, v in s["vd_minus_vdisp"].items():
        print(
            f"  {who:<5} n={v['n']:<3} rms {v['rms']:6.1f}   clipped mean {v['clipped_mean']:+6.1f}  std "
            f"{v['clipped_std']:5.1f}"
            f"   (target rms <= {VDISP_RMS_TARGET:g})"
        )
    print("network minus pPXF (pPXF fits with status ok), clipped mean and std; paper's std; issue 10's target")
    for k, v in s["net_minus_ppxf"].items():
        d = DECIMALS[k]
        print(
            f"  {k:<8} n={v['n']:<3} mean {v['clipped_mean']:+.{d}f}  std {v['clipped_std']:.{d}f}   "
            f"paper {v['paper']:g}   target {'-' if math.isnan(v['target']) else format(v['target'], 'g')}"
        )
    print("repeat pairs: (first - second) / combined 1-sigma, * where |diff| > 1 sigma")
    for e in s["pairs"]:
        for who in WHO:
            cells = "  ".join(_pair_cell(k, e[f"{who}_{k}"]) for k in F.LABEL_KEYS)
            print(f"  {' / '.join(e['pair'])} {who:<5} {cells}")
    t = [r["ppxf"]["seconds"] for r in rows if np.isfinite(r["ppxf"]["seconds"])]
    print(f"pPXF: {np.mean(t):.2f} s per fit on one core (median {np.median(t):.2f}, max {np.max(t):.2f})")


def model_meta(predictor: pred.Predictor) -> dict:
    """The model's folder, its version (the numbered folder's name) and its model_info.json."""
    info_path = Path(predictor.path, contract.MODEL_INFO_FILE)
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return {"model": predictor.path, "model_version": os.path.basename(predictor.path.rstrip("/")), "model_info": info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="SavedModel or numbered-version folder (default: the shipped one)")
    ap.add_argument("--files", nargs="+", default=None, help="spectrum files (default: see the module docstring)")
    ap.add_argument("--out", default="runs/bench-real")
    args = ap.parse_args()

    files = args.files or default_files()
    predictor = pred.Predictor(args.model)
    fitter = labeller_fitter()
    rows = measure(files, predictor, fitter)
    summary = summarise(rows)
    meta = model_meta(predictor)
    print(
        f"model {meta['model']} (version {meta['model_version']}, stellarpop "
        f"{meta['model_info'].get('stellarpop_version', '?')}, {meta['model_info'].get('architecture', '?')}); "
        f"{len(files)} files"
    )
    print_rows(rows)
    print_summary(rows, summary)
    os.makedirs(args.out, exist_ok=True)
    result = {**meta, "fit_config": json.loads(fitter.config.to_json()), "files": files, "rows": rows, **summary}
    with open(os.path.join(args.out, "real_sdss.json"), "w") as fh:
        json.dump(portable(result), fh, indent=2, default=float)
    print(f"wrote {os.path.join(args.out, 'real_sdss.json')}")


if __name__ == "__main__":
    main()
