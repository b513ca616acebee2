"""Names, dotted module paths and Beam argument profiles shared by runners and the CLI."""

from __future__ import annotations

import os

PIPELINE_NAME = "stellarpop"


def local_beam_args(workers: int | None = None) -> list[str]:
    """DirectRunner on several local processes (Beam's default runs one thread).

    Also limits each process to one BLAS/OpenMP thread (workers inherit the environment):
    with one worker per core, numpy's threads would only fight over the cores.
    """
    workers = workers or os.cpu_count() or 1
    if workers > 1:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    return [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={workers}",
    ]


def dataflow_beam_args(project: str, region: str, temp_location: str, setup_file: str = "./setup.py") -> list[str]:
    """Dataflow: workers install this distribution from ``setup.py``."""
    return [
        "--runner=DataflowRunner",
        f"--project={project}",
        f"--region={region}",
        f"--temp_location={temp_location}",
        f"--setup_file={setup_file}",
    ]
