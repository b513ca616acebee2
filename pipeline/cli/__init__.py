"""The ``stellarpop`` command line: thin commands over the library, one module per group.

- :mod:`.common`: the app, its one-line errors, the shared options and progress bars;
- :mod:`.data`: ``templates``, ``simulate``, ``ingest``, ``label``;
- :mod:`.train`: ``run-pipeline``, ``report``, ``calibrate``;
- :mod:`.serve`: ``predict``, ``serve``, ``stream``.

The CLI is the composition root: the only package that imports every layer.
"""

from __future__ import annotations

import os

# Quiet the libraries before they load, here and in Beam's worker processes, which inherit
# the environment: TensorFlow's CUDA-plugin and C++ info lines, google-cloud's Python 3.10
# deprecation notices.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")

import warnings  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

from stellarpop.pipeline.cli import data, serve, train  # noqa: E402, F401 - register the commands
from stellarpop.pipeline.cli.common import app  # noqa: E402


def main() -> None:
    from stellarpop.components import quiet_shutdown

    quiet_shutdown.install()  # this process's own TensorFlow objects at exit
    app()


if __name__ == "__main__":
    main()
