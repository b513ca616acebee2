"""The Beam job: what it writes, deterministic, and the per-record functions it maps."""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import numpy as np
import pytest

from stellarpop.components import examples, nuisances, priors, simulate
from stellarpop.components.fits_example_gen import job as ingest_job
from stellarpop.components.mock_example_gen import job
from stellarpop.schema import config_codec
from stellarpop.schema import features as F
from stellarpop.schema.preparation import Preparation, Selection


@pytest.mark.parametrize("nuis", ["none", "realistic"])
def test_output_depends_on_the_seed_only(tmp_path, nuis, records, run):
    a = run(job.SimConfig(n=12, seed=5, shard_size=5, nuisances=nuis), str(tmp_path / "a"))
    run(job.SimConfig(n=12, seed=5, shard_size=12, nuisances=nuis), str(tmp_path / "b"))
    run(job.SimConfig(n=12, seed=6, shard_size=12, nuisances=nuis), str(tmp_path / "c"))
    ra, rb, rc = (records(str(tmp_path / k)) for k in "abc")
    assert len(ra) == 12 and ra == rb
    assert set(ra.values()).isdisjoint(rc.values()) and not set(ra) & set(rc)  # the seed is in the ids too
    assert sum(a["splits"].values()) == 12 and a["shards"] == 3 and a["config"]["seed"] == 5
    parsed = examples.parse(next(iter(ra.values())), truth=True)
    truth = json.loads(parsed[F.SIM_TRUTH])
    assert parsed["true_vd"] == pytest.approx(truth["params"]["sigma"])
    assert np.array(truth["light_fractions"]).shape == (25, 6)
    assert ("nuisance" in truth) == (nuis == "realistic")  # the draw is recorded when there is one
    assert config_codec.from_dict(nuisances.Nuisances, a["config"]["nuisances"]).active == (nuis == "realistic")


def test_config_round_trips_and_records_its_split_scheme():
    """The record round-trips and names the split scheme, so that a run made before the split
    was hashed as TFX hashes (a record without it) is never resumed; presets and mappings (a
    pipeline YAML's) are accepted."""
    plain = job.SimConfig(n=5, seed=7)
    assert json.loads(plain.to_json())["split"] == F.SPLIT_SCHEME
    assert job.SimConfig.from_json(plain.to_json()) == plain
    with pytest.raises(ValueError, match="split 'sha256'"):
        job.SimConfig(n=5, seed=7, split="sha256")
    wide = job.SimConfig(n=5, seed=7, priors=priors.Priors(mode="wide"), nuisances="realistic")
    assert wide.nuisances == nuisances.Nuisances.realistic() and job.SimConfig.from_json(wide.to_json()) == wide
    custom = job.SimConfig(n=5, seed=7, nuisances={"preset": "realistic", "gap_prob": 0.2, "gap_range": [200, 900]})
    assert custom.nuisances == nuisances.Nuisances(
        **{**dataclasses.asdict(nuisances.Nuisances.realistic()), "gap_prob": 0.2, "gap_range": (200, 900)}
    )
    assert job.SimConfig(n=5, seed=7, nuisances={"calib_rms": 0.04}).nuisances == nuisances.Nuisances(calib_rms=0.04)
    assert job.SimConfig(n=5, seed=7, nuisances="none") == plain
    with pytest.raises(ValueError):
        job.SimConfig(n=5, seed=7, nuisances="strong")
    # sdss_fraction 0 draws as before the field existed: left out, so earlier records still match.
    assert "sdss_fraction" not in wide.to_json()
    mixed = dataclasses.replace(wide, priors=priors.Priors(mode="wide", sdss_fraction=0.33))
    assert (
        json.loads(mixed.to_json())["priors"]["sdss_fraction"] == 0.33
        and job.SimConfig.from_json(mixed.to_json()) == mixed
    )


def test_nuisances_off_is_the_plain_simulation(inst_prep):
    """The default configuration takes no nuisance path: the mock simulate() makes alone."""
    inst, prep = inst_prep
    mock = job.one_spectrum(3, job.SimConfig(n=5, seed=7), prep, inst)
    rng = np.random.default_rng([7, 3])
    plain = simulate.simulate(priors.draw_params(rng), prep, inst, rng, mock.spectrum.spec_id)
    assert mock.nuisance is None
    np.testing.assert_array_equal(mock.spectrum.flux, plain.spectrum.flux)
    np.testing.assert_array_equal(mock.spectrum.ivar, plain.spectrum.ivar)


def test_plate_shares_its_calibration_error(inst_prep):
    """Spectra of one plate carry the same plate component (their flux ratio to the mock
    without nuisances is the same function); another plate or seed has another; the galaxy
    and its noise are those without nuisances."""
    inst, prep = inst_prep
    on = job.SimConfig(n=2000, seed=7, nuisances={"calib_plate_rms": 0.03})
    off = dataclasses.replace(on, nuisances=nuisances.Nuisances())

    def ratio(index, config=on):
        a, b = (
            job.one_spectrum(index, config, prep, inst),
            job.one_spectrum(index, dataclasses.replace(config, nuisances=off.nuisances), prep, inst),
        )
        assert a.params == b.params
        return a.model / b.model

    assert job.sim_ids(7, 0)[0] == job.sim_ids(7, 999)[0] != job.sim_ids(7, 1000)[0]
    np.testing.assert_allclose(ratio(0), ratio(999), rtol=1e-12)
    assert np.std(ratio(0) - 1) > 1e-3
    assert np.std(ratio(0) - ratio(1000)) > 1e-3
    assert np.std(ratio(0) - ratio(0, dataclasses.replace(on, seed=8))) > 1e-3


@pytest.mark.parametrize("nuis", ["none", {"preset": "realistic", "gap_prob": 0.5}])
def test_fits_files_read_back_through_the_ingest_path(tmp_path, nuis, records, run):
    """A mock written as spec-lite FITS and ingested gives the Example written directly."""
    out = str(tmp_path)
    run(job.SimConfig(n=4, seed=2, shard_size=4, write_fits=True, nuisances=nuis), out)
    direct = records(out)
    files = sorted(glob.glob(os.path.join(out, job.FITS_DIR, "*", "spec-*.fits")))
    assert len(files) == 4
    for path in files:
        spec, fail = ingest_job.process_file(path, ingest_job.IngestConfig(select=False))
        assert fail is None
        want = examples.parse(direct[spec.spec_id], truth=True)
        np.testing.assert_array_equal(spec.flux, want[F.FLUX])  # process_file resampled it
        np.testing.assert_array_equal(spec.ivar, want[F.IVAR])
        np.testing.assert_array_equal(spec.bad.astype(int), want[F.MASK])
        assert spec.z == pytest.approx(want[F.Z]) and spec.snr_r == pytest.approx(want[F.SNR_R])


def test_mocks_are_prepared_as_real_spectra(tmp_path, records, run):
    """Mocks go through spectra.prepare: the selection cuts they fail are recorded in their
    Examples (never dropped), and the summary counts any that cannot be used."""
    strict = Preparation(selection=Selection(snr_r_min=1e6))
    summary = run(job.SimConfig(n=6, seed=4, shard_size=6, preparation=strict), str(tmp_path))
    records = records(str(tmp_path))
    assert len(records) == 6 and summary["unusable"] == {}
    assert all("snr_r" in examples.parse(r)[F.SELECTION].split(",") for r in records.values())
    assert summary["config"]["preparation"]["selection"]["snr_r_min"] == 1e6
