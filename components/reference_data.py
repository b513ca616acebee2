"""Reference data obtained from the package registry into a user cache (I/O only).

The ppxf 8.2.6 source distribution carries what the 9.x wheel no longer does: more real
SDSS spectra (e.g. NGC4636_SDSS_DR12) and the E-MILES SSP library. It is fetched once
with pip into ``$STELLARPOP_CACHE`` (default ``~/.cache/stellarpop``), checked against a
pinned SHA-256, and members are extracted on demand.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PPXF_SDIST = "ppxf==8.2.6"
PPXF_SDIST_FILE = "ppxf-8.2.6.tar.gz"
PPXF_SDIST_SHA256 = "e51249d28f12eb41c6dce325a17c7bd554b546e73de930a59f7b29b02f35c8c3"


class ReferenceDataError(RuntimeError):
    """Reference data could be neither found in the cache nor fetched."""


def cache_dir() -> Path:
    return Path(os.environ.get("STELLARPOP_CACHE", Path.home() / ".cache" / "stellarpop"))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ppxf_sdist() -> Path:
    """Path of the verified ppxf 8.2.6 source archive, downloading it with pip if needed."""
    target = cache_dir() / PPXF_SDIST_FILE
    if target.exists() and sha256(target) == PPXF_SDIST_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", PPXF_SDIST, "-d", tmp]
        log.info("fetching %s from the package registry", PPXF_SDIST)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / PPXF_SDIST_FILE
        if proc.returncode != 0 or not got.exists():
            raise ReferenceDataError(
                f"cannot obtain {PPXF_SDIST} (source distribution) from the package registry and it is not "
                f"in the cache {target.parent}: {proc.stderr.strip()[-500:]}"
            )
        if sha256(got) != PPXF_SDIST_SHA256:
            raise ReferenceDataError(f"{PPXF_SDIST_FILE} from the registry does not match its pinned SHA-256")
        os.replace(got, target)
    return target


def ppxf_sdist_members(pattern: str) -> list[Path]:
    """Extract members of the ppxf 8.2.6 archive whose path matches ``pattern`` (fnmatch,
    relative to the archive's ``ppxf/`` folder, e.g. ``spectra/*SDSS*``) into the cache."""
    dest = cache_dir() / "ppxf-8.2.6"
    out = []
    with tarfile.open(ppxf_sdist()) as tar:
        for member in tar.getmembers():
            rel = member.name.split("/ppxf/", 1)[-1] if "/ppxf/" in member.name else None
            if rel is None or not member.isfile() or not fnmatch.fnmatch(rel, pattern):
                continue
            path = dest / rel
            if not path.exists() or path.stat().st_size != member.size:
                path.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(path.with_suffix(".part"), "wb") as dst:
                    dst.write(src.read())
                os.replace(path.with_suffix(".part"), path)
            out.append(path)
    return sorted(out)
