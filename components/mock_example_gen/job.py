"""The simulation job: shards of simulated spectra -> tf.Examples (and optional FITS files).

Spectrum ``i`` of a run with seed ``s`` is drawn with ``np.random.default_rng([s, i])``,
so the output depends on the seed alone, not on how shards are spread over workers; its
nuisances (``SimConfig.nuisances``) come from a child stream of the same seed sequence and
its plate's calibration error from a stream of seed and plate. A
shard writes its three split files under temporary names, renames them, and then writes a
done-marker; a re-run skips marked shards (resume by shard).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
import tensorflow as tf

from stellarpop.components import examples, instrument, readers, simulate, spectra, templates
from stellarpop.components import nuisances as N
from stellarpop.components.atomic import write_text
from stellarpop.components.bpt import CLASSES
from stellarpop.components.priors import Priors, draw_params
from stellarpop.components.progress import ProgressFile
from stellarpop.schema import config_codec
from stellarpop.schema import features as F
from stellarpop.schema.preparation import Preparation

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
SUMMARY_FILE = "simulate_summary.json"
FITS_DIR = "fits"
# Spawn keys of the streams beside spectrum i's default_rng([seed, i]): its nuisances (so
# that turning them on changes neither the galaxy nor its noise) and its plate's.
NUISANCE_KEY, PLATE_KEY = 1, 2


@dataclass(frozen=True)
class SimConfig:
    """A simulation run (recorded with its output)."""

    n: int
    seed: int
    priors: Priors = field(default_factory=Priors)
    # Nuisances, a preset name ('none', 'realistic') or a mapping (see Nuisances.coerce).
    nuisances: N.Nuisances = field(default_factory=N.Nuisances)
    shard_size: int = 1000
    library: str = ""  # an sps_lib .npz; empty: the E-MILES build
    instrument_files: tuple[str, ...] = ()  # SDSS files giving sky and LSF; empty: ppxf's
    write_fits: bool = False  # also write SDSS spec-lite FITS files
    # Validation, resampling, normalisability and selection cuts, as for real spectra: a
    # mock that cannot be used is counted and skipped; the cuts a mock fails are recorded in
    # its Example (never dropped: training covers more than the paper's sample).
    preparation: Preparation = field(default_factory=Preparation)
    # How spectra are assigned to splits; recorded so that a run made with another scheme
    # (before the split was hashed as TFX hashes) is never resumed into a mixed output.
    split: str = F.SPLIT_SCHEME
    progress_dir: str = ""

    def __post_init__(self):
        object.__setattr__(self, "nuisances", N.Nuisances.coerce(self.nuisances))
        if self.split != F.SPLIT_SCHEME:
            raise ValueError(f"split {self.split!r}: this version assigns splits by {F.SPLIT_SCHEME!r} only")

    @property
    def n_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def to_json(self) -> str:
        return config_codec.to_json(self)

    @classmethod
    def from_json(cls, text: str) -> SimConfig:
        return config_codec.from_json(cls, text)


def sim_ids(seed: int, index: int) -> tuple[int, int, int]:
    """SDSS-like plate, mjd, fiber of a mock: plates from 10000 (none real), mjd from the seed."""
    return 10000 + index // 1000, 70000 + seed % 10000, index % 1000 + 1


def nuisance_draw(index: int, config: SimConfig, inst: instrument.Instrument) -> N.Draw | None:
    """Spectrum ``index``'s nuisances (None when they are off): its own stream (a child of
    its seed sequence) and its plate's (seed and plate: shared by the plate's spectra)."""
    if not config.nuisances.active:
        return None
    plate = sim_ids(config.seed, index)[0]
    own = np.random.default_rng(np.random.SeedSequence([config.seed, index], spawn_key=(NUISANCE_KEY,)))
    shared = np.random.default_rng(np.random.SeedSequence([config.seed, plate], spawn_key=(PLATE_KEY,)))
    return N.draw(config.nuisances, own, shared, tuple(10.0 ** inst.loglam[[0, -1]]))


def one_spectrum(index: int, config: SimConfig, prep: templates.Prepared, inst: instrument.Instrument) -> simulate.Mock:
    """Simulate spectrum ``index`` of the run (its own generator: seed and index)."""
    rng = np.random.default_rng([config.seed, index])
    params = draw_params(rng, config.priors)
    plate, mjd, fiber = sim_ids(config.seed, index)
    return simulate.simulate(
        params,
        prep,
        inst,
        rng,
        readers.sdss.sdss_spec_id(plate, mjd, fiber),
        plate,
        mjd,
        fiber,
        nuisance_draw(index, config, inst),
    )


def _sim_truth_json(mock: simulate.Mock, seed: int, index: int) -> str:
    extra = {"nuisance": dataclasses.asdict(mock.nuisance)} if mock.nuisance is not None else {}
    return json.dumps(
        {
            "seed": seed,
            "index": index,
            "params": dataclasses.asdict(mock.params),
            "light_fractions": np.round(mock.truth["light_fractions"], 6).tolist(),
            **extra,
        },
        sort_keys=True,
    )


def _wdisp(mock: simulate.Mock, inst: instrument.Instrument) -> np.ndarray:
    """The LSF (sigma, pixels) to record: SDSS's, broadened by the nuisances' extra LSF (SDSS
    measures each fibre's; the wavelength error, which it does not know, is not recorded)."""
    if mock.nuisance is None or not mock.nuisance.lsf_kms:
        return inst.wdisp
    return np.hypot(inst.wdisp, mock.nuisance.lsf_kms / instrument.SDSS_VELSCALE)


class SimulateShard(beam.DoFn):
    """Simulates and writes one shard; skips shards already done."""

    def __init__(self, config: SimConfig, out_dir: str):
        self._config = config
        self._out = out_dir

    def setup(self):
        """Loads the templates and the instrument. Also called by the first ``process``: the
        DaskRunner maps ``process`` alone and never calls ``setup``."""
        lib = templates.load_library(self._config.library or None)
        self._inst = readers.instrument_from_files(self._config.instrument_files or None)
        self._prep = templates.prepare(lib, self._inst)
        # Every mock is on SDSS's grid (as stored: float32 loglam): one overlap for all.
        self._overlap = spectra.model_grid_overlap(10.0 ** self._inst.loglam.astype(np.float32).astype(np.float64))
        self._progress = ProgressFile(self._config.progress_dir)
        self._ready = True

    def process(self, shard: int):
        if not getattr(self, "_ready", False):
            self.setup()
        cfg = self._config
        done = os.path.join(self._out, SHARDS_DIR, f"shard-{shard:05d}.done")
        if tf.io.gfile.exists(done):
            with tf.io.gfile.GFile(done) as fh:
                counts = json.load(fh)
            self._progress.add(sum(counts["splits"].values()) + sum(counts.get("unusable", {}).values()))
            yield counts
            return
        name = f"shard-{shard:05d}-of-{cfg.n_shards:05d}.gz"
        paths = {s: os.path.join(self._out, f"Split-{s}", name) for s in F.SPLIT_NAMES}
        # Written beside the done-markers, then renamed into the splits: readers of Split-*
        # never see a partial shard.
        tmp = {s: os.path.join(self._out, SHARDS_DIR, f"{s}-{name}.tmp") for s in paths}
        writers = {}
        for s, path in paths.items():
            tf.io.gfile.makedirs(os.path.dirname(path))
            tf.io.gfile.makedirs(os.path.dirname(tmp[s]))
            # Level 1: float spectra barely compress, and level 6 costs ~1 ms per spectrum.
            writers[s] = tf.io.TFRecordWriter(tmp[s], tf.io.TFRecordOptions("GZIP", compression_level=1))
        counts = {"splits": {s: 0 for s in paths}, "classes": {c: 0 for c in CLASSES}, "unusable": {}}
        lo, hi = shard * cfg.shard_size, min(cfg.n, (shard + 1) * cfg.shard_size)
        for index in range(lo, hi):
            mock = one_spectrum(index, cfg, self._prep, self._inst)
            spec, params = mock.spectrum, mock.params
            if cfg.write_fits:
                folder = os.path.join(self._out, FITS_DIR, f"{spec.plate:04d}")
                tf.io.gfile.makedirs(folder)
                readers.sdss.write_spec_lite(
                    os.path.join(folder, f"spec-{spec.spec_id}.fits"),
                    spec,
                    mock.and_mask,
                    mock.sky,
                    _wdisp(mock, self._inst),
                    mock.model,
                )
            try:
                prepared = spectra.prepare(spec, cfg.preparation, overlap=self._overlap)
            except spectra.SpectrumError as exc:
                counts["unusable"][exc.reason] = counts["unusable"].get(exc.reason, 0) + 1
                self._progress.add()
                continue
            example = examples.to_example(
                prepared,
                truth={k: mock.truth[k] for k in F.LABEL_KEYS},
                sim_truth=_sim_truth_json(mock, cfg.seed, index),
            )
            split = examples.split_of(spec.object_id)
            writers[split].write(example.SerializeToString(deterministic=True))
            counts["splits"][split] += 1
            counts["classes"][params.galaxy_class] += 1
            self._progress.add()
        for s, writer in writers.items():
            writer.close()
            tf.io.gfile.rename(tmp[s], paths[s], overwrite=True)
        with tf.io.gfile.GFile(done, "w") as fh:
            json.dump(counts, fh)
        self._progress.flush()
        yield counts


def _merge(counts: list[dict]) -> dict:
    total = {"splits": {}, "classes": {}, "unusable": {}}
    for c in counts:
        for key in total:
            for k, v in c.get(key, {}).items():
                total[key][k] = total[key].get(k, 0) + v
    return total


def _summary_text(keyed, config: SimConfig, recorded: str) -> str:
    """The run summary of every shard's counts (``keyed``: the one group of a constant key)."""
    _, counts = keyed
    return json.dumps(
        {**_merge(list(counts)), "n": config.n, "shards": config.n_shards, "config": json.loads(recorded)},
        indent=2,
        sort_keys=True,
    )


def run(pipeline: beam.Pipeline, config: SimConfig, out_dir: str):
    """Add the simulation to a Beam pipeline; writes ``Split-*/shard-*.gz`` and a summary.

    The template library is made ready here, in the launching process, before any worker
    starts: a cold cache is filled once (with a log line) instead of by every worker. The
    shards' counts meet in one group of a constant key (a GroupByKey, which every runner
    translates; ``ToList`` is a side input on the DaskRunner) and the summary is written by
    :func:`write_text`, so the same pipeline runs on the DirectRunner and on Dask.
    """
    templates.library_path(config.library or None)
    recorded = dataclasses.replace(config, progress_dir="").to_json()
    summary_path = os.path.join(out_dir, SUMMARY_FILE)
    return (
        pipeline
        | "Shards" >> beam.Create(list(range(config.n_shards)))
        | "Reshuffle" >> beam.Reshuffle()
        | "Simulate" >> beam.ParDo(SimulateShard(config, out_dir))
        | "KeyCounts" >> beam.Map(lambda counts: (None, counts))
        | "Counts" >> beam.GroupByKey()
        | "Summary" >> beam.Map(_summary_text, config=config, recorded=recorded)
        | "WriteSummary" >> beam.Map(lambda text: write_text(summary_path, text))
    )


def read_summary(out_dir: str) -> dict:
    with tf.io.gfile.GFile(os.path.join(out_dir, SUMMARY_FILE)) as fh:
        return json.load(fh)
