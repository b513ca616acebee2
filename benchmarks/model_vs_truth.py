"""An exported model against the exact truth of held-out simulated spectra, against pPXF on
the same spectra, on real SDSS spectra, and its prediction speed.

    .venv/bin/python benchmarks/model_vs_truth.py --model serving/models/default \
        --test runs/train-100k/examples/Split-test --ppxf runs/bench-ppxf --out docs/model_card_metrics.json

- Accuracy: prediction minus truth per parameter (mean and 3-sigma-clipped standard
  deviation, the paper's statistics), overall, per S/N_r bin and per class; the fraction
  of 68% intervals (prediction +- err) that contain the truth.
- Against pPXF: on the mocks of benchmarks/ppxf_vs_truth.py (``--ppxf``: its output
  folder), the model's and pPXF's scatter about the truth on the same spectra, and the
  scatter of model minus pPXF (what benchmarks/real_sdss.py measures on real spectra,
  where no truth is known), overall and per S/N_r bin and class.
- Real spectra: the SDSS spectra in ppxf (and NGC4636 of the ppxf 8.2.6 sdist), with pPXF
  (the labeller's fit) and SDSS's VDISP beside the model.
- Speed: spectra per second from serialized Examples through ``serving_default``.

``--out RUN_ROOT/benchmarks/model_vs_truth.json`` puts the result where the run's report
(``pipeline/report/run_report.py``) shows it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np
import tensorflow as tf
from ppxf_vs_truth import clipped, groups, labeller_fitter, real_files, real_spectra  # benchmarks/, beside this script

from stellarpop.components import examples
from stellarpop.components.portable import portable
from stellarpop.components.ppxf_labeler import job as label_job
from stellarpop.schema import features as F
from stellarpop.serving import predict as pred


def load(folder_glob: str, limit: int | None = None) -> tuple[list[bytes], dict[str, np.ndarray]]:
    paths = sorted(glob.glob(os.path.join(folder_glob, "*.gz")))
    raws = []
    for path in paths:
        raws += [r.numpy() for r in tf.data.TFRecordDataset([path], compression_type="GZIP")]
        if limit and len(raws) >= limit:
            break
    raws = raws[:limit] if limit else raws
    parsed = examples.parse(raws, truth=True)
    return raws, parsed


def predict_all(predictor: pred.Predictor, raws: list[bytes], batch: int = 512) -> dict[str, np.ndarray]:
    outs = [predictor.predict(raws[i : i + batch]) for i in range(0, len(raws), batch)]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def accuracy(pred_out: dict, parsed: dict) -> dict:
    table = {}
    for name, sel in groups(parsed[F.SNR_R], parsed[F.BPT_CLASS]).items():
        row = {"n": int(sel.sum())}
        for k in F.LABEL_KEYS:
            d = pred_out[k][sel] - parsed[F.TRUTH_PREFIX + k][sel]
            row[k] = clipped(d)
            if k + F.ERR_SUFFIX in pred_out:
                row[k + "_cover68"] = (
                    float(np.mean(np.abs(d) <= pred_out[k + F.ERR_SUFFIX][sel])) if sel.any() else float("nan")
                )
        table[name] = row
    return table


def speed(predictor: pred.Predictor, raws: list[bytes], batch: int = 512, seconds: float = 20.0) -> float:
    chunk = (raws * (batch // max(len(raws), 1) + 1))[:batch]
    predictor.predict(chunk)  # trace and warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        predictor.predict(chunk)
        n += len(chunk)
    return n / (time.perf_counter() - t0)


def versus_ppxf(predictor: pred.Predictor, ppxf_dir: str) -> dict:
    mocks = os.path.join(ppxf_dir, "mocks", "examples")
    raws, parsed = load(os.path.join(mocks, "Split-*"))
    out = predict_all(predictor, raws)
    labels = {}
    for folder in glob.glob(os.path.join(ppxf_dir, "labels-*", label_job.CHECKPOINT_DIR)):
        labels = label_job.read_checkpoints(folder)
    ids = parsed[F.SPEC_ID]
    have = np.array([i in labels and labels[i].ok for i in ids])
    fits = {k: np.array([getattr(labels[i], k) for i, h in zip(ids, have) if h]) for k in F.LABEL_KEYS}
    keys = [F.SNR_R, F.BPT_CLASS, *(F.TRUTH_PREFIX + k for k in F.LABEL_KEYS)]
    return compare_with_ppxf(
        {key: np.asarray(parsed[key])[have] for key in keys}, {k: out[k][have] for k in F.LABEL_KEYS}, fits
    )


def compare_with_ppxf(parsed: dict[str, np.ndarray], model: dict[str, np.ndarray], fits: dict[str, np.ndarray]) -> dict:
    """Model - truth, pPXF - truth and model - pPXF (each clipped mean and std) per label, over
    all spectra and per group (``groups``), for spectra aligned in the three arguments.

    Model - pPXF is what ``benchmarks/real_sdss.py`` measures on real spectra, where no truth
    is known; a model exactly at the truth would score pPXF's own scatter there.
    """
    res = {"n": int(len(parsed[F.SNR_R])), "groups": {}}
    for name, sel in groups(parsed[F.SNR_R], parsed[F.BPT_CLASS]).items():
        row = {"n": int(sel.sum())}
        for k in F.LABEL_KEYS:
            truth, m, p = parsed[F.TRUTH_PREFIX + k][sel], model[k][sel], fits[k][sel]
            row[k] = {"model": clipped(m - truth), "ppxf": clipped(p - truth), "model_minus_ppxf": clipped(m - p)}
        res["groups"][name] = row
    res.update({k: res["groups"]["all"][k] for k in F.LABEL_KEYS})
    return res


def real(predictor: pred.Predictor) -> list[dict]:
    """The model's rows for the real spectra, each with pPXF's fit (the labeller's settings)."""
    fitter = labeller_fitter()
    rows = pred.predict_files(real_files(), predictor)
    for row, fit in zip(rows, real_spectra(fitter)):
        row["ppxf"] = {
            "log_age": fit["log_age"],
            "mh": fit["mh"],
            "ebv": fit["ebv"],
            "vd": fit["ppxf_vd"],
            "vd_err": fit["ppxf_vd_err"],
            "status": fit["status"],
        }
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="SavedModel or numbered-version folder (default: shipped)")
    ap.add_argument("--test", required=True, help="folder of held-out gzipped TFRecords with true_* features")
    ap.add_argument("--ppxf", default="", help="output folder of benchmarks/ppxf_vs_truth.py")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    predictor = pred.Predictor(args.model)
    raws, parsed = load(args.test, args.limit)
    t0 = time.time()
    out = predict_all(predictor, raws)
    table = accuracy(out, parsed)
    result = {
        "model": predictor.path,
        "test": args.test,
        "n_test": len(raws),
        "predict_s": time.time() - t0,
        "table": table,
        "spectra_per_s": speed(predictor, raws[:512]),
        "real": real(predictor),
    }
    if args.ppxf:
        result["versus_ppxf"] = versus_ppxf(predictor, args.ppxf)

    print(f"model minus truth on {len(raws)} held-out spectra ({args.test})")
    print(f"{'group':<16}{'n':>6}" + "".join(f"{k + ' mean':>13}{k + ' std':>11}{'cov68':>7}" for k in F.LABEL_KEYS))
    for name, row in table.items():
        print(
            f"{name:<16}{row['n']:>6}"
            + "".join(
                f"{row[k][0]:>13.4f}{row[k][1]:>11.4f}{row.get(k + '_cover68', float('nan')):>7.2f}"
                for k in F.LABEL_KEYS
            )
        )
    print(f"speed: {result['spectra_per_s']:.0f} spectra/s from serialized Examples (batch 512)")
    if args.ppxf:
        vp = result["versus_ppxf"]
        print(f"same {vp['n']} mocks, clipped std about the truth: model vs pPXF")
        for k in F.LABEL_KEYS:
            print(
                f"  {k:<8} model {vp[k]['model'][1]:.4f} (mean {vp[k]['model'][0]:+.4f})   pPXF "
                f"{vp[k]['ppxf'][1]:.4f} (mean {vp[k]['ppxf'][0]:+.4f})"
            )
        print("clipped std of model - pPXF (the real-spectra measure) | pPXF - truth, per group")
        for name, row in vp["groups"].items():
            print(
                f"  {name:<16}{row['n']:>6}"
                + "".join(f"  {k} {row[k]['model_minus_ppxf'][1]:.4f} | {row[k]['ppxf'][1]:.4f}" for k in F.LABEL_KEYS)
            )
    print("real SDSS spectra: model | pPXF | SDSS VDISP")
    for row in result["real"]:
        p = row["ppxf"]
        print(
            f"  {row['spec_id']:<16} z={row['z']:.4f} model: age {row['log_age']:.2f}+-{row['log_age_err']:.2f} "
            f"[M/H] {row['mh']:+.2f}+-{row['mh_err']:.2f} E(B-V) {row['ebv']:.3f} sigma "
            f"{row['vd']:.0f}+-{row['vd_err']:.0f} "
            f"| pPXF: age {p['log_age']:.2f} [M/H] {p['mh']:+.2f} E(B-V) {p['ebv']:.3f} sigma {p['vd']:.0f} "
            f"| VDISP {row['sdss_vdisp']:.0f}  {row['quality']}"
        )
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(portable(result), fh, indent=2, default=float)


if __name__ == "__main__":
    main()
