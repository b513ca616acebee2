"""A temporary folder for one run of TFX executors, removed after it.

At the construction of every Beam executor, TFX builds a source package of itself (42 MB)
in a new temporary folder, for remote workers to install
(``tfx.utils.dependency_utils.build_ephemeral_package``), and never removes it. Each local
``run-pipeline`` left about 200 MB in /tmp, each ``simulate``, ``label`` or ingest chunk
42 MB, and scheduled span runs fill the disk. Local workers import TFX from this
environment, and remote runners (``--setup_file``) build no package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def scratch_tempdir():
    """This process's and its Beam workers' temporary folder for the ``with`` block (a new
    one under the current), removed with everything in it when the block ends."""
    scratch = tempfile.mkdtemp(prefix="stellarpop-run-")
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = scratch
    try:
        yield scratch
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(scratch, ignore_errors=True)
