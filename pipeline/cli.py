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
import logging
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from stellarpop.components import progress

app = typer.Typer(help="Stellar populations of galaxies from SDSS spectra (TFX pipeline).", no_args_is_help=True)
console = Console(stderr=True)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )


class _ProgressWatcher:
    """A Rich progress bar over the counts that Beam workers report to a folder."""

    def __init__(self, folder: str, total: int, label: str):
        self.folder, self.total, self.label = folder, total, label
        self._stop = threading.Event()

    def __enter__(self):
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self._task = self._progress.add_task(self.label, total=self.total)
        self._progress.start()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.5):
            self._progress.update(self._task, completed=min(progress.count(self.folder), self.total))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._progress.update(self._task, completed=min(progress.count(self.folder), self.total))
        self._progress.stop()


def _run_with_progress(output: Path, total: int, run):
    """Run ``run(progress_dir)`` under a progress bar; a run that cannot resume exits 2."""
    progress_dir = tempfile.mkdtemp(prefix=".progress-", dir=output)
    try:
        with _ProgressWatcher(progress_dir, total, "spectra"):
            return run(progress_dir)
    except progress.ResumeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    finally:
        shutil.rmtree(progress_dir, ignore_errors=True)


@app.callback()
def _root() -> None:
    """Stellar populations of galaxies from SDSS spectra (TFX pipeline)."""


@app.command()
def ingest(
    inputs: Annotated[Optional[list[str]], typer.Argument(help="Files, directories, globs, @list files, or 'bundled' (the SDSS spectra inside ppxf).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: examples/ (TFRecords, failures, summary) and run.json.")] = Path("runs/ingest"),
    catalogue: Annotated[Optional[Path], typer.Option(help="Table (CSV/FITS/Parquet) of plate, mjd, fiber to resolve against --sdss-root.")] = None,
    sdss_root: Annotated[Optional[Path], typer.Option(help="Folder laid out like SDSS's spectra/lite: PLATE/spec-PLATE-MJD-FIBER.fits.")] = None,
    select: Annotated[bool, typer.Option(help="Drop spectra outside the paper's sample (they are recorded either way).")] = True,
    norm_centre: Annotated[float, typer.Option(help="Centre of the flux normalisation window, Angstrom.")] = 5000.0,
    norm_half_width: Annotated[float, typer.Option(help="Half width of the normalisation window, Angstrom.")] = 50.0,
    workers: Annotated[int, typer.Option(help="Local Beam worker processes (DirectRunner).")] = os.cpu_count() or 1,
    beam_arg: Annotated[Optional[list[str]], typer.Option(help="Beam pipeline argument, repeatable (e.g. --beam-arg=--runner=DataflowRunner); replaces the local profile.")] = None,
    chunk_size: Annotated[int, typer.Option(help="Files per chunk; a re-run of the same command skips finished chunks (0: one chunk).")] = 50_000,
    restart: Annotated[bool, typer.Option(help="Discard a previous run in --output instead of resuming it.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Read spectrum files into train/eval/test TFRecords of tf.Examples on the model grid."""
    _setup_logging(verbose)
    from stellarpop.components.fits_example_gen import chunked, ingest as ingest_lib
    from stellarpop.pipeline import configs

    if not inputs and not catalogue:
        raise typer.BadParameter("give INPUTS or --catalogue")
    if catalogue and not sdss_root:
        raise typer.BadParameter("--catalogue needs --sdss-root")
    output = output.resolve()  # Beam workers and TFX may run in another working directory
    output.mkdir(parents=True, exist_ok=True)
    examples_dir = output / "examples"
    files, unresolved = ingest_lib.resolve(
        ingest_lib.IngestConfig(
            inputs=tuple(inputs or ()),
            catalogue=str(catalogue.resolve()) if catalogue else "",
            sdss_root=str(sdss_root.resolve()) if sdss_root else "",
        )
    )
    config = ingest_lib.IngestConfig(select=select, norm_centre=norm_centre, norm_half_width=norm_half_width)
    args = list(beam_arg) if beam_arg else configs.local_beam_args(workers)
    console.print(f"Ingesting {len(files)} files ({len(unresolved)} inputs name no file) into {examples_dir}")
    started = time.time()
    summary = _run_with_progress(
        output, len(files),
        lambda progress_dir: chunked.run_chunked(
            files + [u["file"] for u in unresolved], str(output),
            dataclasses.replace(config, progress_dir=progress_dir), args, chunk_size, restart,
        ),
    )
    elapsed = time.time() - started
    run = {
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
        "seconds": round(elapsed, 2),
        "beam_args": args,
        "python": platform.python_version(),
        "summary": summary,
    }
    (output / "run.json").write_text(json.dumps(run, indent=2))
    _print_summary(summary, examples_dir, elapsed)
    if summary["errors"]:
        raise typer.Exit(code=1)


@app.command("templates")
def templates_cmd(
    library: Annotated[Optional[Path], typer.Option(help="Check this sps_lib .npz instead of building E-MILES.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Obtain the E-MILES SSP library (once, into $STELLARPOP_CACHE) and describe it."""
    _setup_logging(verbose)
    from stellarpop.components import templates

    try:
        path = templates.library_path(library)
        lib = templates.load_library(path)
    except templates.TemplateError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=1) from None
    console.print(f"{path}")
    console.print(
        f"{lib.ages.size} ages {lib.ages.min():.3g}-{lib.ages.max():.3g} Gyr x {lib.metals.size} [M/H] "
        f"{lib.metals.min():+.2f}..{lib.metals.max():+.2f}; {lib.lam.size} pixels {lib.lam[0]:.0f}-{lib.lam[-1]:.0f} A; "
        f"FWHM {lib.fwhm.min():.2f}-{lib.fwhm.max():.2f} A"
    )


@app.command()
def simulate(
    n: Annotated[int, typer.Option("--n", help="Number of spectra.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (recorded with the output).")] = 0,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: examples/ and sim_config.json.")] = Path("runs/simulate"),
    mode: Annotated[str, typer.Option(help="Priors: 'sdss' (like the paper's sample) or 'broad' (for training).")] = "sdss",
    shard_size: Annotated[int, typer.Option(help="Spectra per shard (the unit of resume).")] = 1000,
    fits_files: Annotated[bool, typer.Option("--fits", help="Also write SDSS spec-lite FITS files (examples/fits/).")] = False,
    library: Annotated[Optional[Path], typer.Option(help="An sps_lib .npz instead of the E-MILES build.")] = None,
    workers: Annotated[int, typer.Option(help="Local Beam worker processes (DirectRunner).")] = os.cpu_count() or 1,
    beam_arg: Annotated[Optional[list[str]], typer.Option(help="Beam pipeline argument, repeatable; replaces the local profile.")] = None,
    restart: Annotated[bool, typer.Option(help="Discard a previous run in --output instead of resuming it.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Simulate SDSS-like galaxy spectra with exact truth into train/eval/test TFRecords."""
    _setup_logging(verbose)
    from stellarpop.components import simulate as sim
    from stellarpop.components.mock_example_gen import component, job
    from stellarpop.pipeline import configs

    if mode not in ("sdss", "broad"):
        raise typer.BadParameter("--mode is 'sdss' or 'broad'")
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    config = job.SimConfig(
        n=n, seed=seed, priors=sim.Priors(mode=mode), shard_size=shard_size, write_fits=fits_files,
        library=str(library.resolve()) if library else "",
    )
    args = list(beam_arg) if beam_arg else configs.local_beam_args(workers)
    console.print(f"Simulating {n} spectra (seed {seed}, {mode} priors) into {output / 'examples'}")
    started = time.time()
    summary = _run_with_progress(
        output, n,
        lambda progress_dir: component.run_standalone(
            str(output), dataclasses.replace(config, progress_dir=progress_dir), args, restart
        ),
    )
    elapsed = time.time() - started
    table = Table(title=f"simulate: {sum(summary['splits'].values())} spectra in {elapsed:.1f} s")
    table.add_column("split / class")
    table.add_column("count", justify="right")
    for key in ("splits", "classes"):
        for name, count in summary[key].items():
            table.add_row(name, str(count))
    console.print(table)


@app.command()
def label(
    inputs: Annotated[list[str], typer.Argument(help="Examples folders (an ingest's or simulation's examples/, Split-* kept) or TFRecord files.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: examples/, checkpoints/, label_summary.json.")] = Path("runs/label"),
    gas_components: Annotated[int, typer.Option(help="Kinematic components of the emission lines: 0 (stars only), 1 or 2.")] = 1,
    min_vd: Annotated[float, typer.Option(help="Drop spectra whose pPXF sigma is below this (km/s; the paper's cut).")] = 50.0,
    library: Annotated[Optional[Path], typer.Option(help="An sps_lib .npz instead of the E-MILES build.")] = None,
    workers: Annotated[int, typer.Option(help="Local Beam worker processes (DirectRunner).")] = os.cpu_count() or 1,
    beam_arg: Annotated[Optional[list[str]], typer.Option(help="Beam pipeline argument, repeatable; replaces the local profile.")] = None,
    restart: Annotated[bool, typer.Option(help="Discard checkpointed fits in --output instead of resuming.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Label spectra with pPXF (the paper's settings): checkpointed, resumable, on Beam."""
    _setup_logging(verbose)
    from stellarpop.components import ppxf_fit
    from stellarpop.components.ppxf_labeler import component, job
    from stellarpop.pipeline import configs

    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    config = job.LabelConfig(
        fit=ppxf_fit.FitConfig(gas_components=gas_components, library=str(library.resolve()) if library else ""),
        min_vd=min_vd,
    )
    try:
        total = _count_records(component.input_splits(inputs))
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    args = list(beam_arg) if beam_arg else configs.local_beam_args(workers)
    console.print(f"Labelling {total} spectra with pPXF into {output}")
    started = time.time()
    summary = _run_with_progress(
        output, total,
        lambda progress_dir: component.run_standalone(
            [str(Path(i).resolve()) for i in inputs], str(output), dataclasses.replace(config, progress_dir=progress_dir),
            args, restart,
        ),
    )
    elapsed = time.time() - started
    table = Table(title=f"label: {summary['fitted']} fits ({summary['fitted'] - summary['fitted_before']} new) in {elapsed:.1f} s")
    for col in ("split", job.LABELLED, job.FAILED, job.LOW_VD):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, counts in summary["splits"].items():
        table.add_row(split, *(str(counts[k]) for k in (job.LABELLED, job.FAILED, job.LOW_VD)))
    console.print(table)
    for message, n in list(summary["failure_messages"].items())[:10]:
        console.print(f"[red]{n} x {message}[/red]", highlight=False)


@app.command("run-pipeline")
def run_pipeline(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML (see pipeline/configs.py PipelineConfig).")],
    workers: Annotated[int, typer.Option(help="Local Beam worker processes; 0: the config's, else one per core.")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the TFX pipeline locally (LocalDagRunner, SQLite MLMD, Beam DirectRunner)."""
    _setup_logging(verbose)
    from stellarpop.pipeline import configs, local_runner

    cfg = configs.PipelineConfig.from_yaml(str(config))
    if workers:
        cfg = dataclasses.replace(cfg, workers=workers)
    started = time.time()
    console.print(f"Running pipeline {cfg.name} ({config}) under {Path(cfg.root).resolve()}")
    cfg = local_runner.run(cfg)
    pushed = sorted(Path(cfg.serving_dir).glob("*/saved_model.pb")) if Path(cfg.serving_dir).exists() else []
    console.print(f"done in {time.time() - started:.0f} s; " + (
        f"pushed model: {pushed[-1].parent}" if pushed else "no model pushed (not blessed: see the Evaluator's output)"))


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Spectrum files, folders, globs, @lists, or 'bundled'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="results.csv or results.parquet")] = Path("results.csv"),
    model: Annotated[Optional[Path], typer.Option(help="SavedModel, or a folder of numbered versions (a push); default: the shipped model.")] = None,
    batch_size: Annotated[int, typer.Option(help="Spectra per call of the model.")] = 256,
    show: Annotated[int, typer.Option(help="Print the first rows of the table.")] = 20,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Predict log age, [M/H], E(B-V) and sigma (with 1-sigma errors) for spectrum files."""
    _setup_logging(verbose)
    from stellarpop.components import sdss_io
    from stellarpop.serving import predict as pred

    files, missing = sdss_io.resolve_inputs(inputs)
    try:
        predictor = pred.Predictor(str(model) if model else None)
    except (FileNotFoundError, OSError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    console.print(f"Predicting {len(files)} spectra with {predictor.path}")
    started = time.time()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("spectra", total=len(files))
        rows = pred.predict_files(files, predictor, batch_size, on_progress=lambda n: bar.advance(task, n))
    for m in missing:
        rows.append({"file": m.file, "error": f"{m.file}: {m.message}"})
    pred.write_table(rows, str(output))
    table = Table(title=f"predict: {len(rows)} rows in {time.time() - started:.1f} s -> {output}")
    for col in ("spec_id", "z", "log_age", "mh", "ebv", "vd", "quality / error"):
        table.add_column(col)
    for row in rows[:show]:
        if row.get("error"):
            table.add_row(str(row.get("spec_id") or Path(row["file"]).name), "", "", "", "", "", f"[red]{row['error']}[/red]")
            continue
        table.add_row(
            row["spec_id"], f"{row['z']:.4f}",
            *(f"{row[k]:.3f}+-{row[k + '_err']:.3f}" for k in ("log_age", "mh", "ebv")),
            f"{row['vd']:.0f}+-{row['vd_err']:.0f}", row["quality"],
        )
    # Piped output defaults to 80 columns, which would cut the values short.
    Console(stderr=True, width=max(console.width, 140)).print(table)
    if any(r.get("error") for r in rows):
        raise typer.Exit(code=1)


def _count_records(splits: dict[str, list[str]]) -> int:
    import tensorflow as tf

    return sum(
        sum(1 for _ in tf.data.TFRecordDataset(f, compression_type="GZIP" if f.endswith(".gz") else ""))
        for files in splits.values() for f in files
    )


def _print_summary(summary: dict, examples_dir: Path, elapsed: float) -> None:
    from stellarpop.components.fits_example_gen import ingest as ingest_lib

    table = Table(title=f"ingest: {summary['inputs']} inputs in {elapsed:.1f} s")
    table.add_column("outcome")
    table.add_column("reason")
    table.add_column("count", justify="right")
    table.add_row("written", "", str(summary["examples"]))
    for stage, reasons in sorted(summary["failures"].items()):
        for reason, n in sorted(reasons.items()):
            table.add_row("rejected (selection)" if stage == "select" else f"error ({stage})", reason, str(n))
    console.print(table)
    failures = sorted(ingest_lib.read_failures(str(examples_dir)), key=lambda r: (r["stage"] == "select", r["file"]))
    for rec in failures[:10]:
        style = "yellow" if rec["stage"] == "select" else "red"
        console.print(f"[{style}]{rec['message']}[/{style}]", highlight=False)
    if len(failures) > 10:
        console.print(f"... {len(failures) - 10} more in {examples_dir / ingest_lib.FAILURES_DIR}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
