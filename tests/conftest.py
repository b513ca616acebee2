"""Shared fixtures: real SDSS spectra from the installed ppxf package and from the ppxf
8.2.6 source distribution (fetched once into the user cache), plus generated fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent / "data"))

import make_test_data  # noqa: E402

from stellarpop.components import readers, reference_data  # noqa: E402


@pytest.fixture(scope="session")
def bundled() -> dict[str, Path]:
    """{'NGC3522': path, 'NGC3073': path}: DR18 spec files inside the ppxf 9.x wheel."""
    return {Path(p).name.split("_")[0]: Path(p) for p in readers.bundled_spectra()}


@pytest.fixture(scope="session")
def sdist_spectra() -> dict[str, Path]:
    """The SDSS spectra of the ppxf 8.2.6 source distribution (registry download, cached)."""
    return {p.stem: p for p in reference_data.ppxf_sdist_members("spectra/*SDSS*")}


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fixtures")


@pytest.fixture(scope="session")
def dr7_file(fixtures_dir) -> Path:
    return make_test_data.dr7_spspec(fixtures_dir)


@pytest.fixture(scope="session")
def broken(tmp_path_factory) -> tuple[Path, dict[str, tuple[str, str]]]:
    """A folder of bad inputs (plus one good file and its duplicate) and the expected
    (stage, reason) of each bad one."""
    folder = tmp_path_factory.mktemp("broken")
    return folder, make_test_data.broken_corpus(folder)


# Fixtures whose files come from the ppxf 8.2.6 source distribution, fetched from the package
# registry on first use (tests/serving/conftest.py's spectrum_files holds its NGC4636).
DOWNLOADING_FIXTURES = {"sdist_spectra", "spectrum_files"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that downloads (through its fixtures) as ``download``."""
    for item in items:
        if DOWNLOADING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.download)
