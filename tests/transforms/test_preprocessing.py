"""preprocessing_fn against numpy references: the flux normalisation of
``spectra.normalisation`` (masked pixels, even counts), min-max labels, the slicing
buckets, and the TFT layer on serving requests without labels."""

from __future__ import annotations

import functools

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.beam import tft_unit
from tensorflow_transform.tf_metadata import dataset_metadata

from stellarpop.components import examples
from stellarpop.components.spectra import Spectrum, normalisation
from stellarpop.schema import features as F
from stellarpop.transforms import preprocessing as P
from stellarpop.transforms.config import PreprocessingConfig

GRID = F.model_grid()
CENTRE_IDX = int(np.flatnonzero(GRID == F.NORM_CENTRE)[0])
LABELS = [
    {F.LOG_AGE: 9.1, F.MH: -0.4, F.EBV: 0.05, F.VD: 120.0},
    {F.LOG_AGE: 9.9, F.MH: 0.1, F.EBV: 0.30, F.VD: 250.0},
    {F.LOG_AGE: 8.2, F.MH: -1.2, F.EBV: 0.00, F.VD: 60.0},
    {F.LOG_AGE: 10.1, F.MH: 0.2, F.EBV: 0.12, F.VD: 310.0},
]
TRUTH = [{k: v + 0.01 * (i + 1) for k, v in lab.items()} for i, lab in enumerate(LABELS)]


def make_spectrum(seed: int, masked: tuple[int, ...] = (), scale: float = 3.0) -> Spectrum:
    """A noisy power-law spectrum on the model grid; ``masked`` pixel indices get mask 1,
    ivar 0 and a wild flux that must not enter the median."""
    rng = np.random.default_rng(seed)
    flux = scale * (GRID / 5000.0) ** -1.5 * (1 + 0.05 * rng.standard_normal(F.N_PIXELS))
    ivar = rng.uniform(5.0, 50.0, F.N_PIXELS)
    bad = np.zeros(F.N_PIXELS, bool)
    bad[list(masked)] = True
    flux[list(masked)] = 1e3
    ivar[list(masked)] = 0.0
    return Spectrum(
        wave=GRID,
        flux=flux.astype(np.float32),
        ivar=ivar.astype(np.float32),
        bad=bad,
        spec_id=f"mock-{seed}",
        z=0.02 + 0.07 * seed,
        snr_r=4.0 + 7.0 * seed,
        bpt_class=f"class{seed % 2}",
    )


SPECTRA = [
    make_spectrum(0),
    make_spectrum(1, masked=(CENTRE_IDX,)),  # one masked pixel in the window: even count
    make_spectrum(2, masked=(CENTRE_IDX - 10, CENTRE_IDX + 3, 100, 4000)),  # odd count
    make_spectrum(3, masked=(CENTRE_IDX + 1,), scale=0.2),
]


def reference(spec: Spectrum, centre: float, half_width: float) -> dict[str, np.ndarray]:
    """What the transform graph must give for one spectrum (numpy)."""
    norm = np.float32(normalisation(spec.flux, spec.bad, GRID, centre, half_width))
    sigma = np.where(spec.ivar > 0, 1 / np.sqrt(np.where(spec.ivar > 0, spec.ivar, 1)), np.inf)
    return {
        P.FLUX_XF: spec.flux / norm,
        P.MASK_XF: spec.bad.astype(np.float32),
        P.NOISE_XF: np.minimum(sigma / norm, P.NOISE_CLIP).astype(np.float32),
    }


def digitize(values, edges) -> np.ndarray:
    return np.digitize(np.float32(values), np.float32(edges)) - 1


# As TFX's SchemaGen would see the data: sim_truth (absent here) has a default value,
# which a TFT schema cannot express.
RAW_SPEC = {k: v for k, v in examples.feature_spec(labels=True, truth=True).items() if k != F.SIM_TRUTH}


# The shapes TFX's SchemaGen infers: scalars as [1]; here also the mask left variable-length.
SCHEMAGEN_SPEC = {
    k: tf.io.VarLenFeature(v.dtype) if k == F.MASK else tf.io.FixedLenFeature(v.shape or [1], v.dtype)
    for k, v in RAW_SPEC.items()
}


def raw_instances(spectra: list[Spectrum], spec: dict = RAW_SPEC) -> list[dict]:
    """Instance dicts of ``spec``'s features, as the examples written by
    ``examples.to_example`` parse (scalars as lists of one for shape [1])."""
    serialized = [
        examples.to_example(s, labels=lab, truth=tru).SerializeToString() for s, lab, tru in zip(spectra, LABELS, TRUTH)
    ]
    parsed = examples.parse(serialized, labels=True, truth=True)
    wrap = {k: getattr(v, "shape", None) == [1] for k, v in spec.items()}
    return [
        {k: [parsed[k][i].tolist()] if wrap[k] else parsed[k][i].tolist() for k in spec} for i in range(len(spectra))
    ]


def expected_rows(spectra: list[Spectrum], label_rows: list[dict], centre: float, half_width: float) -> list[dict]:
    arrays = {k: np.array([row[k] for row in label_rows], np.float32) for k in F.LABEL_KEYS}
    rows = []
    for i, spec in enumerate(spectra):
        row = {k: v.tolist() for k, v in reference(spec, centre, half_width).items()}
        for key, values in arrays.items():
            low, high = values.min(), values.max()
            row[F.transformed_name(key)] = float((values[i] - low) / (high - low))
            min_key, max_key = P.range_keys(key)
            row[min_key], row[max_key] = float(low), float(high)
        row[P.SNR_BIN_XF] = int(digitize(spec.snr_r, F.SNR_BIN_EDGES))
        row[P.Z_BIN_XF] = int(digitize(spec.z, F.Z_BIN_EDGES[:-1]))
        row[P.Z_XF] = float(np.float32(spec.z))  # passed through for the rest-frame view
        rows.append(row)
    return rows


# --- pure graph pieces (eager, no Beam) --------------------------------------------------


def test_masked_median_is_numpy_nanmedian():
    rng = np.random.default_rng(7)
    values = rng.standard_normal((200, 12)).astype(np.float32)
    excluded = rng.uniform(size=values.shape) < rng.uniform(0, 1, (200, 1))
    excluded[0] = True  # no usable pixel: NaN
    excluded[1] = [False] * 2 + [True] * 10  # two pixels: mean of both
    values[2, 3] = np.nan  # NaN at an excluded place must not matter
    excluded[2, 3] = True
    got = P.masked_median(tf.constant(values), tf.constant(excluded)).numpy()
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="All-NaN"):
        want = np.nanmedian(np.where(excluded, np.nan, values), axis=-1)
    assert np.isnan(got[0]) and got[1] == pytest.approx(values[1, :2].mean())
    assert {int(n) % 2 for n in (~excluded).sum(axis=1)} == {0, 1}
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


def test_normalise_spectrum_matches_reference_and_guards_bad_windows():
    window = P.window_slice(F.NORM_CENTRE, F.NORM_HALF_WIDTH)
    assert window.stop - window.start == 101
    spec = make_spectrum(5, masked=(CENTRE_IDX, CENTRE_IDX + 7))
    flux = np.stack([spec.flux, spec.flux, -spec.flux])
    ivar = np.stack([spec.ivar] * 3)
    mask = np.stack([spec.bad] * 3).astype(np.int64)
    mask[1, window] = 1  # nothing usable in the window
    flux[0, 10] = np.nan  # a non-finite pixel outside the window: zeroed and masked
    out = P.normalise_spectrum(tf.constant(flux), tf.constant(ivar), tf.constant(mask), window)
    ref = reference(spec, F.NORM_CENTRE, F.NORM_HALF_WIDTH)
    np.testing.assert_allclose(out[P.FLUX_XF][0].numpy()[11:], ref[P.FLUX_XF][11:], rtol=1e-6)
    assert out[P.FLUX_XF][0, 10] == 0 and out[P.MASK_XF][0, 10] == 1
    np.testing.assert_allclose(out[P.NOISE_XF][0].numpy(), ref[P.NOISE_XF], rtol=1e-6)
    assert out[P.NOISE_XF][0, CENTRE_IDX] == P.NOISE_CLIP  # ivar 0
    for row in (1, 2):  # NaN median, negative median: zeros, fully masked, maximal noise
        assert not np.any(out[P.FLUX_XF][row]) and np.all(out[P.MASK_XF][row] == 1)
        assert np.all(out[P.NOISE_XF][row] == P.NOISE_CLIP)
    assert np.isnan(out["norm"][1]) and out["norm"][2] < 0


def test_buckets_follow_np_digitize_and_document_the_ends():
    snr = [np.nan, -1.0, 4.99, 5.0, 9.99, 10.0, 24.0, 29.999, 30.0, 1e4]
    z = [np.nan, -0.01, 0.0, 0.0599, 0.06, 0.1, 0.15, 0.179, 0.18, 0.2999, 0.30, 0.3001, 2.0]
    snr_bins = P.bucketize(tf.constant(snr, tf.float32), F.SNR_BIN_EDGES).numpy()
    z_bins = P.bucketize(tf.constant(z, tf.float32), F.Z_BIN_EDGES, closed_last=True).numpy()
    assert snr_bins.tolist() == [-1, -1, -1, 0, 0, 1, 3, 4, 5, 5]
    np.testing.assert_array_equal(snr_bins[1:], digitize(snr[1:], F.SNR_BIN_EDGES))
    assert z_bins.tolist() == [-1, -1, 0, 0, 1, 3, 5, 5, 6, 6, 6, 7, 7]
    np.testing.assert_array_equal(z_bins[1:-2], digitize(z[1:-2], F.Z_BIN_EDGES[:-1]))


def test_config_rejects_unknown_label_source_and_empty_window():
    with pytest.raises(ValueError, match="label_source"):
        P.resolve_config({"preprocessing": {"label_source": "sdss"}})
    assert P.resolve_config({"code_fingerprint": "x"}) == PreprocessingConfig()
    with pytest.raises(ValueError, match="unknown keys \\['model'\\]"):
        P.resolve_config({"model": "paper"})
    with pytest.raises(ValueError, match="preprocessing.preparation: unknown keys"):
        P.resolve_config({"preprocessing": {"preparation": {"norm_center": 5000.0}}})
    with pytest.raises(ValueError, match="window"):
        P.window_slice(3000.0, 10.0)


# --- the whole preprocessing_fn on Beam (tft_unit) ----------------------------------------


class PreprocessingFnTest(tft_unit.TransformTestCase):
    def test_ppxf_labels_default_window(self):
        self.assertAnalyzeAndTransformResults(
            raw_instances(SPECTRA),
            dataset_metadata.DatasetMetadata.from_feature_spec(RAW_SPEC),
            functools.partial(P.preprocessing_fn, custom_config={"preprocessing": {"label_source": "ppxf"}}),
            expected_rows(SPECTRA, LABELS, F.NORM_CENTRE, F.NORM_HALF_WIDTH),
        )

    def test_truth_labels_narrow_window_even_count_schemagen_shapes(self):
        # 5500 +- 1.5 A holds three pixels; spectrum 1 has the middle one masked: two left.
        centre = 5500.0
        spectra = list(SPECTRA)
        spectra[1] = make_spectrum(1, masked=(int(centre - F.GRID_START),))
        config = {
            "preprocessing": {"label_source": "truth", "preparation": {"norm_centre": centre, "norm_half_width": 1.5}}
        }
        self.assertAnalyzeAndTransformResults(
            raw_instances(spectra, SCHEMAGEN_SPEC),
            dataset_metadata.DatasetMetadata.from_feature_spec(SCHEMAGEN_SPEC),
            functools.partial(P.preprocessing_fn, custom_config=config),
            expected_rows(spectra, TRUTH, centre, 1.5),
        )


# --- the TFT layer on serving requests without labels ---------------------------------------


PPXF_PREPROCESSING = functools.partial(P.preprocessing_fn, custom_config={"preprocessing": {"label_source": "ppxf"}})


@pytest.fixture(scope="module")
def transform_dir(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("transform"))
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp_path_factory.mktemp("tmp"))):
        raw = pipeline | beam.Create(raw_instances(SPECTRA), reshuffle=False)
        metadata = dataset_metadata.DatasetMetadata.from_feature_spec(RAW_SPEC)
        (_, _), transform_fn = (raw, metadata) | tft_beam.AnalyzeAndTransformDataset(PPXF_PREPROCESSING)
        _ = transform_fn | tft_beam.WriteTransformFn(out)
    return out


@pytest.mark.parametrize("parse_keys", ["unlabelled_spec", "raw_inputs_only"])
def test_tft_layer_serves_without_labels(transform_dir, parse_keys):
    spec = examples.feature_spec(labels=False)
    if parse_keys == "raw_inputs_only":
        spec = {k: spec[k] for k in P.RAW_INPUT_KEYS}
    serialized = tf.constant([examples.to_example(s).SerializeToString() for s in SPECTRA])
    layer = tft.TFTransformOutput(transform_dir).transform_features_layer()
    out = layer(tf.io.parse_example(serialized, spec))
    assert not set(P.LABEL_XF_KEYS) & set(out)
    for i, s in enumerate(SPECTRA):
        np.testing.assert_allclose(
            out[P.FLUX_XF][i].numpy(), reference(s, F.NORM_CENTRE, F.NORM_HALF_WIDTH)[P.FLUX_XF], rtol=1e-5
        )
    for key in F.LABEL_KEYS:
        values = np.array([lab[key] for lab in LABELS], np.float32)
        min_key, max_key = P.range_keys(key)
        np.testing.assert_array_equal(out[min_key].numpy(), [values.min()] * len(SPECTRA))
        np.testing.assert_array_equal(out[max_key].numpy(), [values.max()] * len(SPECTRA))
    assert out[P.SNR_BIN_XF].numpy().tolist() == [-1, 1, 2, 4]
    assert out[P.Z_BIN_XF].numpy().tolist() == [0, 2, 5, 6]
