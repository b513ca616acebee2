"""Readers of spectrum files -> :class:`~stellarpop.components.spectra.Spectrum`, and the
resolution of user inputs to files. The only package that opens spectrum files.

- :mod:`.registry`: the reader registry and :func:`read_spectrum` (format from content);
- :mod:`.sdss`: SDSS DR8+ spec/spec-lite, BOSS, DR7 spSpec; the spectra bundled with ppxf;
  the instrument (sky, LSF, throughput) measured from real files;
- :mod:`.tables`: CSV, Parquet and FITS tables of one spectrum;
- :mod:`.inputs`: files, directories, globs, ``@lists``, catalogues -> files.

A new survey is a new module with a function decorated by
:func:`~.registry.register_reader`, imported here (registration order is sniffing order:
SDSS before the generic tables, which would also match a COADD table).
"""

from stellarpop.components.readers import sdss, tables  # noqa: F401 - registers the readers
from stellarpop.components.readers.inputs import Unresolved, resolve
from stellarpop.components.readers.registry import READERS, read_spectrum, register_reader
from stellarpop.components.readers.sdss import bundled_spectra, instrument_from_files

__all__ = [
    "READERS",
    "Unresolved",
    "bundled_spectra",
    "instrument_from_files",
    "read_spectrum",
    "register_reader",
    "resolve",
]
