"""Every command answers a user error with one line naming the argument, a non-zero exit and
no traceback, before doing any work (nothing is written under ``--output``)."""

from __future__ import annotations

import gzip
import logging

import pytest
from typer.testing import CliRunner

from stellarpop.pipeline import cli
from stellarpop.pipeline.cli import common

SHARD = "shard-00000-of-00001.gz"
NO_EXAMPLES = "no tf.Example TFRecords (expected an examples/ folder with Split-* subfolders, or TFRecord files)"
NO_FILE = "missing.fits: file not found"


def _write_records(path, n: int) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), "GZIP") as writer:
        for _ in range(n):
            writer.write(tf.train.Example().SerializeToString())


@pytest.fixture
def tmp(tmp_path):
    """Bad inputs of every kind; ``out`` (every case's output) is never created."""
    for name, text in {
        "bad.yaml": "name: [unclosed\n",
        "list.yaml": "- a\n- b\n",
        "unknown.yaml": "nmae: x\n",
        "trainer_window.yaml": "trainer: {norm_centre: 5500}\n",
        "examples_typo.yaml": "examples: {source: simulate, nn: 5}\n",
        "sdss_fraction.yaml": "examples: {source: simulate, mode: sdss, sdss_fraction: 0.5}\n",
        "label_typo.yaml": "label: {fit: {gas: 1}}\n",
        "preparation.yaml": "preparation: {norm_half_width: 0}\n",
        "wrongtype.yaml": "workers: many\n",
        "afile.txt": "text\n",
        "cat.csv": "plate,mjd,fiber\n266,51630,1\n",
    }.items():
        (tmp_path / name).write_text(text)
    for folder in ("empty", "sim/examples", "dir.csv"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "sim" / "sim_config.json").write_text("{}")
    for name, content in {"zero": b"", "notrecord": b"hello, not a TFRecord"}.items():
        (tmp_path / name / "examples" / "Split-train").mkdir(parents=True)
        with gzip.open(tmp_path / name / "examples" / "Split-train" / SHARD, "wb") as fh:
            fh.write(content)
    return tmp_path


CASES = [
    # predict
    (
        ["predict", "bundled", "-o", "{tmp}/out/r.txt"],
        2,
        "--output {tmp}/out/r.txt: the output is a .csv or .parquet file",
    ),
    (["predict", "bundled", "-o", "{tmp}/dir.csv"], 2, "--output {tmp}/dir.csv: a folder, not a file"),
    (["predict", "{tmp}/missing.fits", "-o", "{tmp}/out/r.csv"], 2, f"INPUTS: no spectrum file ({{tmp}}/{NO_FILE})"),
    (
        ["predict", "bundled", "-o", "{tmp}/out/r.csv", "--model", "{tmp}/empty"],
        2,
        "--model {tmp}/empty: neither a SavedModel",
    ),
    (["predict", "bundled", "-o", "{tmp}/out/r.csv", "--batch-size", "0"], 2, "'--batch-size'"),
    # run-pipeline
    (["run-pipeline", "--config", "{tmp}/missing.yaml"], 2, "--config {tmp}/missing.yaml: no such file"),
    (["run-pipeline", "--config", "{tmp}/bad.yaml"], 2, "--config {tmp}/bad.yaml: invalid YAML at line 2"),
    (
        ["run-pipeline", "--config", "{tmp}/list.yaml"],
        2,
        "--config {tmp}/list.yaml: the top level is a list, not a mapping",
    ),
    (["run-pipeline", "--config", "{tmp}/unknown.yaml"], 2, "--config {tmp}/unknown.yaml: unknown keys ['nmae']"),
    # A Transform setting given to the Trainer alone used to reach the model's metadata only.
    (
        ["run-pipeline", "--config", "{tmp}/trainer_window.yaml"],
        2,
        "--config {tmp}/trainer_window.yaml: trainer config: unknown keys ['norm_centre']",
    ),
    (
        ["run-pipeline", "--config", "{tmp}/examples_typo.yaml"],
        2,
        "--config {tmp}/examples_typo.yaml: examples: unknown keys ['nn']",
    ),
    (
        ["run-pipeline", "--config", "{tmp}/sdss_fraction.yaml"],
        2,
        "--config {tmp}/sdss_fraction.yaml: priors sdss_fraction is in [0, 1] "
        "and only for broad or wide priors, not 0.5 with sdss",
    ),
    (
        ["run-pipeline", "--config", "{tmp}/label_typo.yaml"],
        2,
        "--config {tmp}/label_typo.yaml: label.fit: unknown keys ['gas']",
    ),
    (["run-pipeline", "--config", "pipeline/demo.yaml", "--span", "3"], 2, "--span 3: the config has no `spans`"),
    (
        ["run-pipeline", "--config", "{tmp}/preparation.yaml"],
        2,
        "--config {tmp}/preparation.yaml: norm_half_width 0: the window's half width is > 0 Angstrom",
    ),
    (
        ["run-pipeline", "--config", "{tmp}/wrongtype.yaml"],
        2,
        "--config {tmp}/wrongtype.yaml: workers is 'many', expected int",
    ),
    (["run-pipeline", "--config", "{tmp}/empty"], 2, "--config {tmp}/empty: "),
    (["run-pipeline", "--config", "pipeline/demo.yaml", "--workers", "-1"], 2, "'--workers'"),
    # label
    (["label", "{tmp}/sim", "-o", "{tmp}/out"], 2, f"{{tmp}}/sim: {NO_EXAMPLES}"),
    (["label", "{tmp}/empty", "-o", "{tmp}/out"], 2, f"{{tmp}}/empty: {NO_EXAMPLES}"),
    (["label", "{tmp}/nothing", "-o", "{tmp}/out"], 2, "{tmp}/nothing: no such file or Examples folder"),
    (["label", "{tmp}/zero", "-o", "{tmp}/out"], 2, "INPUTS {tmp}/zero: 0 tf.Examples in 1 TFRecord file(s)"),
    (
        ["label", "{tmp}/notrecord", "-o", "{tmp}/out"],
        2,
        f"{{tmp}}/notrecord/examples/Split-train/{SHARD}: not a TFRecord file",
    ),
    (["label", "{tmp}/sim", "-o", "{tmp}/out", "--gas-components", "3"], 2, "'--gas-components'"),
    (["label", "{tmp}/sim", "-o", "{tmp}/out", "--min-vd", "-1"], 2, "'--min-vd'"),
    (["label", "{tmp}/sim", "-o", "{tmp}/out", "--workers", "0"], 2, "'--workers'"),
    (["label", "{tmp}/sim", "-o", "{tmp}/out", "--library", "{tmp}/no.npz"], 2, "--library {tmp}/no.npz: no such file"),
    # simulate
    (["simulate", "--n", "-5", "-o", "{tmp}/out"], 2, "'--n'"),
    (["simulate", "--shard-size", "0", "-o", "{tmp}/out"], 2, "'--shard-size'"),
    (["simulate", "--workers", "0", "-o", "{tmp}/out"], 2, "'--workers'"),
    (
        ["simulate", "--mode", "flat", "-o", "{tmp}/out"],
        2,
        "--mode priors mode is one of ('sdss', 'broad', 'wide', 'sky'), not 'flat'",
    ),
    (
        ["simulate", "--sdss-fraction", "0.5", "-o", "{tmp}/out"],
        2,
        "--sdss-fraction priors sdss_fraction is in [0, 1] and only for broad or wide priors, not 0.5 with sdss",
    ),
    (
        ["simulate", "--nuisances", "some", "-o", "{tmp}/out"],
        2,
        "--nuisances nuisances preset is 'none' or 'realistic', not 'some'",
    ),
    (["simulate", "--library", "{tmp}/no.npz", "-o", "{tmp}/out"], 2, "--library {tmp}/no.npz: no such file"),
    (["simulate", "--library", "{tmp}/empty", "-o", "{tmp}/out"], 2, "--library {tmp}/empty: a folder, not a file"),
    (["simulate", "--n", "1", "-o", "{tmp}/afile.txt"], 2, "--output {tmp}/afile.txt: a file, not a folder"),
    # ingest
    (["ingest", "{tmp}/missing.fits", "-o", "{tmp}/out"], 2, f"INPUTS: no spectrum file ({{tmp}}/{NO_FILE})"),
    (
        ["ingest", "--catalogue", "{tmp}/no.csv", "--sdss-root", "{tmp}/empty", "-o", "{tmp}/out"],
        2,
        "--catalogue {tmp}/no.csv: no such file",
    ),
    (
        ["ingest", "--catalogue", "{tmp}/cat.csv", "--sdss-root", "{tmp}/afile.txt", "-o", "{tmp}/out"],
        2,
        "--sdss-root {tmp}/afile.txt: not a folder",
    ),
    (
        ["ingest", "--catalogue", "{tmp}/cat.csv", "--sdss-root", "{tmp}/empty", "-o", "{tmp}/out"],
        2,
        "--catalogue: no spectrum file (",
    ),
    (["ingest", "--catalogue", "{tmp}/cat.csv", "-o", "{tmp}/out"], 2, "--catalogue needs --sdss-root"),
    (["ingest", "bundled", "-o", "{tmp}/afile.txt"], 2, "--output {tmp}/afile.txt: a file, not a folder"),
    (["ingest", "bundled", "-o", "{tmp}/out", "--workers", "0"], 2, "'--workers'"),
    (["ingest", "bundled", "-o", "{tmp}/out", "--chunk-size", "-1"], 2, "'--chunk-size'"),
    (
        ["ingest", "bundled", "-o", "{tmp}/out", "--norm-half-width", "0"],
        2,
        "--norm-half-width 0: the window's half width is > 0",
    ),
    # templates
    (["templates", "--library", "{tmp}/no.npz"], 2, "--library {tmp}/no.npz: no such file"),
    (["templates", "--library", "{tmp}/afile.txt"], 2, "afile.txt: not an sps_lib file"),
]


@pytest.mark.parametrize(
    "argv, code, message", CASES, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _, _) in enumerate(CASES)]
)
def test_user_error_is_one_line_before_any_work(tmp, argv, code, message):
    result = CliRunner().invoke(cli.app, [a.format(tmp=tmp) for a in argv])
    assert result.exit_code == code, result.output
    assert message.format(tmp=tmp) in result.output
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    assert not (tmp / "out").exists()


def test_debug_shows_the_exception(tmp):
    result = CliRunner().invoke(cli.app, ["--debug", "predict", "bundled", "-o", f"{tmp}/r.txt"])
    assert isinstance(result.exception, ValueError) and ".csv or .parquet" in str(result.exception)


def test_unexpected_exception_is_an_internal_error(monkeypatch):
    from stellarpop.components import templates

    def boom(path=None):
        raise KeyError("boom")

    monkeypatch.setattr(templates, "library_path", boom)
    result = CliRunner().invoke(cli.app, ["templates"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "internal error: KeyError: 'boom' (run with --debug for the traceback)" in result.output


def test_no_cache_turns_off_the_tfx_cache(tmp, monkeypatch):
    from stellarpop.pipeline import local_runner

    seen = []
    monkeypatch.setattr(local_runner, "run", lambda cfg, span=None: seen.append(cfg) or cfg.resolved())
    (tmp / "p.yaml").write_text(f"root: {tmp}/root\n")
    result = CliRunner().invoke(cli.app, ["run-pipeline", "--config", str(tmp / "p.yaml"), "--no-cache"])
    assert result.exit_code == 0, result.output
    assert [c.enable_cache for c in seen] == [False]


def test_label_reads_the_examples_folder_of_a_run_folder(tmp_path):
    from stellarpop.components.ppxf_labeler import run

    shard = tmp_path / "examples" / "Split-train" / SHARD
    _write_records(shard, 2)
    (tmp_path / "sim_config.json").write_text("{}")
    (tmp_path / "examples" / "simulate_summary.json").write_text("{}")
    (tmp_path / "examples" / "shards").mkdir()
    (tmp_path / "examples" / "shards" / "shard-00000.done").write_text("{}")
    assert run.input_splits([str(tmp_path)]) == {"train": [str(shard)]}
    assert run.input_splits([str(tmp_path / "examples")]) == {"train": [str(shard)]}


def test_label_output_that_is_a_file_is_refused_before_fitting(tmp_path):
    _write_records(tmp_path / "run" / "examples" / "Split-train" / SHARD, 1)
    (tmp_path / "out").write_text("")
    result = CliRunner().invoke(cli.app, ["label", str(tmp_path / "run"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and f"--output {tmp_path / 'out'}: a file, not a folder" in result.output


def test_cache_announcements_show_without_verbose():
    common.setup_logging(verbose=False)
    for name in common.ANNOUNCING_LOGGERS:
        assert logging.getLogger(name).isEnabledFor(logging.INFO)
    assert not logging.getLogger("stellarpop.components.simulate").isEnabledFor(logging.INFO)
