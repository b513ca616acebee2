"""benchmarks/real_sdss.py: kinds, skips and the per-group statistics, on hand-made rows (no
../shared, no model, no pPXF fit)."""

import json
import math
import sys
from pathlib import Path

import pytest

from stellarpop.components import ppxf_fit
from stellarpop.schema import features as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import real_sdss  # noqa: E402  (a script folder, not a package)

ERR = {"log_age": 0.1, "mh": 0.1, "ebv": 0.02, "vd": 10.0}


def _row(
    name,
    *,
    vd=200.0,
    ppxf_vd=200.0,
    vdisp=200.0,
    snr=30.0,
    z=0.05,
    cls="GALAXY",
    subclass="",
    bpt_class="passive",
    ood=False,
    status=ppxf_fit.OK,
    error="",
    quality="",
    spec_id=None,
    offset=None,
):
    """A row as ``measure`` makes it: the network at ``vd`` and pPXF at ``ppxf_vd``, the other
    parameters differing by ``offset`` (in network sigmas, default 0)."""
    offset = offset or {}
    net = {k: 0.5 for k in F.LABEL_KEYS} | {"vd": vd}
    net |= {k + F.ERR_SUFFIX: ERR[k] for k in F.LABEL_KEYS}
    ppxf = {k: net[k] - offset.get(k, 0.0) * ERR[k] for k in F.LABEL_KEYS} | {"vd": ppxf_vd}
    ppxf |= {k + F.ERR_SUFFIX: 0.01 for k in F.LABEL_KEYS} | {"status": status, "message": "", "seconds": 0.3}
    row = {
        "file": f"/data/{name}.fits",
        "spec_id": spec_id if spec_id is not None else name,
        "z": z,
        "snr_r": snr,
        "class": cls,
        "subclass": subclass,
        "bpt_class": bpt_class,
        "sdss_vdisp": vdisp,
        "sdss_vdisp_err": 5.0,
        "quality": quality,
        "error": error,
        F.OOD_FLAG: ood,
        "net": net,
        "ppxf": ppxf,
    }
    row["kind"], row["kind_from"] = ("", "") if error else real_sdss.galaxy_kind(cls, subclass, bpt_class)
    return row


def _finish(rows):
    seen = {}
    for r in rows:
        r["skipped"] = real_sdss.skip_reason(r, seen)
        r["vdisp_excluded"] = real_sdss.vdisp_excluded(r)
    return rows


@pytest.mark.parametrize(
    "cls, subclass, bpt_class, kind",
    [
        ("GALAXY", "", "passive", "passive"),
        ("GALAXY", "", "", "passive"),  # DR7 spSpec SPEC_CLN 2: no emission-line subclass, no SPZLINE
        ("GALAXY", "GAL_EM", "", "emission-line"),  # DR7 SPEC_CLN 7
        ("GALAXY", "STARFORMING", "star-forming", "emission-line"),
        ("GALAXY", "STARBURST", "star-forming", "emission-line"),
        ("GALAXY", "STARFORMING", "composite", "emission-line"),
        ("GALAXY", "", "composite", "emission-line"),
        ("GALAXY", "AGN", "AGN", "AGN"),
        ("GALAXY", "AGN", "star-forming", "AGN"),
        ("GALAXY", "STARFORMING", "AGN", "AGN"),
        ("GALAXY", "STARBURST BROADLINE", "star-forming", "AGN"),
        ("GALAXY", "BROADLINE", "passive", "passive"),  # SDSS's broad-line flag on a passive galaxy
        ("", "", "passive", "passive"),  # a file without CLASS
        ("QSO", "AGN BROADLINE", "AGN", ""),
        ("STAR", "A0", "passive", ""),
    ],
)
def test_the_kind_comes_from_subclass_and_bpt_class(cls, subclass, bpt_class, kind):
    got, source = real_sdss.galaxy_kind(cls, subclass, bpt_class)
    assert got == kind
    assert source


def test_skips_name_their_reason_and_keep_the_first_of_a_renamed_copy():
    rows = _finish(
        [
            _row("good"),
            _row("broken", error="/data/broken.fits: FITS file has no COADD table", spec_id=""),
            _row("qso", cls="QSO"),
            _row("copy", spec_id="good"),
            _row("highz", z=0.6, quality="z_range,snr_r"),
        ]
    )
    reasons = [r["skipped"] for r in rows]
    assert reasons[0] == ""
    assert reasons[1] == "unreadable: FITS file has no COADD table"
    assert reasons[2] == "CLASS QSO"
    assert reasons[3] == "duplicate of good.fits"
    assert reasons[4] == "outside the sample (z_range,snr_r)"
    sk = real_sdss.skipped(rows)
    assert sk["n"] == 4
    assert sk["by_reason"] == {"unreadable": 1, "CLASS QSO": 1, "duplicate": 1, "outside the sample": 1}
    assert [r["vdisp_excluded"] for r in rows] == ["", "unreadable", "CLASS QSO", "duplicate of good.fits", reasons[4]]


def test_group_statistics_of_hand_made_rows():
    rows = [
        _row("a", vd=210, ppxf_vd=205, vdisp=200, ood=True),  # net - pPXF 5 = 0.5 sigma: inside
        _row("b", vd=180, ppxf_vd=220, vdisp=200),  # 40 = 4 sigma: outside, beyond 3 sigma
        _row("c", vd=60, ppxf_vd=40, vdisp=30),  # VDISP below 70: not in VD - VDISP; 2 sigma
        _row("d", vd=100, ppxf_vd=999, vdisp=100, status=ppxf_fit.FAILED),  # pPXF failed: no pPXF value
    ]
    g = real_sdss.group_stats(rows)
    assert g["n"] == 4
    net, ppxf = g["vd_minus_vdisp"]["net"], g["vd_minus_vdisp"]["ppxf"]
    assert net["n"] == 3 and net["mean"] == pytest.approx((10 - 20 + 0) / 3)
    assert net["rms"] == pytest.approx(math.sqrt((100 + 400 + 0) / 3))
    assert ppxf["n"] == 2 and ppxf["mean"] == pytest.approx(12.5) and ppxf["rms"] == pytest.approx(math.sqrt(212.5))
    d = g["net_minus_ppxf"]["vd"]
    assert d["n"] == 3 and d["mean"] == pytest.approx((5 - 40 + 20) / 3)
    assert d["std"] == pytest.approx(float(__import__("numpy").std([5, -40, 20], ddof=1)))
    assert g["net_minus_ppxf"]["log_age"] == {"n": 3, "mean": 0.0, "std": 0.0}
    assert g["coverage_68"]["vd"] == pytest.approx(1 / 3)
    assert g["coverage_68"]["log_age"] == 1.0
    assert g["coverage_68"]["pooled"] == pytest.approx((1 + 3 * 3) / 12)
    assert g["beyond_3sigma"]["vd"] == pytest.approx(1 / 3)
    assert g["beyond_3sigma"]["pooled"] == pytest.approx(1 / 12)
    assert g["beyond_3sigma"]["any"] == pytest.approx(1 / 4)
    assert g["ood_flag_rate"] == pytest.approx(1 / 4)


def test_an_empty_group_and_a_model_without_the_ood_flag_give_nan_not_errors():
    empty = real_sdss.group_stats([])
    assert empty["n"] == 0 and math.isnan(empty["vd_minus_vdisp"]["net"]["rms"])
    assert math.isnan(empty["coverage_68"]["pooled"]) and math.isnan(empty["ood_flag_rate"])
    g = real_sdss.group_stats([_row("a", ood=None)])
    assert math.isnan(g["ood_flag_rate"]) and g["coverage_68"]["pooled"] == 1.0


def test_groups_by_kind_snr_z_and_vdisp():
    rows = [
        _row("p1", snr=7, z=0.02, vdisp=50),
        _row("p2", snr=15, z=0.05, vdisp=100),
        _row("sf", snr=25, z=0.2, vdisp=200, subclass="STARBURST", bpt_class="star-forming"),
        _row("nov", snr=25, z=0.03, vdisp=0.0, bpt_class=""),
    ]
    out = real_sdss.by_group(rows)
    n = {by: {name: g["n"] for name, g in out[by].items()} for by in real_sdss.GROUP_ORDER}
    assert out["all_galaxies"]["n"] == 4
    assert n["by_kind"] == {"passive": 3, "emission-line": 1, "AGN": 0}  # every kind, even an empty one
    assert n["by_snr"] == {"S/N 5-10": 1, "S/N 10-20": 1, "S/N 20+": 2}
    assert n["by_z"] == {"z <0.03": 1, "z 0.03-0.1": 2, "z 0.1+": 1}  # 0.03 is in the middle bin
    assert n["by_vdisp"] == {"VDISP <70": 1, "VDISP 70-150": 1, "VDISP 150+": 1, "no VDISP": 1}
    assert n["by_bpt_class"] == {"passive": 2, "star-forming": 1, "no SPZLINE": 1}


def test_worst_lists_put_the_largest_differences_first():
    rows = [
        _row("small", vd=205, ppxf_vd=204, vdisp=200),
        _row("big", vd=300, ppxf_vd=299, vdisp=200, snr=12, z=0.11, subclass="AGN", bpt_class="AGN"),
        _row("low", vd=20, ppxf_vd=21, vdisp=30),  # VDISP < 70: not ranked against VDISP
        _row("mh_off", vd=201, ppxf_vd=201, vdisp=200, offset={"mh": -6.0}),
    ]
    w = real_sdss.worst(rows, n=2)
    first = w["by_vd_minus_vdisp"][0]
    assert [e["file"] for e in w["by_vd_minus_vdisp"]] == ["big.fits", "small.fits"]
    assert first["kind"] == "AGN" and first["snr_r"] == 12 and first["z"] == 0.11 and first["sdss_vdisp"] == 200
    assert (first["net_vd"], first["net_vd_err"], first["ppxf_vd"], first["net_vd_minus_vdisp"]) == (300, 10, 299, 100)
    top = w["by_net_minus_ppxf_sigma"][0]
    assert top["file"] == "mh_off.fits" and top["worst_parameter"] == "mh" and top["worst_ratio"] == pytest.approx(-6)


def test_summarise_leaves_skipped_files_out_and_keeps_the_old_keys():
    rows = _finish(
        [
            _row("spec-0266-51602-0001", vd=210, ppxf_vd=200, vdisp=200),
            _row("star-forming", vd=90, ppxf_vd=80, vdisp=85, subclass="STARFORMING", bpt_class="star-forming"),
            _row("tiny", vd=40, ppxf_vd=35, vdisp=19, subclass="STARBURST", bpt_class="star-forming"),
            _row("qso", vd=500, ppxf_vd=100, vdisp=0, cls="QSO", subclass="BROADLINE"),
            _row("broken", error="/data/broken.fits: not a spectrum", spec_id=""),
        ]
    )
    for r in rows[-1:]:
        r["net"] = {k: math.nan for k in r["net"]}
        r["ppxf"] |= {k: math.nan for k in F.LABEL_KEYS} | {"status": ppxf_fit.FAILED}
    s = real_sdss.summarise(rows)
    for key in ("vd_minus_vdisp", "net_minus_ppxf", "pairs"):  # what docs/default_model_real_sdss.json readers use
        assert key in s
    assert s["vd_minus_vdisp"]["net"]["n"] == 2  # VDISP 19 and the QSO are left out
    assert s["vd_minus_vdisp"]["net"]["rms"] == pytest.approx(math.sqrt((100 + 25) / 2))
    assert s["net_minus_ppxf"]["vd"]["n"] == 3
    assert s["all_galaxies"]["n"] == 3 and s["by_kind"]["emission-line"]["n"] == 2
    assert s["skipped"]["n"] == 2 and {e["reason"] for e in s["skipped"]["files"]} == {
        "CLASS QSO",
        "unreadable: not a spectrum",
    }
    assert [k["kind"] for k in s["kinds"]] == ["passive", "emission-line", "emission-line", "", ""]
    json.dumps(s, default=float)  # the JSON the script writes
    real_sdss.print_groups(s)
    real_sdss.print_worst(s["worst"])
    real_sdss.print_skipped(s["skipped"])
