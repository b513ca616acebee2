"""The ``stellarpop`` command line: thin commands over the library."""

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

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from stellarpop.pipeline.cli_support import (
    CPUS, BeamArgs, Library, Restart, Verbose, Workers, about, beam_args, commands, console, existing, need_files,
    count_records, options, output_folder, print_ingest_summary, run_job, served_model, setup_logging,
)
from stellarpop.transforms import features as F

app = typer.Typer(help="Stellar populations of galaxies from SDSS spectra (TFX pipeline).", no_args_is_help=True)
_command = commands(app)
@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error instead of one line.")] = False,
) -> None:
    """Stellar populations of galaxies from SDSS spectra (TFX pipeline)."""
    options["debug"] = debug


@_command()
def ingest(
    inputs: Annotated[Optional[list[str]], typer.Argument(help="Files, directories, globs, @list files, or 'bundled' (the SDSS spectra inside ppxf).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: examples/ (TFRecords, failures, summary) and run.json.")] = Path("runs/ingest"),
    catalogue: Annotated[Optional[Path], typer.Option(help="Table (CSV/FITS/Parquet) of plate, mjd, fiber to resolve against --sdss-root.")] = None,
    sdss_root: Annotated[Optional[Path], typer.Option(help="Folder laid out like SDSS's spectra/lite: PLATE/spec-PLATE-MJD-FIBER.fits.")] = None,
    select: Annotated[bool, typer.Option(help="Drop spectra outside the paper's sample (they are recorded either way).")] = True,
    norm_centre: Annotated[float, typer.Option(help="Centre of the flux normalisation window, Angstrom.")] = F.NORM_CENTRE,
    norm_half_width: Annotated[float, typer.Option(help="Half width of the normalisation window, Angstrom.")] = F.NORM_HALF_WIDTH,
    workers: Workers = CPUS,
    beam_arg: BeamArgs = None,
    chunk_size: Annotated[int, typer.Option(min=0, help="Files per chunk; a re-run of the same command skips finished chunks (0: one chunk).")] = 50_000,
    restart: Restart = False,
    verbose: Verbose = False,
) -> None:
    """Read spectrum files into train/eval/test TFRecords of tf.Examples on the model grid."""
    setup_logging(verbose)
    from stellarpop.components.fits_example_gen import job as ingest_lib, run as ingest_run
    from stellarpop.components.spectra import Preparation

    if not inputs and not catalogue:
        raise typer.BadParameter("give INPUTS or --catalogue")
    if catalogue and not sdss_root:
        raise typer.BadParameter("--catalogue needs --sdss-root")
    if norm_half_width <= 0:
        raise ValueError(f"--norm-half-width {norm_half_width:g}: the window's half width is > 0 Angstrom")
    catalogue, sdss_root = existing(catalogue, "--catalogue"), existing(sdss_root, "--sdss-root", folder=True)
    files, unresolved = ingest_lib.resolve(
        ingest_lib.IngestConfig(inputs=tuple(inputs or ()), catalogue=str(catalogue or ""), sdss_root=str(sdss_root or ""))
    )
    preparation = Preparation(norm_centre=norm_centre, norm_half_width=norm_half_width)
    need_files(files, [u["message"] for u in unresolved], "INPUTS" if inputs else "--catalogue")
    output = output_folder(output)
    examples_dir = output / "examples"
    config = ingest_lib.IngestConfig(select=select, preparation=preparation)
    args = beam_args(beam_arg, workers)
    started = time.time()
    summary, elapsed = run_job(
        output, len(files), f"Ingesting {len(files)} files ({len(unresolved)} inputs name no file) into {examples_dir}",
        lambda progress_dir: ingest_run.run_chunked(
            files + [u["file"] for u in unresolved], str(output),
            dataclasses.replace(config, progress_dir=progress_dir), args, chunk_size, restart,
        ),
    )
    run = {
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
        "seconds": round(elapsed, 2),
        "beam_args": args,
        "python": platform.python_version(),
        "summary": summary,
    }
    (output / "run.json").write_text(json.dumps(run, indent=2))
    print_ingest_summary(summary, examples_dir, elapsed)
    if summary["errors"]:
        raise typer.Exit(code=1)


@_command("templates")
def templates_cmd(
    library: Annotated[Optional[Path], typer.Option(help="Check this sps_lib .npz instead of building E-MILES.")] = None,
    verbose: Verbose = False,
) -> None:
    """Obtain the E-MILES SSP library (once, into $STELLARPOP_CACHE) and describe it."""
    setup_logging(verbose)
    from stellarpop.components import templates

    path = templates.library_path(existing(library, "--library"))
    lib = templates.load_library(path)
    console.print(f"{path}")
    console.print(
        f"{lib.ages.size} ages {lib.ages.min():.3g}-{lib.ages.max():.3g} Gyr x {lib.metals.size} [M/H] "
        f"{lib.metals.min():+.2f}..{lib.metals.max():+.2f}; {lib.lam.size} pixels {lib.lam[0]:.0f}-{lib.lam[-1]:.0f} A; "
        f"FWHM {lib.fwhm.min():.2f}-{lib.fwhm.max():.2f} A"
    )


@_command()
def simulate(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of spectra.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (recorded with the output).")] = 0,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: examples/ and sim_config.json.")] = Path("runs/simulate"),
    mode: Annotated[str, typer.Option(help="Priors: 'sdss' (like the paper's sample), 'broad', or 'wide' (the real sample's range: z 0.002-0.3 weighted to low z, sigma 50-500 km/s, S/N_r 3-100; for training).")] = "sdss",
    sdss_fraction: Annotated[float, typer.Option(help="With --mode wide or broad: this share drawn from the 'sdss' priors instead.")] = 0.0,
    nuisances: Annotated[str, typer.Option(help="Instrument and model nuisances: 'none' or 'realistic' (calibration, LSF, wavelength, sky, masked gaps, template mismatch; components/nuisances.py).")] = "none",
    shard_size: Annotated[int, typer.Option(min=1, help="Spectra per shard (the unit of resume).")] = 1000,
    fits_files: Annotated[bool, typer.Option("--fits", help="Also write SDSS spec-lite FITS files (examples/fits/).")] = False,
    library: Library = None,
    workers: Workers = CPUS,
    beam_arg: BeamArgs = None,
    restart: Restart = False,
    verbose: Verbose = False,
) -> None:
    """Simulate SDSS-like galaxy spectra with exact truth into train/eval/test TFRecords."""
    setup_logging(verbose)
    from stellarpop.components.priors import Priors
    from stellarpop.components.mock_example_gen import job, run as sim_run

    library = existing(library, "--library")
    with about("--mode"):
        priors = Priors(mode=mode)
    with about("--sdss-fraction"):
        priors = Priors(mode=mode, sdss_fraction=sdss_fraction)
    with about("--nuisances"):
        config = job.SimConfig(n=n, seed=seed, priors=priors, nuisances=nuisances, shard_size=shard_size,
                               write_fits=fits_files, library=str(library or ""))
    output = output_folder(output)
    args = beam_args(beam_arg, workers)
    summary, elapsed = run_job(
        output, n, f"Simulating {n} spectra (seed {seed}, {mode} priors, nuisances {nuisances}) into {output / 'examples'}",
        lambda progress_dir: sim_run.run_standalone(str(output), dataclasses.replace(config, progress_dir=progress_dir),
                                                    args, restart))
    table = Table(title=f"simulate: {sum(summary['splits'].values())} spectra in {elapsed:.1f} s")
    table.add_column("split / class")
    table.add_column("count", justify="right")
    for key in ("splits", "classes"):
        for name, count in summary[key].items():
            table.add_row(name, str(count))
    console.print(table)


@_command()
def label(
    inputs: Annotated[list[str], typer.Argument(help="Run folders of ingest, simulate or label (their examples/ is read), Examples folders (Split-* kept) or TFRecord files.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: examples/, checkpoints/, label_summary.json.")] = Path("runs/label"),
    gas_components: Annotated[int, typer.Option(min=0, max=2, help="Kinematic components of the emission lines: 0 (stars only), 1 or 2.")] = 1,
    min_vd: Annotated[float, typer.Option(min=0.0, help="Drop spectra whose pPXF sigma is below this (km/s; the paper's cut).")] = 50.0,
    library: Library = None,
    workers: Workers = CPUS,
    beam_arg: BeamArgs = None,
    restart: Annotated[bool, typer.Option(help="Discard checkpointed fits in --output instead of resuming.")] = False,
    verbose: Verbose = False,
) -> None:
    """Label spectra with pPXF (the paper's settings): checkpointed, resumable, on Beam."""
    setup_logging(verbose)
    from stellarpop.components import ppxf_fit
    from stellarpop.components.ppxf_labeler import job, run as label_run

    library = existing(library, "--library")
    splits = label_run.input_splits(inputs)
    total = count_records(splits)
    if not total:
        raise ValueError(f"INPUTS {' '.join(inputs)}: 0 tf.Examples in {sum(map(len, splits.values()))} TFRecord file(s)")
    output = output_folder(output)
    config = job.LabelConfig(
        fit=ppxf_fit.FitConfig(gas_components=gas_components, library=str(library or "")), min_vd=min_vd
    )
    args = beam_args(beam_arg, workers)
    summary, elapsed = run_job(
        output, total, f"Labelling {total} spectra with pPXF into {output}",
        lambda progress_dir: label_run.run_standalone(
            [str(Path(i).resolve()) for i in inputs], str(output), dataclasses.replace(config, progress_dir=progress_dir),
            args, restart,
        ),
    )
    table = Table(title=f"label: {summary['fitted']} fits ({summary['fitted'] - summary['fitted_before']} new) in {elapsed:.1f} s")
    for col in ("split", job.LABELLED, job.FAILED, job.LOW_VD):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, counts in summary["splits"].items():
        table.add_row(split, *(str(counts[k]) for k in (job.LABELLED, job.FAILED, job.LOW_VD)))
    console.print(table)
    for message, n in list(summary["failure_messages"].items())[:10]:
        console.print(f"[red]{n} x {message}[/red]", highlight=False)


@_command("run-pipeline")
def run_pipeline(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML (see pipeline/configs.py PipelineConfig).")],
    workers: Annotated[int, typer.Option(min=0, help="Local Beam worker processes; 0: the config's, else one per core.")] = 0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every component again (no TFX execution cache).")] = False,
    span: Annotated[Optional[str], typer.Option(help="With `spans` in the config: the span to ingest, a number or YYYY-MM-DD (default: the latest).")] = None,
    verbose: Verbose = False,
) -> None:
    """Run the TFX pipeline locally (LocalDagRunner, SQLite MLMD, Beam DirectRunner); with
    `spans`, one new span on a rolling window of the last N."""
    setup_logging(verbose)
    from stellarpop.pipeline import configs

    with about("--config"):
        cfg = configs.PipelineConfig.from_yaml(str(config))
    from stellarpop.pipeline import local_runner  # TFX: after the checks
    if workers:
        cfg = dataclasses.replace(cfg, workers=workers)
    if no_cache:
        cfg = dataclasses.replace(cfg, enable_cache=False)
    with about("--span"):
        if span is not None and not cfg.spans:
            raise ValueError(f"{span}: the config has no `spans` (a rolling window of spans)")
        span_n = local_runner.resolve_span(cfg, local_runner.parse_span(span) if span else None) if cfg.spans else None
    started = time.time()
    at = f", span {span_n} (window of {cfg.spans})" if span_n is not None else ""
    console.print(f"Running pipeline {cfg.name} ({config}){at} under {Path(cfg.root).resolve()}")
    cfg = local_runner.run(cfg, span=span_n)
    pushed = sorted(Path(cfg.serving_dir).glob("*/saved_model.pb")) if Path(cfg.serving_dir).exists() else []
    console.print(f"done in {time.time() - started:.0f} s; " + (
        f"pushed model: {pushed[-1].parent}" if pushed else "no model pushed (not blessed: see the Evaluator's output)"))


@_command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Spectrum files, folders, globs, @lists, or 'bundled'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="results.csv or results.parquet")] = Path("results.csv"),
    model: Annotated[Optional[Path], typer.Option(help="SavedModel, or a folder of numbered versions (a push); default: the shipped model.")] = None,
    server: Annotated[Optional[str], typer.Option(help="HOST:PORT of TF Serving (or `stellarpop serve`): predict over gRPC instead of in process.")] = None,
    model_name: Annotated[str, typer.Option(help="With --server: the model's name in the server's config.")] = "stellarpop",
    model_version: Annotated[Optional[int], typer.Option(min=1, help="With --server: this version (default: the latest).")] = None,
    label: Annotated[Optional[str], typer.Option(help="With --server: the version with this label (stable, canary).")] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="With --server: seconds to wait for the model, and per request.")] = 60.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Spectra per call of the model.")] = 256,
    show: Annotated[int, typer.Option(min=0, help="Print the first rows of the table.")] = 20,
    verbose: Verbose = False,
) -> None:
    """Predict log age, [M/H], E(B-V) and sigma (with 1-sigma errors) for spectrum files."""
    setup_logging(verbose)
    from stellarpop.components import readers
    from stellarpop.serving import predict as pred

    with about("--output"):
        pred.table_format(str(output))
    if output.is_dir():
        raise ValueError(f"--output {output}: a folder, not a file")
    files, missing = readers.resolve(inputs)
    need_files(files, [f"{m.file}: {m.message}" for m in missing], "INPUTS")
    if server:
        predictor, where = served_model(server, model, model_name, model_version, label, timeout, batch_size)
    else:
        with about("--model"):
            predictor = pred.Predictor(str(model) if model else None)
        where = predictor.path
    console.print(f"Predicting {len(files)} spectra with {where}")
    started = time.time()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("spectra", total=len(files))
        rows = pred.predict_files(files, predictor, batch_size, on_progress=lambda n: bar.advance(task, n))
    for m in missing:
        rows.append({"file": m.file, "error": f"{m.file}: {m.message}"})
    pred.write_table(rows, str(output))
    table = Table(title=f"predict: {len(rows)} rows in {time.time() - started:.1f} s -> {output}")
    for col in ("spec_id", "z", "log_age", "mh", "ebv", "vd", "ood", "quality / error"):
        table.add_column(col)
    for row in rows[:show]:
        if row.get("error"):
            table.add_row(str(row.get("spec_id") or Path(row["file"]).name), *[""] * 6, f"[red]{row['error']}[/red]")
            continue
        table.add_row(
            row["spec_id"], f"{row['z']:.4f}",
            *(f"{row[k]:.3f}+-{row[k + '_err']:.3f}" for k in ("log_age", "mh", "ebv")),
            f"{row['vd']:.0f}+-{row['vd_err']:.0f}", f"{row[F.OOD_SCORE]:.2f}" + (" [red]FLAG[/red]" if row[F.OOD_FLAG] else ""),
            row["quality"],
        )
    # Piped output defaults to 80 columns, which would cut the values short.
    Console(stderr=True, width=max(console.width, 140)).print(table)
    if any(r.get("error") for r in rows):
        raise typer.Exit(code=1)


@_command()
def report(
    run_root: Annotated[Path, typer.Argument(help="A pipeline run's root (metadata.sqlite, artifacts/).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for index.html and its figures.")] = Path("runs/report"),
    benchmark: Annotated[Optional[list[Path]], typer.Option(help="Benchmark JSON to include, repeatable (RUN_ROOT/benchmarks/*.json always is).")] = None,
    max_examples: Annotated[int, typer.Option(min=1, help="Test-split spectra predicted for the figures.")] = 5000,
    verbose: Verbose = False,
) -> None:
    """Write a static HTML report of a pipeline run: blessing, slices, the paper's figures."""
    setup_logging(verbose)
    from stellarpop.pipeline import report as report_lib

    root = existing(run_root, "RUN_ROOT", folder=True)
    files = [str(existing(b, "--benchmark")) for b in benchmark or []]
    with about("RUN_ROOT"):
        index = report_lib.write_report(str(root), str(output_folder(output)), benchmarks=files, max_examples=max_examples)
    console.print(f"report: {index}")


@_command()
def stream(
    watch: Annotated[str, typer.Option(help="Folder (or gs:// prefix) where spectrum files land; listed recursively.")],
    model_base_path: Annotated[str, typer.Option(help="Numbered SavedModel versions; a newly pushed one is switched to.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder of windowed predictions/*.csv, dead_letters/, ledger/.")],
    window: Annotated[float, typer.Option(help="Fixed windows of this many seconds, each written once it ends.")] = 10.0,
    stop_after: Annotated[Optional[float], typer.Option(help="Stop after this many seconds (default: at Ctrl-C or SIGTERM).")] = None,
    poll: Annotated[float, typer.Option(help="Seconds between listings (and model-version checks).")] = 1.0,
    pubsub_subscription: Annotated[Optional[str], typer.Option(help="projects/P/subscriptions/S of the bucket's object-finalize notifications (Dataflow), read instead of listing.")] = None,
    beam_arg: BeamArgs = None,
    verbose: Verbose = False,
) -> None:
    """Predict spectrum files continuously as they land (a Beam streaming job), with the
    newest pushed model, into windowed tables; bad files go to dead letters."""
    setup_logging(verbose)
    from stellarpop.serving.stream_run import run_stream

    console.print(f"Streaming {watch} -> {output} with {model_base_path} (windows of {window:g} s; Ctrl-C stops)")
    summary = run_stream(watch, model_base_path, output, window_s=window, stop_after_s=stop_after, poll_s=poll,
                         beam_args=list(beam_arg) if beam_arg else None, pubsub_subscription=pubsub_subscription)
    table = Table(title=f"stream: {output}")
    table.add_column("")
    table.add_column("value", justify="right")
    for key in ("files_predicted", "dead_letters", "skipped_already_predicted", "model_versions", "latency_s", "job_id"):
        if key in summary:
            table.add_row(key, str(summary[key]))
    console.print(table)


@_command()
def calibrate(
    model: Annotated[Path, typer.Option(help="An export to calibrate (or a folder of numbered versions: the newest).")],
    transform_graph: Annotated[Path, typer.Option(help="The Transform output it was trained behind (transform_graph/<id>).")],
    train: Annotated[list[str], typer.Option(help="Glob of its training split's gzipped Examples, repeatable.")],
    eval_: Annotated[list[str], typer.Option("--eval", help="Glob of held-out gzipped Examples (never trained on), repeatable.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="New export folder (e.g. the next version number).")],
    verbose: Verbose = False,
) -> None:
    """Calibrate an existing export's intervals and out-of-domain score without retraining."""
    setup_logging(verbose)
    from stellarpop.pipeline import recalibrate

    paths = recalibrate.check_arguments(model, transform_graph, train, eval_, output)
    info = recalibrate.recalibrate(*paths)
    c = info["calibration"]
    console.print(f"{output}: interval scales {c['interval_scale']}, ood threshold {c['ood_threshold']:.2f} "
                  f"({c['n_train']} train, {c['n_eval']} held-out examples)")


@_command()
def serve(
    model_base_path: Annotated[Path, typer.Option(help="Folder of numbered SavedModel versions (the Pusher's serving_dir).")],
    model_name: Annotated[str, typer.Option(help="The name clients ask for.")] = "stellarpop",
    port: Annotated[int, typer.Option(min=0, max=65535, help="gRPC port (TF Serving's is 8500).")] = 8500,
    rest_port: Annotated[int, typer.Option(min=0, max=65535, help="REST status port (TF Serving's is 8501).")] = 8501,
    version_labels: Annotated[str, typer.Option(help="Labels of versions, e.g. stable=2,canary=3.")] = "",
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every interface).")] = "localhost",
    poll_s: Annotated[float, typer.Option(min=0.1, help="Seconds between looks for newly pushed versions.")] = 2.0,
    verbose: Verbose = False,
) -> None:
    """Serve pushed models over TF Serving's gRPC API on CPU: a development and test stand-in
    for TF Serving (deployment: serving/deploy/)."""
    setup_logging(verbose)
    from stellarpop.serving.server import parse_labels, serve as serve_models

    base = existing(model_base_path, "--model-base-path", folder=True)
    with about("--version-labels"):
        labels = parse_labels(version_labels)
    serve_models(str(base), model_name, port, rest_port, poll_s=poll_s, labels=labels, host=host)


def main() -> None:
    from stellarpop.components import quiet_shutdown

    quiet_shutdown.install()  # this process's own TensorFlow objects at exit
    app()


if __name__ == "__main__":
    main()
