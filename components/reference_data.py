"""Reference data obtained from the package registry into a user cache (I/O only).

The ppxf 8.2.6 source distribution carries what the 9.x wheel no longer does: more real
SDSS spectra (e.g. NGC4636_SDSS_DR12) and the E-MILES SSP library. It is fetched once
with pip into ``$STELLARPOP_CACHE`` (default ``~/.cache/stellarpop``), checked against a
pinned SHA-256, and members are extracted on demand.

Several processes may fill the cache at once (Beam workers, parallel runs, tests). Every
file is written under a unique temporary name in its final folder and renamed into place
(atomic on POSIX), so a reader sees a whole file or none; work that should happen once
(the download, an extraction, a library build) runs under an exclusive ``fcntl`` lock
(:func:`locked`), and the second process re-checks the cache after waiting for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PPXF_SDIST = "ppxf==8.2.6"
PPXF_SDIST_FILE = "ppxf-8.2.6.tar.gz"
PPXF_SDIST_SHA256 = "e51249d28f12eb41c6dce325a17c7bd554b546e73de930a59f7b29b02f35c8c3"


@dataclass(frozen=True)
class Package:
    """A file fetched from the package registry with pip, pinned by its SHA-256."""

    spec: str  # pip requirement, e.g. "ppxf==8.2.6"
    file: str  # the file pip writes
    sha256: str
    binary: bool  # a wheel (--only-binary) or a source distribution (--no-binary)
    what: str  # for the log line and the error


PPXF = Package(
    PPXF_SDIST, PPXF_SDIST_FILE, PPXF_SDIST_SHA256, binary=False, what="source distribution, templates and spectra"
)


class ReferenceDataError(RuntimeError):
    """Reference data could be neither found in the cache nor fetched."""


def cache_dir() -> Path:
    return Path(os.environ.get("STELLARPOP_CACHE", Path.home() / ".cache" / "stellarpop"))


@contextlib.contextmanager
def locked(name: str):
    """Hold the cache's exclusive lock ``name`` (a file ``.NAME.lock`` in the cache) while inside.

    ``fcntl.flock`` locks are released by the kernel when their holder dies, so a killed
    process never leaves a stale lock behind.
    """
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_atomic(path: Path, write) -> Path:
    """Write ``path`` by ``write(tmp_path)`` under a unique name beside it, then rename it in.

    Readers never see a partial file, and concurrent writers never share a temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(package: Package) -> Path:
    """Path of the verified ``package`` file in the cache, downloading it with pip if needed."""
    target = cache_dir() / package.file
    if target.exists() and sha256(target) == package.sha256:
        return target
    with locked(f"fetch-{package.file}"):
        if target.exists() and sha256(target) == package.sha256:  # another process fetched it
            return target
        _download(package, target)
    return target


def ppxf_sdist() -> Path:
    """Path of the verified ppxf 8.2.6 source archive, downloading it with pip if needed."""
    return fetch(PPXF)


def _download(package: Package, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        kind = ["--only-binary", ":all:"] if package.binary else ["--no-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *kind, package.spec, "-d", tmp]
        log.info("fetching %s (%s) from the package registry into %s", package.spec, package.what, target.parent)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / package.file
        if proc.returncode != 0 or not got.exists():
            raise ReferenceDataError(
                f"cannot obtain {package.spec} ({package.what}) from the package registry and it is not "
                f"in the cache {target.parent}: {' '.join(proc.stderr.split())[-500:]}"
            )
        if sha256(got) != package.sha256:
            raise ReferenceDataError(
                f"{package.file} from the registry does not match its pinned SHA-256 {package.sha256[:12]}..."
            )
        os.replace(got, target)


def ppxf_sdist_members(pattern: str) -> list[Path]:
    """Extract members of the ppxf 8.2.6 archive whose path matches ``pattern`` (fnmatch,
    relative to the archive's ``ppxf/`` folder, e.g. ``spectra/*SDSS*``) into the cache."""
    dest = cache_dir() / "ppxf-8.2.6"
    archive = ppxf_sdist()
    with tarfile.open(archive) as tar:
        members = {
            dest / rel: m
            for m in tar.getmembers()
            if (rel := _relative(m)) is not None and m.isfile() and fnmatch.fnmatch(rel, pattern)
        }
        if any(_stale(path, m) for path, m in members.items()):
            with locked("extract"):
                for path, member in members.items():
                    if _stale(path, member):  # re-checked: another process may have written it
                        write_atomic(path, lambda tmp, m=member: tmp.write_bytes(tar.extractfile(m).read()))
    return sorted(members)


def _relative(member: tarfile.TarInfo) -> str | None:
    return member.name.split("/ppxf/", 1)[-1] if "/ppxf/" in member.name else None


def _stale(path: Path, member: tarfile.TarInfo) -> bool:
    return not path.exists() or path.stat().st_size != member.size
