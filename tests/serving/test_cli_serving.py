"""`stellarpop serve` and `stellarpop predict --server`: the same table as local prediction."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from make_test_data import SAME_PREDICTION
from typer.testing import CliRunner

from stellarpop.pipeline.cli import app
from stellarpop.schema import features as F
from stellarpop.serving.server import LocalServer

VALUES = list(F.LABEL_KEYS + F.LABEL_ERR_KEYS) + [F.OOD_SCORE]


def _predict(args: list[str]) -> pd.DataFrame:
    result = CliRunner().invoke(app, ["predict", *args])
    assert result.exit_code == 0, result.output
    return pd.read_csv(args[args.index("-o") + 1])


def test_predict_over_grpc_writes_the_local_table(base_path, bundled, tmp_path):
    files = [str(p) for p in bundled.values()]
    local = _predict([*files, "--model", str(base_path), "-o", str(tmp_path / "local.csv")])
    server = LocalServer(str(base_path), port=0, rest_port=None)
    server.start()
    try:
        served = _predict(
            [*files, "--server", server.target, "--label", "", "-o", str(tmp_path / "served.csv"), "--batch-size", "1"]
        )
    finally:
        server.stop()
    assert list(served.columns) == list(local.columns) and len(served) == 2
    np.testing.assert_allclose(served[VALUES].to_numpy(), local[VALUES].to_numpy(), **SAME_PREDICTION)
    assert served["quality"].fillna("").tolist() == local["quality"].fillna("").tolist()
    assert served[F.OOD_FLAG].tolist() == local[F.OOD_FLAG].tolist() == [False, False]  # real galaxies: in domain


@pytest.mark.parametrize(
    "args, message",
    [
        (["--server", "localhost:1", "--model", "m"], "--model and --server"),
        (["--server", "localhost:1", "--model-version", "2", "--label", "stable"], "one or the other"),
        (["--server", "localhost:1", "--timeout", "1"], "localhost:1"),
    ],
)
def test_predict_server_errors_are_one_line(bundled, tmp_path, args, message):
    result = CliRunner().invoke(app, ["predict", str(bundled["NGC3522"]), "-o", str(tmp_path / "t.csv"), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_serve_command_starts_and_stops(base_path):
    cmd = [
        sys.executable,
        "-m",
        "stellarpop.pipeline.cli",
        "serve",
        "--model-base-path",
        str(base_path),
        "--port",
        "0",
        "--rest-port",
        "0",
        "--version-labels",
        "stable=1",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        line = proc.stdout.readline()
        assert re.search(r"gRPC \S+:\d+, REST status http://\S+/v1/models/stellarpop", line), line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


def test_serve_refuses_a_missing_folder(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--model-base-path", str(tmp_path / "none")])
    assert result.exit_code == 2 and "--model-base-path" in result.output


def test_stream_command_predicts_what_lands_and_refuses_bad_arguments(base_path, bundled, tmp_path):
    watch, out = tmp_path / "landing", tmp_path / "out"
    watch.mkdir()
    bad = CliRunner().invoke(
        app,
        [
            "stream",
            "--watch",
            str(tmp_path / "none"),
            "--model-base-path",
            str(base_path),
            "-o",
            str(out),
            "--stop-after",
            "1",
        ],
    )
    assert bad.exit_code == 2 and "--watch" in bad.output and "Traceback" not in bad.output
    import shutil

    shutil.copy(bundled["NGC3522"], watch / "a.fits")
    # 8 s: on a loaded machine, loading the model and the first window take several seconds.
    result = CliRunner().invoke(
        app,
        [
            "stream",
            "--watch",
            str(watch),
            "--model-base-path",
            str(base_path),
            "-o",
            str(out),
            "--stop-after",
            "8",
            "--window",
            "2",
            "--poll",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    from stellarpop.serving import stream_io

    table = stream_io.read_predictions(str(out))
    assert table["spec_id"].tolist() == ["2488-54149-0001"] and table["model_version"].tolist() == [1]
