"""The BPT class of a spectrum: ``bpt.classify`` at known points of the [NII] diagram and at
the S/N limit, and the class the SDSS reader gives real spec files, against the ratios
worked out here from their SPZLINE tables with astropy's standard API."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from make_test_data import REAL_SDSS  # tests/data, on the path (tests/conftest.py)

from stellarpop.components import bpt, readers
from stellarpop.components.readers import sdss

LINES = ("H_beta", "[O_III] 5007", "H_alpha", "[N_II] 6583")


def _lines(log_nii_ha: float, log_oiii_hb: float, snr: float = 20.0, halpha: float = 300.0):
    """Fluxes and errors of the four lines at a point of the diagram, each at S/N ``snr``."""
    hbeta = halpha / 2.86  # case B
    fluxes = {
        "H_alpha": halpha,
        "[N_II] 6583": halpha * 10**log_nii_ha,
        "H_beta": hbeta,
        "[O_III] 5007": hbeta * 10**log_oiii_hb,
    }
    return fluxes, {k: v / snr for k, v in fluxes.items()}


@pytest.mark.parametrize(
    "x, y, expected",
    [
        (-0.6, -0.3, "star-forming"),  # below Kauffmann et al. (2003): -1.30 + 0.61/(x-0.05) = 0.36
        (-1.0, 0.5, "star-forming"),  # a low-metallicity HII region, high [OIII]/Hbeta
        (-0.2, 0.0, "composite"),  # above Kauffmann (-1.14), below Kewley et al. (2001) (0.28)
        (0.1, -1.5, "composite"),  # right of Kauffmann's asymptote, below Kewley (-0.46)
        (0.0, 0.8, "AGN"),  # above Kewley (-0.11): a Seyfert
        (0.3, -0.2, "AGN"),  # above Kewley (-2.40): a LINER
        (0.6, -1.0, "AGN"),  # right of Kewley's asymptote (0.47)
    ],
)
def test_classify_known_points(x, y, expected):
    fluxes, errors = _lines(x, y)
    assert bpt.classify(fluxes, errors) == expected
    # Ratios only: the flux unit does not matter.
    assert bpt.classify({k: 1e3 * v for k, v in fluxes.items()}, {k: 1e3 * v for k, v in errors.items()}) == expected


def _weaken(line: str, snr: float | None = None, error: float | None = None, flux: float | None = None):
    fluxes, errors = _lines(-0.6, -0.3)  # star-forming when every line is strong
    if snr is not None:
        errors[line] = fluxes[line] / snr
    if error is not None:
        errors[line] = error
    if flux is not None:
        fluxes[line] = flux
    return fluxes, errors


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize(
    "change",
    [
        dict(snr=2.9),
        dict(snr=3.0),  # S/N must exceed 3 (Brinchmann et al. 2004)
        dict(error=-2.0),  # SDSS: a negative error is an invalid fit
        dict(error=0.0),
        dict(flux=math.nan),
        dict(flux=-50.0),  # absorption left over by the template: negative S/N
    ],
)
def test_a_weak_or_unmeasured_line_is_passive(line, change):
    assert bpt.classify(*_weaken(line, **change)) == "passive"


@pytest.mark.parametrize("line", LINES)
def test_a_missing_line_is_passive_and_min_snr_is_a_parameter(line):
    fluxes, errors = _lines(-0.6, -0.3)
    del fluxes[line]
    assert bpt.classify(fluxes, errors) == "passive"
    weak = _weaken(line, snr=2.9)
    assert bpt.classify(*weak, min_snr=2.5) == "star-forming"
    assert bpt.classify(*_weaken(line, snr=3.01)) == "star-forming"


def test_every_answer_is_a_class():
    rng = np.random.default_rng(3)
    for _ in range(200):
        fluxes, errors = _lines(rng.uniform(-2, 1), rng.uniform(-1.5, 1.5), snr=rng.uniform(0, 10))
        assert bpt.classify(fluxes, errors) in bpt.CLASSES


# --- The reader on real SDSS files --------------------------------------------------------------
def _expected_from_spzline(path) -> tuple[str, dict]:
    """The class worked out independently: SPZLINE read by astropy's Table, S/N > 3 in each
    line, Kauffmann (2003) and Kewley (2001) curves written out here."""
    with fits.open(path) as hdul:
        lines = Table(hdul["SPZLINE"].data)
    row = {name.strip(): r for name, r in zip(lines["LINENAME"], lines)}
    flux = {k: float(row[k]["LINEAREA"]) for k in LINES}
    err = {k: float(row[k]["LINEAREA_ERR"]) for k in LINES}
    if not all(err[k] > 0 and flux[k] / err[k] > 3 for k in LINES):
        return "passive", flux
    x = math.log10(flux["[N_II] 6583"] / flux["H_alpha"])
    y = math.log10(flux["[O_III] 5007"] / flux["H_beta"])
    if x < 0.05 and y < 0.61 / (x - 0.05) + 1.30:
        return "star-forming", flux
    return ("composite" if x < 0.47 and y < 0.61 / (x - 0.47) + 1.19 else "AGN"), flux


def _real_files() -> list[Path]:
    return sorted(REAL_SDSS.glob("spec-*.fits")) if REAL_SDSS.is_dir() else []


NO_SHARED = pytest.mark.skipif(not REAL_SDSS.is_dir(), reason="shared/real-sdss is not beside the checkout")


@NO_SHARED
@pytest.mark.parametrize("path", _real_files() or [None], ids=lambda p: p.stem if p else "none")
def test_reader_class_of_the_shared_real_files(path):
    expected, _ = _expected_from_spzline(path)
    assert readers.read_spectrum(path).bpt_class == expected
    # Eight bright early-type galaxies: none has four lines at S/N > 3.
    assert expected == "passive"


@NO_SHARED
def test_the_shared_real_files_are_there():
    assert len(_real_files()) == 8


def test_reader_class_of_the_spectra_in_ppxf(bundled):
    got = {name: readers.read_spectrum(path).bpt_class for name, path in bundled.items()}
    for name, path in bundled.items():
        assert got[name] == _expected_from_spzline(path)[0]
    # NGC3073 (the dwarf S0 SDSS calls a star) has strong lines: log [NII]/Halpha = -0.455,
    # log [OIII]/Hbeta = +0.242, between the two curves; NGC3522's Hbeta has S/N 1.3.
    assert got == {"NGC3073": "composite", "NGC3522": "passive"}
    _, flux = _expected_from_spzline(bundled["NGC3073"])
    assert math.log10(flux["[N_II] 6583"] / flux["H_alpha"]) == pytest.approx(-0.455, abs=0.002)
    assert math.log10(flux["[O_III] 5007"] / flux["H_beta"]) == pytest.approx(0.242, abs=0.002)


def test_files_without_spzline_keep_an_unknown_class(bundled, dr7_file, tmp_path):
    spec = readers.read_spectrum(bundled["NGC3073"])
    n = len(spec.wave)
    lite = tmp_path / "spec-lite.fits"
    # A simulated spec-lite file has no SPZLINE: its header carries the simulator's class.
    for cls in ("", "AGN"):
        sdss.write_spec_lite(
            lite, spec.replace(bpt_class=cls), np.zeros(n, np.int32), np.zeros(n), np.ones(n), spec.flux
        )
        assert readers.read_spectrum(lite).bpt_class == cls
    # The same full file with its SPZLINE HDU removed, or without the line columns.
    with fits.open(bundled["NGC3073"]) as hdul:
        kept = fits.HDUList([h.copy() for h in hdul if h.name != "SPZLINE"])
        kept.writeto(tmp_path / "no-spzline.fits")
        cols = [c for c in hdul["SPZLINE"].columns if c.name != "LINEAREA_ERR"]
        broken = fits.HDUList([h.copy() for h in hdul[:3]] + [fits.BinTableHDU.from_columns(cols, name="SPZLINE")])
        broken.writeto(tmp_path / "spzline-without-errors.fits")
    assert readers.read_spectrum(tmp_path / "no-spzline.fits").bpt_class == ""
    assert readers.read_spectrum(tmp_path / "spzline-without-errors.fits").bpt_class == ""
    assert readers.read_spectrum(dr7_file).bpt_class == ""


def test_the_class_reaches_the_example(bundled):
    from stellarpop.components import examples
    from stellarpop.components.spectra import to_model_grid
    from stellarpop.schema import features as F

    spec = to_model_grid(readers.read_spectrum(bundled["NGC3073"]))
    parsed = examples.parse(examples.to_example(spec).SerializeToString())
    assert parsed[F.BPT_CLASS] == "composite"
