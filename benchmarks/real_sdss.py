"""The network and the labeller's pPXF on real SDSS spectra: against SDSS's VDISP, against
each other (the paper's metric) and on repeat observations of one galaxy.

    .venv/bin/python benchmarks/real_sdss.py [FILE_OR_FOLDER ...] [--model PATH] [--out runs/bench-real]

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

Inputs are files or folders (searched recursively, as ``stellarpop predict`` resolves them,
``readers.inputs.resolve_inputs``). What is not a clean galaxy is skipped from every
statistic, counted and listed with its reason: unreadable files, CLASS other than GALAXY,
a spectrum id already seen (a renamed copy), and spectra outside the paper's sample
(``quality``: z range, ZWARNING, S/N). The galaxies are reported by kind (:func:`galaxy_kind`:
passive / emission-line / AGN from SDSS's SUBCLASS and the reader's BPT class), by the
reader's BPT class, by S/N_r, z and SDSS's VDISP (:func:`by_group`, statistics of
:func:`group_stats`), and the worst galaxies are listed (:func:`worst`).
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

from stellarpop.components import bpt, examples, ppxf_fit
from stellarpop.components.fits_example_gen import job as ingest_job
from stellarpop.components.portable import portable
from stellarpop.components.ppxf_labeler import job as label_job
from stellarpop.components.readers.inputs import resolve_inputs
from stellarpop.schema import features as F
from stellarpop.schema import model_contract as contract
from stellarpop.serving import predict as pred

PAIRS = (("0266-51602-0166", "0266-51630-0174"), ("0266-51602-0526", "0266-51630-0525"))  # same galaxy, two nights
PAPER = {"log_age": 0.11, "mh": 0.11, "ebv": 0.018, "vd": 31.0}  # network minus pPXF, clipped std (the paper)
TARGET = {"log_age": 0.08, "mh": 0.10, "ebv": 0.02}  # issue 10's targets for the same statistic
VDISP_RMS_TARGET = 15.0  # km/s, issue 10: rms of VD - VDISP
WHO = ("net", "ppxf")
KINDS = ("passive", "emission-line", "AGN")
VDISP_RANGE = (70.0, 450.0)  # km/s: SDSS's VDISP is not a measurement below ~70 (its resolution)
SNR_BINS = (("S/N <5", -math.inf, 5.0), ("S/N 5-10", 5.0, 10.0), ("S/N 10-20", 10.0, 20.0), ("S/N 20+", 20.0, math.inf))
Z_BINS = (("z <0.03", -math.inf, 0.03), ("z 0.03-0.1", 0.03, 0.1), ("z 0.1+", 0.1, math.inf))
VDISP_BINS = (("VDISP <70", 0.0, 70.0), ("VDISP 70-150", 70.0, 150.0), ("VDISP 150+", 150.0, math.inf))
NO_VDISP = "no VDISP"
N_WORST = 10


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
    return {
        **dataclasses.asdict(result),
        "seconds": seconds,
        "sdss_vdisp_err": spec.sdss_vdisp_err,
        "subclass": spec.subclass,
        "zwarning": spec.zwarning,
    }


def galaxy_kind(spec_class: str, subclass: str, bpt_class: str) -> tuple[str, str]:
    """(kind, what it was derived from) of a spectrum from what its file carries.

    ``subclass``: SDSS's SUBCLASS (DR8+: "STARFORMING", "STARBURST", "AGN", "BROADLINE" and
    combinations; DR7 spSpec: "GAL_EM" for SPEC_CLN 7), ``bpt_class``: the reader's class from
    SPZLINE (passive / star-forming / composite / AGN; "" without SPZLINE). AGN: SUBCLASS AGN,
    or a BPT class AGN, or a BROADLINE with measured narrow lines (BROADLINE on a spectrum
    without them, BPT passive, is SDSS's broad-line test on a passive galaxy: not counted).
    Emission-line: SUBCLASS STARFORMING / STARBURST / GAL_EM or a BPT class star-forming or
    composite. Passive: a galaxy with neither. Not a galaxy: "" (the caller skips it).
    """
    if spec_class and spec_class.upper() != "GALAXY":
        return "", f"CLASS {spec_class}"
    words = set((subclass or "").upper().replace(",", " ").split())
    bpt_class = bpt_class or ""
    src = "; ".join(
        x for x in (f"SUBCLASS {subclass}" if subclass else "", f"BPT {bpt_class}" if bpt_class else "") if x
    )
    src = src or "no SUBCLASS, no SPZLINE"
    if "AGN" in words or bpt_class == "AGN" or ("BROADLINE" in words and bpt_class not in ("", "passive")):
        return "AGN", src
    if words & {"STARFORMING", "STARBURST", "GAL_EM"} or bpt_class in ("star-forming", "composite"):
        return "emission-line", src
    return "passive", src


def skip_reason(row: dict, seen: dict[str, str]) -> str:
    """Why a row is left out of the galaxy statistics ('' when it is a clean galaxy). ``seen``:
    spectrum id -> the first file with it (updated: a later file with the id is a copy)."""
    if row["error"]:
        return "unreadable: " + row["error"].split(": ", 1)[-1]
    if row["class"] and row["class"].upper() != "GALAXY":
        return f"CLASS {row['class']}"
    sid = row["spec_id"]
    if sid and sid in seen:
        return f"duplicate of {os.path.basename(seen[sid])}"
    if sid:
        seen[sid] = row["file"]
    if row["quality"]:
        return f"outside the sample ({row['quality']})"
    return ""


def vdisp_excluded(row: dict) -> str:
    """Why a spectrum is left out of the VDISP statistics ('' when it is used): skipped, no
    VDISP, or a VDISP outside ``VDISP_RANGE`` (below it SDSS's VDISP is not a measurement)."""
    if row.get("skipped"):
        return "unreadable" if row["error"] else row["skipped"]
    if not (row["sdss_vdisp"] > 0 and row.get("sdss_vdisp_err", 1.0) > 0):
        return NO_VDISP
    lo, hi = VDISP_RANGE
    return "" if lo <= row["sdss_vdisp"] <= hi else f"VDISP {row['sdss_vdisp']:.0f} outside {lo:g}-{hi:g}"


def measure(files: list[str], predictor: pred.Predictor, fitter: ppxf_fit.Fitter) -> list[dict]:
    """One row per file: predict's row with ``net`` and ``ppxf`` {key, key_err} added."""
    rows = pred.predict_files(files, predictor)
    keys = F.LABEL_KEYS + F.LABEL_ERR_KEYS
    seen: dict[str, str] = {}
    for row in rows:
        fit = fit_file(row["file"], fitter)
        row["sdss_vdisp_err"] = fit.pop("sdss_vdisp_err", math.nan)
        row["subclass"] = fit.pop("subclass", "")
        row["zwarning"] = fit.pop("zwarning", None)
        row["net"] = {k: row.pop(k) for k in keys}
        row["ppxf"] = {k: fit.get(k, math.nan) for k in keys + ("chi2", "status", "message", "seconds")}
        row["kind"], row["kind_from"] = (
            ("", "") if row["error"] else galaxy_kind(row["class"], row["subclass"], row["bpt_class"])
        )
        row["skipped"] = skip_reason(row, seen)
        row["vdisp_excluded"] = vdisp_excluded(row)
    return rows


def _values(rows: list[dict], who: str, key: str) -> np.ndarray:
    """``key`` of ``who`` per row; NaN where pPXF's fit is not ok (never a label then)."""
    return np.array([r[who][key] if who == "net" or r["ppxf"]["status"] == ppxf_fit.OK else math.nan for r in rows])


def summarise(rows: list[dict]) -> dict:
    """VD - VDISP, network minus pPXF and the repeat pairs (see the module docstring) over the
    galaxies that are not skipped; the same by group, the worst galaxies and the skipped files."""
    galaxies = [r for r in rows if not r.get("skipped")]
    used = [r for r in galaxies if not r["vdisp_excluded"]]
    vdisp = np.array([r["sdss_vdisp"] for r in used])
    out = {"vd_minus_vdisp": {}, "net_minus_ppxf": {}, "pairs": pairs(rows)}
    for who in WHO:
        d = _values(used, who, F.VD) - vdisp
        mean, std = clipped(d)
        out["vd_minus_vdisp"][who] = {
            "n": int(np.isfinite(d).sum()),
            "rms": float(np.sqrt(np.nanmean(d**2))) if np.isfinite(d).any() else math.nan,
            "clipped_mean": mean,
            "clipped_std": std,
            "target_rms": VDISP_RMS_TARGET,
        }
    for k in F.LABEL_KEYS:
        d = _values(galaxies, "net", k) - _values(galaxies, "ppxf", k)
        mean, std = clipped(d)
        out["net_minus_ppxf"][k] = {
            "n": int(np.isfinite(d).sum()),
            "clipped_mean": mean,
            "clipped_std": std,
            "paper": PAPER[k],
            "target": TARGET.get(k, math.nan),
        }
    out.update(by_group(galaxies))
    out["worst"] = worst(galaxies)
    out["skipped"] = skipped(rows)
    out["kinds"] = [
        {"file": r["file"], "spec_id": r["spec_id"], "kind": r["kind"], "from": r["kind_from"], "skipped": r["skipped"]}
        for r in rows
    ]
    return out


def _num(value) -> float:
    return math.nan if value is None else float(value)


def _mean_rms_std(d: np.ndarray) -> dict:
    d = d[np.isfinite(d)]
    if not d.size:
        return {"n": 0, "mean": math.nan, "rms": math.nan, "std": math.nan}
    return {
        "n": int(d.size),
        "mean": float(d.mean()),
        "rms": float(np.sqrt(np.mean(d**2))),
        "std": float(d.std(ddof=1)) if d.size > 1 else math.nan,
    }


def _rate(flags: np.ndarray) -> float:
    return float(flags.mean()) if flags.size else math.nan


def group_stats(rows: list[dict]) -> dict:
    """The statistics of one group of galaxy rows.

    ``vd_minus_vdisp``: network and pPXF VD - SDSS VDISP (n, mean, rms) over VDISP in
    ``VDISP_RANGE``; ``net_minus_ppxf``: per parameter n, mean, std (plain, not clipped: the
    groups are small); ``coverage_68``: per parameter and pooled, the fraction of galaxies whose
    pPXF value lies inside the network's 68% interval (value +- its 1-sigma ``_err``);
    ``beyond_3sigma``: the fraction with |network - pPXF| > 3 network sigma, per parameter,
    pooled over parameters and ``any`` (a galaxy with at least one); ``ood_flag_rate``: the
    fraction the network flags out of its domain (over rows whose model has the flag). Only pPXF
    fits with status ``ok`` count.
    """
    out: dict = {"n": len(rows), "vd_minus_vdisp": {}, "net_minus_ppxf": {}, "coverage_68": {}, "beyond_3sigma": {}}
    vdisp = np.array([_num(r["sdss_vdisp"]) for r in rows])
    in_range = (vdisp >= VDISP_RANGE[0]) & (vdisp <= VDISP_RANGE[1])
    for who in WHO:
        d = _values(rows, who, F.VD) - vdisp
        out["vd_minus_vdisp"][who] = {k: v for k, v in _mean_rms_std(d[in_range]).items() if k != "std"}
    inside, beyond = [], []
    any_beyond = np.zeros(len(rows), bool)
    for k in F.LABEL_KEYS:
        net, ppxf = _values(rows, "net", k), _values(rows, "ppxf", k)
        sigma = _values(rows, "net", k + F.ERR_SUFFIX)
        d = net - ppxf
        out["net_minus_ppxf"][k] = {key: v for key, v in _mean_rms_std(d).items() if key != "rms"}
        ok = np.isfinite(d) & np.isfinite(sigma) & (sigma > 0)
        inside.append(np.abs(d[ok]) <= sigma[ok])
        beyond.append(np.abs(d[ok]) > 3 * sigma[ok])
        any_beyond[ok] |= beyond[-1]
        out["coverage_68"][k] = _rate(inside[-1])
        out["beyond_3sigma"][k] = _rate(beyond[-1])
    out["coverage_68"]["pooled"] = _rate(np.concatenate(inside))
    out["beyond_3sigma"]["pooled"] = _rate(np.concatenate(beyond))
    out["beyond_3sigma"]["any"] = float(any_beyond.mean()) if rows else math.nan
    flags = np.array([bool(r[F.OOD_FLAG]) for r in rows if r.get(F.OOD_FLAG) is not None])
    out["ood_flag_rate"] = _rate(flags)
    return out


def _bin(value: float, bins) -> str:
    return next((name for name, lo, hi in bins if lo <= value < hi), "")


def group_of(row: dict) -> dict[str, str]:
    """The groups a galaxy row falls in: by kind, BPT class, S/N_r, z and SDSS's VDISP."""
    vdisp = _num(row["sdss_vdisp"])
    return {
        "by_kind": row["kind"] or "unknown",
        "by_bpt_class": row["bpt_class"] or "no SPZLINE",
        "by_snr": _bin(_num(row["snr_r"]), SNR_BINS) or "S/N unknown",
        "by_z": _bin(_num(row["z"]), Z_BINS) or "z unknown",
        "by_vdisp": (_bin(vdisp, VDISP_BINS) if vdisp > 0 else "") or NO_VDISP,
    }


GROUP_ORDER = {
    "by_kind": KINDS + ("unknown",),
    "by_bpt_class": bpt.CLASSES + ("no SPZLINE",),
    "by_snr": tuple(b[0] for b in SNR_BINS) + ("S/N unknown",),
    "by_z": tuple(b[0] for b in Z_BINS) + ("z unknown",),
    "by_vdisp": tuple(b[0] for b in VDISP_BINS) + (NO_VDISP,),
}


def by_group(rows: list[dict]) -> dict:
    """{"all_galaxies": stats, "by_kind": {kind: stats}, "by_bpt_class", "by_snr", "by_z",
    "by_vdisp": ...} of galaxy rows (:func:`group_stats`); a group appears when it has a row,
    the kinds always (n = 0 when empty)."""
    out: dict = {"all_galaxies": group_stats(rows)}
    member = [group_of(r) for r in rows]
    for by, order in GROUP_ORDER.items():
        names = [g for g in order if (by == "by_kind" and g != "unknown") or any(m[by] == g for m in member)]
        out[by] = {g: group_stats([r for r, m in zip(rows, member) if m[by] == g]) for g in names}
    return out


def _worst_entry(r: dict) -> dict:
    n = r["net"]
    ratios = {}
    for k in F.LABEL_KEYS:
        d = _values([r], "net", k)[0] - _values([r], "ppxf", k)[0]
        ratios[k] = d / n[k + F.ERR_SUFFIX] if n[k + F.ERR_SUFFIX] and n[k + F.ERR_SUFFIX] > 0 else math.nan
    finite = {k: v for k, v in ratios.items() if np.isfinite(v)}
    key = max(finite, key=lambda k: abs(finite[k])) if finite else ""
    vdisp = _num(r["sdss_vdisp"])
    in_range = VDISP_RANGE[0] <= vdisp <= VDISP_RANGE[1]
    return {
        "file": os.path.basename(r["file"]),
        "spec_id": r["spec_id"],
        "kind": r["kind"],
        "snr_r": _num(r["snr_r"]),
        "z": _num(r["z"]),
        "sdss_vdisp": vdisp,
        "net_vd": n[F.VD],
        "net_vd_err": n[F.VD + F.ERR_SUFFIX],
        "ppxf_vd": _values([r], "ppxf", F.VD)[0],
        "net_vd_minus_vdisp": n[F.VD] - vdisp if in_range else math.nan,
        "ppxf_vd_minus_vdisp": _values([r], "ppxf", F.VD)[0] - vdisp if in_range else math.nan,
        "net_minus_ppxf_over_sigma": ratios,
        "worst_parameter": key,
        "worst_ratio": finite.get(key, math.nan),
    }


def worst(rows: list[dict], n: int = N_WORST) -> dict:
    """The ``n`` galaxies with the largest |network VD - VDISP| (VDISP in ``VDISP_RANGE``) and
    the ``n`` with the largest |network - pPXF| / network sigma over the four parameters."""
    entries = [_worst_entry(r) for r in rows]

    def top(key):
        have = [e for e in entries if np.isfinite(e[key])]
        return sorted(have, key=lambda e: -abs(e[key]))[:n]

    return {"by_vd_minus_vdisp": top("net_vd_minus_vdisp"), "by_net_minus_ppxf_sigma": top("worst_ratio")}


def skipped(rows: list[dict]) -> dict:
    """The rows left out of the galaxy statistics: their number per reason and the list."""
    listed = [{"file": r["file"], "spec_id": r["spec_id"], "reason": r["skipped"]} for r in rows if r.get("skipped")]
    counts: dict[str, int] = {}
    for e in listed:
        kind = e["reason"].split(":")[0].split(" (")[0]
        kind = "duplicate" if kind.startswith("duplicate of") else kind
        counts[kind] = counts.get(kind, 0) + 1
    return {"n": len(listed), "by_reason": counts, "files": listed}


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
        f"{'spec_id':<16} {'kind':<13} {'z':>6} {'S/N':>5} {'VDISP':>12} {'net VD':>12} {'pPXF VD':>12} "
        f"{'age net/pPXF':>13} {'[M/H] net/pPXF':>15} {'E(B-V) net/pPXF':>15}  pPXF status; quality"
    )
    for r in rows:
        n, p = r["net"], r["ppxf"]
        z, snr, vdisp = (math.nan if r[k] is None else r[k] for k in ("z", "snr_r", "sdss_vdisp"))  # None: unreadable
        print(
            f"{r['spec_id'] or os.path.basename(r['file']):<16} {r.get('kind') or '-':<13} {z:>6.4f} {snr:>5.1f} "
            f"{vdisp:>6.1f}+-{r['sdss_vdisp_err']:<4.1f} {n['vd']:>6.1f}+-{n['vd_err']:<4.1f} "
            f"{p['vd']:>6.1f}+-{p['vd_err']:<4.1f} {n['log_age']:>6.3f}/{p['log_age']:<6.3f} "
            f"{n['mh']:>+7.3f}/{p['mh']:<+7.3f} {n['ebv']:>7.3f}/{p['ebv']:<7.3f}  "
            f"{p['status']}{' (' + p['message'] + ')' if p['message'] else ''}; {r['quality'] or '-'}"
            f"{'; skipped: ' + r['skipped'] if r.get('skipped') else ''}"
        )


def _pair_cell(key: str, c: dict) -> str:
    d = DECIMALS[key]
    return f"{key} {c['diff']:+.{d}f}/{c['sigma']:.{d}f} = {c['ratio']:+5.2f}{'' if c['within_1sigma'] else '*'}"


def print_summary(rows: list[dict], s: dict) -> None:
    excluded = [
        f"{r['spec_id'] or r['file']} ({r['vdisp_excluded']})"
        for r in rows
        if r["vdisp_excluded"] and not r.get("skipped")
    ]
    print(
        f"\nVD - SDSS VDISP (km/s), galaxies (not skipped: see below) with a VDISP {VDISP_RANGE[0]:g}-"
        f"{VDISP_RANGE[1]:g}; left out: {', '.join(excluded) or 'none'}"
    )
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
    if t:
        print(f"pPXF: {np.mean(t):.2f} s per fit on one core (median {np.median(t):.2f}, max {np.max(t):.2f})")
    print_groups(s)
    print_worst(s["worst"])
    print_skipped(s["skipped"])


def _f(value: float, fmt: str, width: int) -> str:
    return (f"{'-'}" if value is None or not np.isfinite(value) else format(value, fmt)).rjust(width)


def print_groups(s: dict) -> None:
    """Two tables, one row per group: VD - VDISP, coverage, flags; network minus pPXF."""
    lo, hi = VDISP_RANGE
    groups = [("all galaxies", s["all_galaxies"])]
    for by in GROUP_ORDER:
        groups += [("BPT " + name if by == "by_bpt_class" else name, g) for name, g in s[by].items()]
    print(
        f"\nBy group (galaxies only). VD - VDISP over VDISP {lo:g}-{hi:g} km/s: n, mean, rms; cov68: fraction of "
        "pPXF values inside the network's 68% interval; >3sig: |net - pPXF| > 3 network sigma; ood: flag rate"
    )
    params = F.LABEL_KEYS
    print(
        f"  {'group':<17} {'n':>3} | {'nVD':>3} {'net mean':>8} {'rms':>6} {'pPXF mean':>9} {'rms':>6} | "
        + " ".join(f"{'cov ' + k:>10}" for k in params)
        + f" {'cov all':>7} | {'>3sig':>5} {'any':>5} | {'ood':>5}"
    )
    for name, g in groups:
        v = g["vd_minus_vdisp"]
        print(
            f"  {name:<17} {g['n']:>3} | {v['net']['n']:>3} {_f(v['net']['mean'], '+.1f', 8)} "
            f"{_f(v['net']['rms'], '.1f', 6)} {_f(v['ppxf']['mean'], '+.1f', 9)} {_f(v['ppxf']['rms'], '.1f', 6)} | "
            + " ".join(_f(g["coverage_68"][k], ".2f", 10) for k in params)
            + f" {_f(g['coverage_68']['pooled'], '.2f', 7)} | {_f(g['beyond_3sigma']['pooled'], '.2f', 5)} "
            f"{_f(g['beyond_3sigma']['any'], '.2f', 5)} | {_f(g['ood_flag_rate'], '.2f', 5)}"
        )
    print("network minus pPXF by group (kind, BPT class, S/N, z, VDISP): mean / std (plain, not clipped)")
    print(f"  {'group':<17} {'n':>3} | " + " | ".join(f"{k:^17}" for k in params))
    for name, g in groups:
        cells = []
        for k in params:
            d, w = g["net_minus_ppxf"][k], DECIMALS[k]
            cells.append(f"{_f(d['mean'], f'+.{w}f', 8)}/{_f(d['std'], f'.{w}f', 8)}")
        print(f"  {name:<17} {g['n']:>3} | " + " | ".join(cells))


def print_worst(w: dict) -> None:
    head = (
        f"  {'file':<38} {'kind':<13} {'S/N':>5} {'z':>6} {'VDISP':>5} {'net VD':>12} {'pPXF VD':>7} "
        f"{'net-VDISP':>9} {'worst (net-pPXF)/sig':>21}"
    )
    for key, title in (
        ("by_vd_minus_vdisp", "|network VD - VDISP|"),
        ("by_net_minus_ppxf_sigma", "|network - pPXF| / sigma"),
    ):
        print(f"worst {len(w[key])} by {title}")
        print(head)
        for e in w[key]:
            print(
                f"  {e['file']:<38} {e['kind']:<13} {_f(e['snr_r'], '.1f', 5)} {_f(e['z'], '.4f', 6)} "
                f"{_f(e['sdss_vdisp'], '.0f', 5)} {_f(e['net_vd'], '.1f', 6)}+-{_f(e['net_vd_err'], '.1f', 4)} "
                f"{_f(e['ppxf_vd'], '.1f', 7)} {_f(e['net_vd_minus_vdisp'], '+.1f', 9)} "
                f"{e['worst_parameter']:>8} {_f(e['worst_ratio'], '+.2f', 12)}"
            )


def print_skipped(sk: dict) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in sk["by_reason"].items()) or "none"
    print(f"skipped: {sk['n']} ({counts})")
    for e in sk["files"]:
        print(f"  {os.path.basename(e['file']):<38} {e['spec_id'] or '-':<18} {e['reason']}")


def model_meta(predictor: pred.Predictor) -> dict:
    """The model's folder, its version (the numbered folder's name) and its model_info.json."""
    info_path = Path(predictor.path, contract.MODEL_INFO_FILE)
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return {"model": predictor.path, "model_version": os.path.basename(predictor.path.rstrip("/")), "model_info": info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="SavedModel or numbered-version folder (default: the shipped one)")
    ap.add_argument("inputs", nargs="*", help="spectrum files or folders (default: see the module docstring)")
    ap.add_argument("--files", nargs="+", default=[], help="spectrum files or folders, as the positional inputs")
    ap.add_argument("--out", default="runs/bench-real")
    args = ap.parse_args()

    inputs = args.inputs + args.files
    files, unresolved = resolve_inputs(inputs) if inputs else (default_files(), [])
    for u in unresolved:
        print(f"skipped input {u.file}: {u.message}")
    if not files:
        ap.error("no spectrum files in " + " ".join(inputs))
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
    os.makedirs(args.out, exist_ok=True)
    summary["skipped"]["unresolved_inputs"] = [dataclasses.asdict(u) for u in unresolved]
    result = {**meta, "fit_config": json.loads(fitter.config.to_json()), "files": files, "rows": rows, **summary}
    with open(os.path.join(args.out, "real_sdss.json"), "w") as fh:  # first: a printing error loses no fit
        json.dump(portable(result), fh, indent=2, default=float)
    print_rows(rows)
    print_summary(rows, summary)
    print(f"wrote {os.path.join(args.out, 'real_sdss.json')}")


if __name__ == "__main__":
    main()
