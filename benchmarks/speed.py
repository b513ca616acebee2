"""Serving speed of several exports side by side: interleaved rounds in one process, so that
their ratio holds on a shared, noisy machine.

    .venv/bin/python benchmarks/speed.py --test runs/mocks-sdss-20k/examples/Split-test \
        v6=path/to/export v7=serving/models/default/7

Spectra per second from serialized Examples through ``serving_default`` (batch 512), each
model timed ``--rounds`` times for ``--seconds`` in turn; the best round is kept. Prints the
load average before and after.
"""

from __future__ import annotations

import argparse

from model_vs_truth import load, speed  # benchmarks/, beside this script
from ppxf_vs_truth import machine

from stellarpop.serving import predict as pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test", required=True, help="folder of gzipped Examples (the first 512 are used)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("models", nargs="+", help="NAME=EXPORT")
    args = ap.parse_args()
    before = machine()
    raws, _ = load(args.test, limit=512)
    predictors = {name: pred.Predictor(path) for name, path in (m.split("=", 1) for m in args.models)}
    rates: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(args.rounds):
        for name, predictor in predictors.items():
            rates[name].append(speed(predictor, raws, 512, args.seconds))
    for name, r in rates.items():
        print(f"{name:10s} " + " ".join(f"{x:7.0f}" for x in r) + f"   best {max(r):.0f} spectra/s")
    print("load before:", before["uptime"], "\nload after: ", machine()["uptime"])


if __name__ == "__main__":
    main()
