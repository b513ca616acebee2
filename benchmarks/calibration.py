"""How a calibrated export's intervals and out-of-domain score behave on sets of spectra, and
the interval methods compared (the ablation behind ``pipeline/training/calibration.py``'s choice).

    .venv/bin/python benchmarks/calibration.py --model serving/models/default \
        --calibration-set runs/train-mixed-320k/examples/Split-eval \
        --set sdss=runs/mocks-sdss-20k/examples/Split-test --set bc03=runs/bench-bc03/mocks/examples/Split-* \
        --real --out runs/bench-calibration.json

For every set of simulated spectra (gzipped Examples with ``true_*``): the median, 90th
percentile and flagged fraction of ``ood_score``, and the 68% coverage of three interval
methods, each fitted on ``--calibration-set`` (held-out mocks of the training distribution):

- ``raw``: the network's sigma as trained (recovered from the export: err / (scale x widening));
- ``scale``: one split-conformal factor per label on the raw sigma;
- ``widen+scale`` (the export's): sigma x sqrt(max(1, ood_score)), then the conformal factor.

``--stress N`` adds N SDSS-like mocks (seed 77) per set of ``components/nuisances.py``
``STRESS``, nuisances far beyond the training's (simulated in process); ``--real`` adds
the score of the real SDSS spectra of ``benchmarks/real_sdss.py``.
"""

from __future__ import annotations

import argparse

import numpy as np
from model_vs_truth import load, predict_all  # benchmarks/, beside this script
from ppxf_vs_truth import machine, write_result

from stellarpop.pipeline.training import calibration as C
from stellarpop.schema import features as F
from stellarpop.serving import predict as pred

METHODS = ("raw", "scale", "widen+scale")


def stress_sets(n: int, preparation, seed: int = 77) -> dict[str, tuple[list[bytes], dict]]:
    """{name: (serialized Examples, parsed with truth)} of ``n`` mocks per ``nuisances.STRESS`` set."""
    from stellarpop.components import examples, priors, readers, spectra, templates
    from stellarpop.components.mock_example_gen import job as sim_job
    from stellarpop.components.nuisances import STRESS

    inst = readers.instrument_from_files()
    prep = templates.prepare(templates.load_library(), inst)
    out = {}
    for name, nuisances in STRESS.items():
        config = sim_job.SimConfig(n=n, seed=seed, priors=priors.Priors(mode="sdss"), nuisances=nuisances)
        raws = []
        for i in range(n):
            mock = sim_job.one_spectrum(i, config, prep, inst)
            try:
                prepared = spectra.prepare(mock.spectrum, preparation)
            except spectra.SpectrumError:
                continue
            raws.append(
                examples.to_example(prepared, truth={k: mock.truth[k] for k in F.LABEL_KEYS}).SerializeToString()
            )
        out[name] = (raws, examples.parse(raws, truth=True))
    return out


def raw_sigma(out: dict, calib: dict) -> np.ndarray:
    """(N, 4) the network's sigma before calibration."""
    widen = C.widening(out[F.OOD_SCORE])
    return np.stack([out[k + F.ERR_SUFFIX] / (widen * calib["interval_scale"][k]) for k in F.LABEL_KEYS], axis=1)


def residuals(out: dict, parsed: dict) -> np.ndarray:
    return np.stack([out[k] - parsed[F.TRUTH_PREFIX + k] for k in F.LABEL_KEYS], axis=1)


def fit_methods(out: dict, parsed: dict, calib: dict) -> dict[str, np.ndarray]:
    """{method: (4,) factor on its sigma} fitted on the calibration set (a score of 0: no widening)."""
    z = np.abs(residuals(out, parsed)) / raw_sigma(out, calib)
    scales = {"scale": C.interval_scales(z, np.zeros(len(z))), "widen+scale": C.interval_scales(z, out[F.OOD_SCORE])}
    return {"raw": np.ones(len(F.LABEL_KEYS))} | {m: np.array([s[k] for k in F.LABEL_KEYS]) for m, s in scales.items()}


def describe(out: dict, parsed: dict | None, calib: dict, factors: dict | None) -> dict:
    score = out[F.OOD_SCORE]
    row = {
        "n": int(len(score)),
        "score_median": float(np.median(score)),
        "score_p90": float(np.quantile(score, 0.9)),
        "flagged": float(np.mean(out[F.OOD_FLAG])),
    }
    if parsed is None:
        return row
    d, sigma = np.abs(residuals(out, parsed)), raw_sigma(out, calib)
    widen = {"raw": 1.0, "scale": 1.0, "widen+scale": C.widening(score)[:, None]}
    for method in METHODS:
        covered = d <= sigma * widen[method] * factors[method]
        row[method] = {k: float(np.mean(covered[:, i])) for i, k in enumerate(F.LABEL_KEYS)}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--calibration-set", required=True, help="folder of the held-out mocks the methods are fitted on")
    ap.add_argument("--set", action="append", default=[], help="NAME=FOLDER_GLOB of simulated Examples, repeatable")
    ap.add_argument("--stress", type=int, default=0, help="mocks per stress set (0: none)")
    ap.add_argument("--real", action="store_true", help="also score the real SDSS spectra")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    before = machine()
    predictor = pred.Predictor(args.model)
    calib = predictor.info.get("calibration")
    if not calib:
        raise SystemExit(f"{predictor.path}: not calibrated (no model_info.calibration)")
    raws, parsed = load(args.calibration_set, args.limit)
    out = predict_all(predictor, raws)
    factors = fit_methods(out, parsed, calib)
    table = {"calibration set": describe(out, parsed, calib, factors)}
    for item in args.set:
        name, folder = item.split("=", 1)
        raws, parsed = load(folder, args.limit)
        table[name] = describe(predict_all(predictor, raws), parsed, calib, factors)
    for name, (raws, parsed) in (stress_sets(args.stress, predictor.preparation) if args.stress else {}).items():
        table[name] = describe(predict_all(predictor, raws), parsed, calib, factors)
    if args.real:
        from real_sdss import default_files

        rows = pred.predict_files(default_files(), predictor)
        out = {k: np.array([r[k] for r in rows if not r["error"]]) for k in (F.OOD_SCORE, F.OOD_FLAG)}
        table["real SDSS"] = describe(out, None, calib, None) | {"scores": out[F.OOD_SCORE].round(2).tolist()}
    print(f"{predictor.path}: ood threshold {calib['ood_threshold']:.2f}; factors fitted on {args.calibration_set}")
    print(f"{'set':<28}{'n':>6}{'score med':>10}{'p90':>7}{'flagged':>8}  " + "  ".join(f"{m:>23}" for m in METHODS))
    for name, row in table.items():
        cover = "  ".join(
            "/".join(f"{row[m][k]:.2f}" for k in F.LABEL_KEYS) if m in row else f"{'':>19}" for m in METHODS
        )
        print(
            f"{name:<28}{row['n']:>6}{row['score_median']:>10.2f}{row['score_p90']:>7.2f}"
            f"{row['flagged']:>8.3f}  {cover}"
        )
    print("coverage per method: log_age/mh/ebv/vd")
    if args.out:
        write_result(
            args.out,
            {
                "model": predictor.path,
                "calibration_set": args.calibration_set,
                "factors": {m: f.tolist() for m, f in factors.items()},
                "table": table,
                "machine_before": before,
                "machine_after": machine(),
            },
            before,
        )


if __name__ == "__main__":
    main()
