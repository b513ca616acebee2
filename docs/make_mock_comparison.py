"""docs/mocks_vs_sdss.png: simulated spectra beside the real SDSS spectra shipped with ppxf.

Each real galaxy is paired with a mock of the same redshift, S/N_r, velocity dispersion,
sky-to-object ratio (from the file's sky model) and class, with a star-formation history
plausible for its type; both are shown normalised at 5000 A rest (left), with their 1-sigma
error spectra (middle), and zoomed on Mg b and the 5577 A sky line (right).

    .venv/bin/python docs/make_mock_comparison.py
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

from stellarpop.components import priors, readers, reference_data, templates  # noqa: E402
from stellarpop.components import simulate as S

C = priors.Component
# (file, label, class, star-formation history, E(B-V), sigma if SDSS has none, extra params)
PAIRS = [
    ("NGC3522_SDSS_DR18", "NGC3522 (S0, z=0.0040)", "passive", (C(11.0, 1.0, -0.1, 1.0),), 0.05, None, {}),
    (
        "NGC4636_SDSS_DR12",
        "NGC4636 (E, LINER, z=0.0030)",
        "AGN",
        (C(12.5, 0.7, 0.1, 1.0),),
        0.03,
        None,
        {"agn_ew_hbeta": 0.5, "log_nii_ha": 0.2, "log_oiii_hb": 0.1},
    ),
    (
        "NGC3073_SDSS_DR18",
        "NGC3073 (dwarf S0, z=0.0038)",
        "star-forming",
        (C(10.0, 3.0, -0.5, 1.0), C(0.3, 0.0, -0.4, 0.05)),
        0.05,
        50.0,
        {},
    ),
]
SEED = 2024


def real_paths() -> dict[str, str]:
    paths = {Path(p).stem: p for p in readers.bundled_spectra()}
    paths.update({p.stem: str(p) for p in reference_data.ppxf_sdist_members("spectra/*DR12*")})
    return paths


def sky_to_object(path: str) -> float:
    """Median sky over median object flux in the r band, from the file's COADD table."""
    with fits.open(path) as hdul:
        c = hdul["COADD"].data
        r = (10.0 ** c["loglam"] > 5600) & (10.0 ** c["loglam"] < 6800)
        return float(np.median(c["sky"][r]) / np.median(c["flux"][r]))


def main(out: Path = Path(__file__).parent / "mocks_vs_sdss.png") -> None:
    inst = readers.instrument_from_files()
    prep = templates.prepare(templates.load_library(), inst)
    paths = real_paths()
    rng = np.random.default_rng(SEED)
    fig, axes = plt.subplots(len(PAIRS), 3, figsize=(16, 3.4 * len(PAIRS)), gridspec_kw={"width_ratios": [3, 2, 1.3]})
    for row, (name, label, cls, sfh, ebv, sigma, extra) in zip(axes, PAIRS):
        real = readers.read_spectrum(paths[name])
        params = dataclasses.replace(
            priors.draw_params(rng),
            galaxy_class=cls,
            components=sfh,
            ebv=ebv,
            z=real.z,
            snr_r=real.snr_r,
            sigma=sigma or real.sdss_vdisp,
            sky_ratio=sky_to_object(paths[name]),
            calib=(0.0, 0.0, 0.0),
            **extra,
        )
        result = S.simulate(params, prep, inst, rng, "mock")
        mock, truth = result.spectrum, result.truth
        for spec, colour, who in ((real, "k", "SDSS"), (mock, "tab:red", "mock")):
            rest = spec.wave / (1 + spec.z)
            good = ~spec.bad
            norm = np.median(spec.flux[(rest > 4950) & (rest < 5050) & good])
            err = np.where(spec.ivar > 0, 1 / np.sqrt(np.where(spec.ivar > 0, spec.ivar, 1)), np.nan)
            row[0].plot(spec.wave, spec.flux / norm, colour, lw=0.5, alpha=0.8, label=who)
            row[1].plot(spec.wave, err / norm, colour, lw=0.5, alpha=0.8)
            zoom = (spec.wave > 5150) & (spec.wave < 5650)
            row[2].plot(spec.wave[zoom], spec.flux[zoom] / norm, colour, lw=0.7, alpha=0.8)
        row[0].set_title(
            f"{label}: S/N_r {real.snr_r:.0f}; mock {cls}, log age {truth['log_age']:.2f}, "
            f"[M/H] {truth['mh']:.2f}, E(B-V) {truth['ebv']:.2f}, sigma {truth['vd']:.0f} km/s",
            fontsize=9,
        )
        row[0].set_ylim(0, 2.2)
        row[0].set_ylabel("flux / flux(5000 A rest)")
        row[1].set_ylabel("1-sigma error / flux(5000 A)")
        row[1].set_yscale("log")
        row[0].legend(loc="upper right", fontsize=8)
    for ax, title in zip(axes[-1], ("observed wavelength (A)", "observed wavelength (A)", "Mg b and sky 5577 A")):
        ax.set_xlabel(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
