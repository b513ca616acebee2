"""The never-seen-library test: the network and pPXF (E-MILES templates) on mocks made with
BC03 (Bruzual & Charlot 2003, 2016 MILES release; ``components/bc03.py``).

    .venv/bin/python benchmarks/other_library.py --n 2000 --seed 31 --workers 2 --out runs/bench-bc03 [--model DIR]

1. gets the BC03 sps_lib library (fetched and built once into ``$STELLARPOP_CACHE``),
2. simulates ``--n`` spectra with SDSS-like priors and the 'realistic' nuisances from it
   (``stellarpop simulate``'s job, resumable by shard; reused if already there),
3. labels them with the pPXF labeller exactly as ``benchmarks/ppxf_vs_truth.py`` does, with
   its default (E-MILES) templates (checkpointed: a re-run resumes),
4. runs the network (``serving.predict.Predictor``) on all the mocks, and prints and writes
   ``--out/other_library.json``: per parameter, network minus truth (3-sigma-clipped mean
   and std, the fraction with |pred - truth| <= err) and pPXF minus truth on the spectra it
   fitted (the same statistics, coverage with its formal errors), the count of failed and
   at-bound pPXF fits and, where the model outputs them, the OOD flag rate and median score.

Neither the network (trained on E-MILES mocks) nor the labeller has seen BC03: the spread
beyond the E-MILES benchmarks measures the stellar-model systematics. BC03 reaches
[M/H] = +0.4, E-MILES only +0.22: the truth can lie beyond what pPXF can return.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter

import numpy as np
from model_vs_truth import accuracy, load, predict_all  # benchmarks/, beside this script
from ppxf_vs_truth import clipped, machine

from stellarpop.components import bc03, ppxf_fit, priors, reference_data, templates
from stellarpop.components.mock_example_gen import job as sim_job
from stellarpop.components.mock_example_gen import run as sim_run
from stellarpop.components.portable import portable
from stellarpop.components.ppxf_labeler import job as label_job
from stellarpop.components.ppxf_labeler import run as label_run
from stellarpop.pipeline import configs
from stellarpop.schema import features as F
from stellarpop.serving import predict as pred

RESULT_FILE = "other_library.json"
NUISANCES = "realistic"


def simulate(out: str, lib: str, n: int, seed: int, beam_args: list[str]) -> tuple[str, float]:
    """Mocks from library ``lib`` into ``out/mocks`` (resumed by shard): (examples folder, seconds)."""
    mocks = os.path.join(out, "mocks")
    config = sim_job.SimConfig(n=n, seed=seed, priors=priors.Priors(mode="sdss"), nuisances=NUISANCES, library=lib)
    t0 = time.time()
    sim_run.run_standalone(mocks, config, beam_args)
    return os.path.join(mocks, "examples"), time.time() - t0


def label(out: str, examples_dir: str, beam_args: list[str]) -> tuple[dict, dict, float, label_job.LabelConfig]:
    """pPXF labels as benchmarks/ppxf_vs_truth.py makes them (E-MILES, checkpointed):
    (summary, {spec_id: LabelResult}, seconds, config)."""
    config = label_job.LabelConfig(fit=ppxf_fit.FitConfig(), min_vd=0.0)
    labelled = os.path.join(out, f"labels-gas{config.fit.gas_components}")
    t0 = time.time()
    summary = label_run.run_standalone([examples_dir], labelled, config, beam_args)
    seconds = time.time() - t0
    return summary, label_job.read_checkpoints(os.path.join(labelled, label_job.CHECKPOINT_DIR)), seconds, config


def ppxf_rows(parsed: dict, fits: dict) -> tuple[dict, np.ndarray]:
    """pPXF minus truth on the mocks it fitted (status ok) with the statuses of all mocks, and
    the mask of the ok fits (in the order of ``parsed``)."""
    ids = list(parsed[F.SPEC_ID])
    status = Counter(fits[i].status if i in fits else "missing" for i in ids)
    ok = np.array([i in fits and fits[i].ok for i in ids])
    rows = {"n": int(ok.sum()), "status": dict(status)}
    for k in F.LABEL_KEYS:
        truth = parsed[F.TRUTH_PREFIX + k][ok]
        value = np.array([getattr(fits[i], k) for i in np.asarray(ids)[ok]], float)
        err = np.array([getattr(fits[i], k + F.ERR_SUFFIX) for i in np.asarray(ids)[ok]], float)
        d = value - truth
        has_err = np.isfinite(err)
        rows[k] = clipped(d)
        rows[k + "_cover68"] = float(np.mean(np.abs(d[has_err]) <= err[has_err])) if has_err.any() else float("nan")
    return rows, ok


def ood_summary(out: dict) -> dict:
    """The OOD flag rate and median score, where the model outputs them (else empty)."""
    res = {}
    if "ood_flag" in out:
        res["ood_flagged_fraction"] = float(np.mean(np.asarray(out["ood_flag"], float) > 0.5))
    if "ood_score" in out:
        res["ood_score_median"] = float(np.nanmedian(np.asarray(out["ood_score"], float)))
    return res


def truth_ranges(parsed: dict, lib: templates.Library, emiles: templates.Library) -> dict:
    """The truth's ranges, and how many mocks have [M/H] beyond E-MILES's (pPXF cannot reach them)."""
    mh = parsed[F.TRUTH_PREFIX + F.MH]
    res = {
        k: [float(np.min(parsed[F.TRUTH_PREFIX + k])), float(np.max(parsed[F.TRUTH_PREFIX + k]))] for k in F.LABEL_KEYS
    }
    res["library_log_age"] = [float(np.log10(lib.ages.min() * 1e9)), float(np.log10(lib.ages.max() * 1e9))]
    res["library_mh"] = [float(lib.metals.min()), float(lib.metals.max())]
    res["mh_beyond_emiles"] = int(np.sum((mh > emiles.metals.max()) | (mh < emiles.metals.min())))
    return res


def print_table(result: dict) -> None:
    net, same, pp = result["network"]["all"], result["network_on_ppxf_ok"]["all"], result["ppxf"]
    print(
        f"BC03 mocks (never seen): {result['n_mocks']} spectra (seed {result['seed']}, sdss priors, "
        f"{NUISANCES} nuisances); "
        f"library {os.path.basename(result['library'])} sha256 {result['library_sha256'][:12]}"
    )
    print(f"network on all {net['n']}; pPXF (E-MILES) on its {pp['n']} ok fits; status {pp['status']}")
    print(
        f"{'param':<8}{'net mean':>10}{'net std':>9}{'net cov68':>10}{'net std*':>9}"
        f"{'pPXF mean':>11}{'pPXF std':>10}{'pPXF cov68':>11}"
    )
    for k in F.LABEL_KEYS:
        print(
            f"{k:<8}{net[k][0]:>10.4f}{net[k][1]:>9.4f}{net.get(k + '_cover68', float('nan')):>10.2f}{same[k][1]:>9.4f}"
            f"{pp[k][0]:>11.4f}{pp[k][1]:>10.4f}{pp[k + '_cover68']:>11.2f}"
        )
    print(
        "  (mean, std: 3-sigma-clipped, of estimate minus truth; cov68: fraction with |estimate - truth| <= its error; "
        "net std*: the network on pPXF's ok fits only)"
    )
    if result["ood"]:
        print("  OOD: " + ", ".join(f"{k} {v:.3f}" for k, v in result["ood"].items()))
    else:
        print("  OOD: the model has no ood_score / ood_flag outputs")
    tr = result["truth"]
    print(
        f"  truth log_age {tr['log_age'][0]:.2f}..{tr['log_age'][1]:.2f}, [M/H] {tr['mh'][0]:+.2f}..{tr['mh'][1]:+.2f} "
        f"(library {tr['library_mh'][0]:+.2f}..{tr['library_mh'][1]:+.2f}); {tr['mh_beyond_emiles']} beyond "
        "E-MILES's [M/H]"
    )
    print(
        f"wall: simulate {result['simulate_s']:.0f} s, label {result['label_wall_s']:.0f} s "
        f"({result['fitted_now']} new fits on {result['workers']} workers), predict {result['predict_s']:.0f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--model", default=None, help="SavedModel or numbered-version folder (default: shipped)")
    ap.add_argument("--out", default="runs/bench-bc03")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    beam_args = configs.local_beam_args(args.workers)
    before = machine()

    lib_path = bc03.library_path()
    examples_dir, t_sim = simulate(out, str(lib_path), args.n, args.seed, beam_args)
    summary, fits, t_label, config = label(out, examples_dir, beam_args)

    predictor = pred.Predictor(args.model)
    raws, parsed = load(os.path.join(examples_dir, "Split-*"))
    t0 = time.time()
    net_out = predict_all(predictor, raws)
    t_pred = time.time() - t0
    ppxf, ok = ppxf_rows(parsed, fits)
    subset = {k: v[ok] for k, v in net_out.items()}
    result = {
        "n": args.n,
        "seed": args.seed,
        "workers": args.workers,
        "n_mocks": len(raws),
        "model": predictor.path,
        "library": str(lib_path),
        "library_sha256": reference_data.sha256(lib_path),
        "nuisances": NUISANCES,
        "priors": "sdss",
        "fit_config": json.loads(config.fit.to_json()),
        "network": accuracy(net_out, parsed),
        "network_on_ppxf_ok": accuracy(subset, {k: v[ok] for k, v in parsed.items()}),
        "ppxf": ppxf,
        "ood": ood_summary(net_out),
        "truth": truth_ranges(parsed, templates.load_library(lib_path), templates.load_library()),
        "simulate_s": t_sim,
        "label_wall_s": t_label,
        "predict_s": t_pred,
        "fitted_now": summary["fitted"] - summary["fitted_before"],
        "failed": summary["failed"],
        "failure_messages": summary["failure_messages"],
        "machine_before": before,
        "machine_after": machine(),
    }
    print_table(result)
    with open(os.path.join(out, RESULT_FILE), "w") as fh:
        json.dump(portable(result), fh, indent=2, default=float)
    print(f"wrote {os.path.join(out, RESULT_FILE)}")


if __name__ == "__main__":
    main()
