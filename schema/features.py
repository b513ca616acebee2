"""Every feature and label key of stellarpop, the model grid, and the slicing bin edges.

One place for names: the tf.Example writer (``components/examples.py``), the
tf.Transform ``preprocessing_fn``, the Trainer and the Evaluator all import
their keys from here, so a spectrum read from an SDSS file and a simulated one
reach the network through the same features.
"""

from __future__ import annotations

import numpy as np

# --- The model's wavelength grid (observed frame, vacuum, Angstrom) -------------------------
# The paper: "resample the spectra with an interval of 1 A in the wavelength range
# [3800 A, 8900 A] ... each spectrum is a 5100-dimensional vector".
GRID_START = 3800.0
GRID_STOP = 8900.0  # exclusive, as np.arange(3800, 8900, 1) in the authors' script
GRID_STEP = 1.0
N_PIXELS = 5100


def model_grid() -> np.ndarray:
    """Pixel centres of the model grid.

    Returns
    -------
    ndarray, shape (5100,), float64, Angstrom (vacuum, observed frame)
    """
    return GRID_START + GRID_STEP * np.arange(N_PIXELS, dtype=np.float64)


# Flux normalisation window (done inside the tf.Transform graph; numpy reference in
# components/spectra.py). The paper says "around 5000 A"; the authors' public script takes
# the median within +-1 A of 5500 A. A 3-pixel median is noise-dominated at S/N 5, so the
# default is the median over 4950-5050 A; both are configurable.
NORM_CENTRE = 5000.0
NORM_HALF_WIDTH = 50.0

# --- Spectrum features (fixed length N_PIXELS) ----------------------------------------------
FLUX = "flux"  # 1e-17 erg/s/cm^2/A, resampled, bad pixels interpolated over
IVAR = "ivar"  # inverse variance of FLUX, 0 where masked
MASK = "mask"  # 1 where the pixel was bad, padded or interpolated over, else 0

# --- Metadata (scalars) ---------------------------------------------------------------------
SPEC_ID = "spec_id"  # "PLATE-MJD-FIBER" for SDSS, a user id otherwise; unique per spectrum
OBJECT_ID = "object_id"  # groups repeat observations of one object; the split key
PLATE = "plate"
MJD = "mjd"
FIBER = "fiber"
RA = "ra"  # degrees
DEC = "dec"  # degrees
Z = "z"
Z_ERR = "z_err"
ZWARNING = "zwarning"
SNR_R = "snr_r"  # median S/N per pixel in the r band
SPEC_CLASS = "class"  # SDSS CLASS (GALAXY, STAR, QSO) or a simulator class
SUBCLASS = "subclass"
BPT_CLASS = "bpt_class"  # passive / star-forming / composite / AGN; empty when unknown
SDSS_VDISP = "sdss_vdisp"  # km/s, the SDSS pipeline's velocity dispersion (0 when absent)
SDSS_VDISP_ERR = "sdss_vdisp_err"
COVERAGE = "coverage"  # fraction of the model grid covered by the input spectrum
SELECTION = "selection"  # comma-separated names of failed selection cuts; empty = selected
SOURCE_FILE = "source_file"

INT_META_KEYS = (PLATE, MJD, FIBER, ZWARNING)
FLOAT_META_KEYS = (RA, DEC, Z, Z_ERR, SNR_R, SDSS_VDISP, SDSS_VDISP_ERR, COVERAGE)
STRING_META_KEYS = (SPEC_ID, OBJECT_ID, SPEC_CLASS, SUBCLASS, BPT_CLASS, SELECTION, SOURCE_FILE)

# --- Labels (pPXF or truth) and truth of simulated spectra ------------------------------------
LOG_AGE = "log_age"  # light-weighted mean age, log10(yr)
MH = "mh"  # light-weighted [M/H], dex
EBV = "ebv"  # Calzetti E(B-V), mag
VD = "vd"  # stellar velocity dispersion, km/s
LABEL_KEYS = (LOG_AGE, MH, EBV, VD)
ERR_SUFFIX = "_err"  # 1-sigma uncertainty of a label (pPXF's formal error, the model's)
LABEL_ERR_KEYS = tuple(k + ERR_SUFFIX for k in LABEL_KEYS)
# Out-of-domain score and flag of a prediction (``pipeline/training/calibration.py`` defines them).
OOD_SCORE, OOD_FLAG = "ood_score", "ood_flag"
PREDICTION_KEYS = LABEL_KEYS + LABEL_ERR_KEYS + (OOD_SCORE, OOD_FLAG)  # every served output
PPXF_CHI2 = "ppxf_chi2"  # chi2 per degree of freedom of the pPXF fit
PPXF_NGOOD = "ppxf_ngood"  # pixels the pPXF fit used
TRUTH_PREFIX = "true_"
TRUTH_KEYS = tuple(TRUTH_PREFIX + k for k in LABEL_KEYS)
LABEL_UNITS = {LOG_AGE: "log10(yr)", MH: "dex", EBV: "mag", VD: "km/s"}
# Where the labels come from: pPXF fits of the spectra, or the simulator's truth.
LABEL_SOURCES = {"ppxf": LABEL_KEYS, "truth": TRUTH_KEYS}


def label_features(label_source: str) -> dict[str, str]:
    """Each label key -> the feature holding it for ``label_source`` (KeyError if unknown)."""
    return dict(zip(LABEL_KEYS, LABEL_SOURCES[label_source]))


# Everything else the simulator knows (SFH components, light fractions, S/N, dust, lines),
# as a JSON string: for analysis, not for the network.
SIM_TRUTH = "sim_truth"

# --- Slicing bins (the paper's Sections 4.2-4.3) ----------------------------------------------
SNR_BIN_EDGES = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0)  # last bin open: >= 30
Z_BIN_EDGES = (0.0, 0.06, 0.08, 0.10, 0.12, 0.15, 0.18, 0.30)
SNR_BIN = "snr_bin"  # bin of SNR_BIN_EDGES: -1 below the first edge, 0 for [5, 10), ...; made by Transform
Z_BIN = "z_bin"  # index into Z_BIN_EDGES, made by Transform

# --- The paper's 8:1:1 split, by hash buckets of OBJECT_ID (repeat observations of one galaxy
# stay in one split); hashed as TFX's ExampleGen hashes (``examples.split_of``).
SPLITS = (("train", 8), ("eval", 1), ("test", 1))
SPLIT_NAMES = tuple(name for name, _ in SPLITS)
TRAIN, EVAL, TEST = SPLIT_NAMES  # fit, early stopping and model choice, the Evaluator's judgement
SPLIT_SCHEME = "tfx-sha256-object_id"  # the name recorded with simulated runs

# --- The paper's selection ---------------------------------------------------------------------
Z_MIN = 0.002
Z_MAX = 0.3
SNR_R_MIN = 5.0


def transformed_name(key: str) -> str:
    """Name of a feature after the tf.Transform step."""
    return key + "_xf"


# What TFMA slices by: the bins as Transform outputs them, and the raw BPT class.
SLICE_KEYS = (transformed_name(SNR_BIN), transformed_name(Z_BIN), BPT_CLASS)
