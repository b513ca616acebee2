"""Readers against real SDSS files: every value is checked against the file's own header
and table, read independently with astropy's standard API."""

from __future__ import annotations

import shutil

import make_test_data
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from stellarpop.components import readers, spectra
from stellarpop.components.spectra import SpectrumError


def _specobj(path):
    with fits.open(path) as hdul:
        return Table(hdul["SPECOBJ"].data)[0]


@pytest.mark.parametrize(
    "name, plate, mjd, fiber, z, vdisp, sn_all, cls",
    [
        ("NGC3522", 2488, 54149, 1, 0.0040, 97.4, 47.8, "GALAXY"),
        ("NGC3073", 945, 52652, 470, 0.0038, 0.0, 52.6, "STAR"),  # SDSS's misclassification
    ],
)
def test_dr18_spec_values_match_header(bundled, name, plate, mjd, fiber, z, vdisp, sn_all, cls):
    path = bundled[name]
    spec = readers.read_spectrum(path)
    row = _specobj(path)
    assert (spec.plate, spec.mjd, spec.fiber) == (plate, mjd, fiber) == (row["PLATE"], row["MJD"], row["FIBERID"])
    assert spec.spec_id == f"{plate:04d}-{mjd:05d}-{fiber:04d}"
    assert spec.z == pytest.approx(row["Z"]) and spec.z == pytest.approx(z, abs=5e-5)
    assert spec.z_err == pytest.approx(row["Z_ERR"])
    assert spec.sdss_vdisp == pytest.approx(row["VDISP"]) and spec.sdss_vdisp == pytest.approx(vdisp, abs=0.05)
    assert spec.spec_class == row["CLASS"].strip() == cls
    assert spec.zwarning == row["ZWARNING"] == 0
    assert spec.ra == pytest.approx(row["PLUG_RA"]) and spec.dec == pytest.approx(row["PLUG_DEC"])
    assert spec.object_id == row["BESTOBJID"].strip()
    # S/N_r is SN_MEDIAN's r entry; SN_MEDIAN_ALL is the all-band median.
    assert spec.snr_r == pytest.approx(row["SN_MEDIAN"][2])
    assert row["SN_MEDIAN_ALL"] == pytest.approx(sn_all, abs=0.05)
    with fits.open(path) as hdul:
        coadd = hdul["COADD"].data
        np.testing.assert_allclose(spec.wave, 10.0 ** coadd["loglam"].astype(float))
        np.testing.assert_array_equal(spec.flux, coadd["flux"])
        np.testing.assert_array_equal(spec.ivar, coadd["ivar"])
        assert np.array_equal(
            spec.bad, (coadd["ivar"] <= 0) | ((coadd["and_mask"] & sum(1 << b for b in (18, 22, 23, 24))) != 0)
        )


def test_fast_table_path_equals_astropy_for_every_column(bundled):
    """The numpy row reader must agree with astropy on all 126 SPECOBJ and 8 COADD columns."""
    path = str(bundled["NGC3522"])
    with fits.open(path, memmap=False) as hdul:
        for key in ("COADD", "SPECOBJ"):
            fast = readers.sdss.table_columns(hdul, key, path)
            ref = hdul[key].data
            assert set(fast) == {c.lower() for c in ref.columns.names}
            for col in ref.columns.names:
                np.testing.assert_array_equal(np.asarray(fast[col.lower()]), np.asarray(ref[col]), err_msg=col)


def test_snr_computed_from_ivar_agrees_with_sdss(bundled):
    """Where SN_MEDIAN is absent we compute S/N_r from ivar over the r band: within 5% of SDSS."""
    for path in bundled.values():
        spec = readers.read_spectrum(path)
        assert spectra.snr_in_band(spec) == pytest.approx(spec.snr_r, rel=0.05)


def test_dr12_spec_from_sdist(sdist_spectra):
    path = sdist_spectra["NGC4636_SDSS_DR12"]
    spec = readers.read_spectrum(path)
    row = _specobj(path)
    assert (spec.plate, spec.mjd, spec.fiber) == (522, 52024, 396)
    assert spec.z == pytest.approx(row["Z"]) == pytest.approx(0.0030, abs=5e-5)
    assert spec.sdss_vdisp == pytest.approx(205.9, abs=0.05) and spec.sdss_vdisp_err == pytest.approx(3.2, abs=0.05)
    assert spec.snr_r == pytest.approx(row["SN_MEDIAN"][2])
    assert (spec.spec_class, spec.subclass) == ("GALAXY", "AGN BROADLINE")


def test_ppxf_table_format_read_as_generic_table(sdist_spectra):
    """ppxf's own DR8 tables (wavelength, flux, inverse_variance, and_mask) go through the
    generic table reader; the id falls back to the file name."""
    path = sdist_spectra["NGC3522_SDSS_DR8"]
    spec = readers.read_spectrum(path)
    with fits.open(path) as hdul:
        data = hdul[1].data
        np.testing.assert_array_equal(spec.wave, data["wavelength"])
        np.testing.assert_array_equal(spec.ivar, data["inverse_variance"])
    assert spec.spec_id == "NGC3522_SDSS_DR8"
    assert spec.bad.sum() >= (data["inverse_variance"] == 0).sum()


def test_dr7_spspec_fixture(dr7_file):
    """No real DR7 spSpec file is available here: the fixture is built by
    tests/data/make_test_data.py to the DR7 data model, and read back by content."""
    spec = readers.read_spectrum(dr7_file)
    with fits.open(dr7_file) as hdul:
        h, data = hdul[0].header, hdul[0].data
    expect = make_test_data.DR7
    assert spec.spec_id == "0266-51630-0012"
    assert spec.z == pytest.approx(expect["Z"]) and spec.zwarning == 0
    assert (spec.spec_class, spec.subclass) == ("GALAXY", "")
    assert spec.sdss_vdisp == pytest.approx(expect["VEL_DIS"]) and spec.snr_r == pytest.approx(15.3)
    assert spec.object_id == expect["OBJID"]
    np.testing.assert_allclose(spec.wave, 10.0 ** (h["COEFF0"] + h["COEFF1"] * np.arange(data.shape[1])))
    np.testing.assert_array_equal(spec.flux, data[0])
    err = data[2].astype(float)
    np.testing.assert_allclose(spec.ivar[err > 0], 1 / err[err > 0] ** 2, rtol=1e-6)
    assert np.all(spec.bad[err == 0])


def test_boss_spall_variant(fixtures_dir, bundled):
    spec = readers.read_spectrum(make_test_data.boss_spall(fixtures_dir))
    ref = readers.read_spectrum(bundled["NGC3522"])
    assert spec.spec_id == ref.spec_id and spec.z == ref.z


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits"])
def test_generic_tables_round_trip(tmp_path, bundled, suffix):
    ref = readers.read_spectrum(bundled["NGC3522"])
    err = np.where(ref.ivar > 0, 1 / np.sqrt(np.where(ref.ivar > 0, ref.ivar, 1)), 0)
    table = Table(
        {
            "wavelength": ref.wave,
            "flux": ref.flux,
            "error": err,
            "z": np.full(len(ref.wave), 0.05),
            "id": ["gal-1"] * len(ref.wave),
        }
    )
    path = tmp_path / f"spectrum{suffix}"
    if suffix == ".parquet":
        table.to_pandas().to_parquet(path)
    else:
        table.write(path, format="ascii.csv" if suffix == ".csv" else "fits")
    spec = readers.read_spectrum(path)
    assert spec.spec_id == "gal-1" and spec.z == pytest.approx(0.05)
    np.testing.assert_allclose(spec.wave, ref.wave, rtol=1e-9)
    np.testing.assert_allclose(spec.flux, ref.flux, rtol=1e-6)
    good = ref.ivar > 0
    np.testing.assert_allclose(spec.ivar[good], ref.ivar[good], rtol=1e-4)


def test_format_detected_from_content_not_name(tmp_path, bundled):
    odd = tmp_path / "spectrum.dat"
    shutil.copy(bundled["NGC3522"], odd)
    assert readers.read_spectrum(odd).spec_id == "2488-54149-0001"
    csv_named_fits = tmp_path / "table.fits"
    csv_named_fits.write_text("wavelength,flux,ivar\n4000,1,1\n5000,2,1\n")
    assert readers.read_spectrum(csv_named_fits).flux.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty_file"), (b"\x00\x01binary", "unknown_format"), (b"SIMPLE  =" + b" " * 100, "truncated")],
)
def test_unreadable_files_raise_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.fits"
    path.write_bytes(content)
    with pytest.raises(SpectrumError) as info:
        readers.read_spectrum(path)
    assert info.value.reason == reason


def test_resolve_files_dirs_globs_and_list_files(tmp_path, bundled):
    a = tmp_path / "a" / "x.fits"
    b = tmp_path / "a" / "deep" / "y.fits"
    b.parent.mkdir(parents=True)
    shutil.copy(bundled["NGC3522"], a)
    shutil.copy(bundled["NGC3073"], b)
    (tmp_path / "a" / "notes.txt").write_text("not a spectrum")
    listing = tmp_path / "list.txt"
    listing.write_text("# my sample\na/x.fits\nmissing.fits\n")
    files, missing = readers.inputs.resolve_inputs(
        [str(tmp_path / "a"), str(tmp_path / "**" / "y.fits"), f"@{listing}"]
    )
    assert files == sorted({str(a), str(b)})
    assert [m.file for m in missing] == [str(tmp_path / "missing.fits")]
    files, missing = readers.inputs.resolve_inputs(["bundled", str(tmp_path / "nothing*.fits")])
    assert len(files) == 2 and missing[0].message == "no file matches this pattern"


def test_catalogue_resolves_sdss_layout(tmp_path, bundled):
    root = tmp_path / "lite"
    (root / "2488").mkdir(parents=True)
    shutil.copy(bundled["NGC3522"], root / "2488" / "spec-2488-54149-0001.fits")
    cat = tmp_path / "sample.csv"
    cat.write_text("plate,mjd,fiberid\n2488,54149,1\n266,51630,12\n")
    found, missing = readers.inputs.catalogue_paths(str(cat), str(root))
    assert found == [str(root / "2488" / "spec-2488-54149-0001.fits")]
    assert "plate=266 mjd=51630 fiber=12" in missing[0].message
