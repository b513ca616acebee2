"""The one tf.Example spec: round trip, keys, labels and truth."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from stellarpop.components import examples, readers
from stellarpop.components.spectra import to_model_grid
from stellarpop.schema import features as F


@pytest.fixture(scope="module")
def grid_spec(bundled):
    return to_model_grid(readers.read_spectrum(bundled["NGC3522"])).replace(selection=("snr_r",), bpt_class="passive")


def test_round_trip_keeps_every_feature(grid_spec):
    parsed = examples.parse(examples.to_example(grid_spec).SerializeToString())
    np.testing.assert_array_equal(parsed[F.FLUX], grid_spec.flux)
    np.testing.assert_array_equal(parsed[F.IVAR], grid_spec.ivar)
    np.testing.assert_array_equal(parsed[F.MASK], grid_spec.bad.astype(int))
    assert parsed[F.SPEC_ID] == "2488-54149-0001" and parsed[F.OBJECT_ID] == grid_spec.object_id
    assert (parsed[F.PLATE], parsed[F.MJD], parsed[F.FIBER]) == (2488, 54149, 1)
    assert parsed[F.Z] == pytest.approx(grid_spec.z) and parsed[F.SNR_R] == pytest.approx(grid_spec.snr_r)
    assert parsed[F.SDSS_VDISP] == pytest.approx(97.36, abs=0.01)
    assert parsed[F.SPEC_CLASS] == "GALAXY" and parsed[F.BPT_CLASS] == "passive"
    assert parsed[F.SELECTION] == "snr_r" and parsed[F.SOURCE_FILE].endswith("NGC3522_SDSS_DR18.fits")
    assert parsed[F.COVERAGE] == pytest.approx(grid_spec.coverage)


def test_spec_covers_exactly_the_written_features(grid_spec):
    truth = {F.LOG_AGE: 9.7, F.MH: -0.1, F.EBV: 0.12, F.VD: 140.0}
    ex = examples.to_example(
        grid_spec, labels={F.LOG_AGE: 9.6, F.MH: -0.2, F.EBV: 0.1, F.VD: 150.0}, truth=truth, sim_truth='{"seed": 1}'
    )
    assert set(ex.features.feature) == set(examples.feature_spec(labels=True, truth=True))
    parsed = examples.parse([ex.SerializeToString()] * 2, labels=True, truth=True)
    assert parsed[F.VD].tolist() == [150.0, 150.0]
    assert parsed["true_ebv"][0] == pytest.approx(0.12)
    assert parsed[F.FLUX].shape == (2, F.N_PIXELS) and parsed[F.SIM_TRUTH][0] == '{"seed": 1}'
    # sim_truth is optional: truth written without it parses to ""
    bare = examples.to_example(grid_spec, truth=truth).SerializeToString()
    assert examples.parse(bare, truth=True)[F.SIM_TRUTH] == ""


def test_rejects_wrong_length_and_unknown_labels(bundled, grid_spec):
    with pytest.raises(ValueError, match="resample first"):
        examples.to_example(readers.read_spectrum(bundled["NGC3522"]))
    with pytest.raises(KeyError, match="unknown label"):
        examples.to_example(grid_spec, labels={"age": 1.0})


def test_split_is_the_one_tfx_assigns():
    """A mock's split (examples.split_of) is the split TFX's ExampleGen gives the same
    Example when it is re-ingested: the bug was a SHA-256 of the bare id string."""
    from tfx.components.example_gen import base_example_gen_executor as tfx_gen

    from stellarpop.components.fits_example_gen.component import default_output_config

    split_config = default_output_config().split_config
    buckets = list(np.cumsum([s.hash_buckets for s in split_config.splits]))
    names = [s.name for s in split_config.splits]
    assert tuple(names) == F.SPLIT_NAMES
    seen = set()
    for i in range(300):
        object_id = f"sim:{i}"
        example = tf.train.Example()
        example.features.feature[F.OBJECT_ID].bytes_list.value.append(object_id.encode())
        tfx_split = names[tfx_gen._PartitionFn(example, len(buckets), buckets, split_config)]
        assert examples.split_of(object_id) == tfx_split, object_id
        seen.add(tfx_split)
    assert seen == set(F.SPLIT_NAMES)
