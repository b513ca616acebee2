"""pPXF (the labeller's settings) against the exact truth of simulated spectra.

    .venv/bin/python benchmarks/ppxf_vs_truth.py --n 2000 --workers 2 --out runs/bench-ppxf

1. simulates ``--n`` spectra with SDSS-like priors (``stellarpop simulate``'s job; reused
   if already there), 2. labels them with the Beam labelling job (checkpointed: a re-run
   resumes), 3. prints pPXF minus truth per parameter (mean and 3-sigma-clipped standard
   deviation, as the paper measures) overall, per S/N_r bin and per class, 4. times fits on
   one core, and 5. fits the real SDSS spectra shipped with ppxf (and NGC4636 of the ppxf
   8.2.6 sdist) and compares sigma with SDSS's VDISP. Writes ``ppxf_vs_truth.json``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from stellarpop.components import bpt, examples, ppxf_fit, priors, readers, reference_data, spectra, templates
from stellarpop.components.mock_example_gen import job as sim_job
from stellarpop.components.mock_example_gen import run as sim_run
from stellarpop.components.portable import portable
from stellarpop.components.ppxf_labeler import job as label_job
from stellarpop.components.ppxf_labeler import run as label_run
from stellarpop.pipeline import configs
from stellarpop.pipeline.evaluation.metrics import sigma_clipped_mean_std
from stellarpop.schema import features as F


def clipped(d: np.ndarray) -> tuple[float, float]:
    """3-sigma-clipped mean and standard deviation (the paper's statistics, the Evaluator's
    metric) of the finite values of ``d``."""
    mean, std, _ = sigma_clipped_mean_std(d)
    return mean, std


def groups(snr: np.ndarray, cls: np.ndarray) -> dict[str, np.ndarray]:
    """Selections of the benchmark tables: all, each S/N_r bin of the paper, each class."""
    out = {"all": np.ones(snr.size, bool)}
    edges = list(F.SNR_BIN_EDGES) + [np.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        out[f"S/N {lo:g}-{hi:g}"] = (snr >= lo) & (snr < hi)
    out["S/N < 5"] = snr < F.SNR_BIN_EDGES[0]
    for c in bpt.CLASSES:
        out[c] = cls == c
    return out


def truth_table(examples_dir: str) -> dict[str, dict]:
    rows = {}
    for path in glob.glob(os.path.join(examples_dir, "Split-*", "*.gz")):
        for raw in tf.data.TFRecordDataset([path], compression_type="GZIP").batch(256):
            parsed = examples.parse(list(raw.numpy()), truth=True)
            for i, sid in enumerate(parsed[F.SPEC_ID]):
                rows[sid] = {
                    "snr": float(parsed[F.SNR_R][i]),
                    "class": parsed[F.BPT_CLASS][i],
                    **{k: float(parsed[F.TRUTH_PREFIX + k][i]) for k in F.LABEL_KEYS},
                }
    return rows


def compare(truth: dict, fits: dict) -> dict:
    ids = sorted(set(truth) & {k for k, r in fits.items() if r.ok})
    snr = np.array([truth[i]["snr"] for i in ids])
    cls = np.array([truth[i]["class"] for i in ids])
    diff = {k: np.array([getattr(fits[i], k) - truth[i][k] for i in ids]) for k in F.LABEL_KEYS}
    return {
        name: {"n": int(sel.sum()), **{k: clipped(diff[k][sel]) for k in F.LABEL_KEYS}}
        for name, sel in groups(snr, cls).items()
    }


def time_fits(examples_dir: str, fitter: ppxf_fit.Fitter, n: int) -> float:
    from threadpoolctl import threadpool_limits

    paths = sorted(glob.glob(os.path.join(examples_dir, "Split-*", "*.gz")))
    raws = [r.numpy() for r in tf.data.TFRecordDataset(paths[:1], compression_type="GZIP").take(n)]
    specs = [label_job.spectrum_of(tf.train.Example.FromString(r)) for r in raws]
    fitter.fit(*specs[0])  # template preparation at this z
    with threadpool_limits(1):
        t = time.perf_counter()
        for s in specs:
            fitter.fit(*s)
        return (time.perf_counter() - t) / len(specs)


def labeller_fitter(fit: ppxf_fit.FitConfig | None = None) -> ppxf_fit.Fitter:
    """The labelling job's fitter (as ``FitSpectra.setup``): ``fit`` or the default settings."""
    cfg = label_job.LabelConfig() if fit is None else label_job.LabelConfig(fit=fit)
    inst = readers.instrument_from_files(cfg.instrument_files or None)
    return ppxf_fit.Fitter(templates.load_library(cfg.fit.library or None), inst, cfg.fit)


# The 8 real galaxies of the workspace (../shared/real-sdss beside the checkout), read in place.
SHARED_REAL_SDSS = Path(__file__).resolve().parents[1].parent / "shared" / "real-sdss"


def machine() -> dict:
    """The cores and the load average now (for speed measured on a shared machine)."""
    import re
    import subprocess

    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"cpus": os.cpu_count(), "uptime": uptime, "load": re.findall(r"[\d.]+", uptime.split("average")[-1])}


def write_result(out: str, result: dict, before: dict) -> None:
    """Print the load before and after a speed benchmark and write its JSON to ``out``."""
    print("load before:", before["uptime"], "\nload after: ", result["machine_after"]["uptime"])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(portable(result), fh, indent=1)


def real_files() -> list[str]:
    """The real SDSS spectra: the two in the ppxf wheel and NGC4636 of the ppxf 8.2.6 sdist."""
    return readers.bundled_spectra() + [
        str(p) for p in reference_data.ppxf_sdist_members("spectra/NGC4636_SDSS_DR12.fits")
    ]


def real_spectra(fitter: ppxf_fit.Fitter) -> list[dict]:
    rows = []
    for path in real_files():
        spec = readers.read_spectrum(path)
        grid = spectra.prepare(spec)
        r = fitter.fit(spec.spec_id, grid.flux, grid.ivar, grid.bad, spec.z)
        rows.append(
            {
                "file": os.path.basename(path),
                "z": spec.z,
                "sdss_vdisp": spec.sdss_vdisp,
                "sdss_vdisp_err": spec.sdss_vdisp_err,
                "ppxf_vd": r.vd,
                "ppxf_vd_err": r.vd_err,
                "log_age": r.log_age,
                "mh": r.mh,
                "ebv": r.ebv,
                "chi2": r.chi2,
                "status": r.status,
                "message": r.message,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--gas-components", type=int, default=ppxf_fit.FitConfig().gas_components)
    ap.add_argument("--out", default="runs/bench-ppxf")
    ap.add_argument("--time-n", type=int, default=20, help="fits timed on one core")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    beam_args = configs.local_beam_args(args.workers)

    mocks = os.path.join(out, "mocks")
    t0 = time.time()
    sim_config = sim_job.SimConfig(n=args.n, seed=args.seed, priors=priors.Priors(mode="sdss"))
    sim_run.run_standalone(mocks, sim_config, beam_args)
    t_sim = time.time() - t0

    config = label_job.LabelConfig(fit=ppxf_fit.FitConfig(gas_components=args.gas_components), min_vd=0.0)
    labelled = os.path.join(out, f"labels-gas{args.gas_components}")
    t0 = time.time()
    summary = label_run.run_standalone([os.path.join(mocks, "examples")], labelled, config, beam_args)
    t_label = time.time() - t0
    fits = label_job.read_checkpoints(os.path.join(labelled, label_job.CHECKPOINT_DIR))
    table = compare(truth_table(os.path.join(mocks, "examples")), fits)

    fitter = labeller_fitter(config.fit)
    per_fit = time_fits(os.path.join(mocks, "examples"), fitter, args.time_n)
    real = real_spectra(fitter)

    result = {
        "n": args.n,
        "seed": args.seed,
        "workers": args.workers,
        "fit_config": json.loads(config.fit.to_json()),
        "simulate_s": t_sim,
        "label_wall_s": t_label,
        "fitted_now": summary["fitted"] - summary["fitted_before"],
        "failed": summary["failed"],
        "failure_messages": summary["failure_messages"],
        "seconds_per_fit_one_core": per_fit,
        "table": table,
        "real": real,
    }
    with open(os.path.join(labelled, "ppxf_vs_truth.json"), "w") as fh:
        json.dump(portable(result), fh, indent=2)

    print(
        f"pPXF minus truth, {args.n} SDSS-like mocks (seed {args.seed}), gas components {args.gas_components}; "
        f"{summary['failed']} failed fits"
    )
    print(f"{'group':<16}{'n':>6}" + "".join(f"{k + ' mean':>14}{k + ' std':>12}" for k in F.LABEL_KEYS))
    for name, row in table.items():
        print(f"{name:<16}{row['n']:>6}" + "".join(f"{row[k][0]:>14.4f}{row[k][1]:>12.4f}" for k in F.LABEL_KEYS))
    print(
        f"one core: {per_fit:.3f} s per fit; labelling wall time {t_label:.0f} s for "
        f"{result['fitted_now']} new fits on {args.workers} workers"
    )
    print("real SDSS spectra: sigma pPXF vs SDSS VDISP")
    for row in real:
        print(
            f"  {row['file']:<26} z={row['z']:.4f} VDISP={row['sdss_vdisp']:.1f}+-{row['sdss_vdisp_err']:.1f} "
            f"pPXF={row['ppxf_vd']:.1f}+-{row['ppxf_vd_err']:.1f} log_age={row['log_age']:.2f} [M/H]={row['mh']:+.2f} "
            f"E(B-V)={row['ebv']:.3f} chi2={row['chi2']:.2f} {row['status']} {row['message']}"
        )


if __name__ == "__main__":
    main()
