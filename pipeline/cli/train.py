"""The training commands: ``run-pipeline``, ``report`` and ``calibrate``."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated

import typer

from stellarpop.pipeline.cli.common import (
    Verbose,
    about,
    command,
    console,
    existing,
    output_folder,
    setup_logging,
)
from stellarpop.schema import model_contract as contract


@command("run-pipeline")
def run_pipeline(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Pipeline YAML (see pipeline/configs.py PipelineConfig).")
    ],
    workers: Annotated[
        int, typer.Option(min=0, help="Local Beam worker processes; 0: the config's, else one per core.")
    ] = 0,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run every component again (no TFX execution cache).")
    ] = False,
    span: Annotated[
        str | None,
        typer.Option(
            help="With `spans` in the config: the span to ingest, a number or YYYY-MM-DD (default: the latest)."
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run the TFX pipeline locally (LocalDagRunner, SQLite MLMD, Beam DirectRunner); with
    `spans`, one new span on a rolling window of the last N."""
    setup_logging(verbose)
    from stellarpop.pipeline import configs

    with about("--config"):
        cfg = configs.PipelineConfig.from_yaml(str(config))
    from stellarpop.components import spans
    from stellarpop.pipeline import local_runner  # TFX: after the checks

    if workers:
        cfg = dataclasses.replace(cfg, workers=workers)
    if no_cache:
        cfg = dataclasses.replace(cfg, enable_cache=False)
    with about("--span"):
        if span is not None and not cfg.spans:
            raise ValueError(f"{span}: the config has no `spans` (a rolling window of spans)")
        span_n = local_runner.resolve_span(cfg, spans.parse_span(span) if span else None) if cfg.spans else None
    started = time.time()
    at = f", span {span_n} (window of {cfg.spans})" if span_n is not None else ""
    console.print(f"Running pipeline {cfg.name} ({config}){at} under {Path(cfg.root).resolve()}")
    cfg = local_runner.run(cfg, span=span_n)
    pushed = contract.versions(cfg.serving_dir)  # numeric order: version 10 after 9
    console.print(
        f"done in {time.time() - started:.0f} s; "
        + (
            f"pushed model: {pushed[max(pushed)]}"
            if pushed
            else "no model pushed (not blessed: see the Evaluator's output)"
        )
    )


@command()
def report(
    run_root: Annotated[Path, typer.Argument(help="A pipeline run's root (metadata.sqlite, artifacts/).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for index.html and its figures.")] = Path(
        "runs/report"
    ),
    benchmark: Annotated[
        list[Path] | None,
        typer.Option(help="Benchmark JSON to include, repeatable (RUN_ROOT/benchmarks/*.json always is)."),
    ] = None,
    max_examples: Annotated[int, typer.Option(min=1, help="Test-split spectra predicted for the figures.")] = 5000,
    verbose: Verbose = False,
) -> None:
    """Write a static HTML report of a pipeline run: blessing, slices, the paper's figures."""
    setup_logging(verbose)
    from stellarpop.pipeline.report import run_report as report_lib

    root = existing(run_root, "RUN_ROOT", folder=True)
    files = [str(existing(b, "--benchmark")) for b in benchmark or []]
    with about("RUN_ROOT"):
        index = report_lib.write_report(
            str(root), str(output_folder(output)), benchmarks=files, max_examples=max_examples
        )
    console.print(f"report: {index}")


@command()
def calibrate(
    model: Annotated[Path, typer.Option(help="An export to calibrate (or a folder of numbered versions: the newest).")],
    transform_graph: Annotated[
        Path, typer.Option(help="The Transform output it was trained behind (transform_graph/<id>).")
    ],
    train: Annotated[list[str], typer.Option(help="Glob of its training split's gzipped Examples, repeatable.")],
    eval_: Annotated[
        list[str], typer.Option("--eval", help="Glob of held-out gzipped Examples (never trained on), repeatable.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="New export folder (e.g. the next version number).")],
    verbose: Verbose = False,
) -> None:
    """Calibrate an existing export's intervals and out-of-domain score without retraining."""
    setup_logging(verbose)
    from stellarpop.pipeline.training import recalibrate

    paths = recalibrate.check_arguments(model, transform_graph, train, eval_, output)
    info = recalibrate.recalibrate(*paths)
    c = info["calibration"]
    console.print(
        f"{output}: interval scales {c['interval_scale']}, ood threshold {c['ood_threshold']:.2f} "
        f"({c['n_train']} train, {c['n_eval']} held-out examples)"
    )
