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

import contextlib
import dataclasses
import functools
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
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from stellarpop.components import progress

app = typer.Typer(help="Stellar populations of galaxies from SDSS spectra (TFX pipeline).", no_args_is_help=True)
console = Console(stderr=True)
_options = {"debug": False}
# Loggers whose INFO lines always show: they announce the one-time download and build of the
# template cache, which takes a minute on a cold machine.
ANNOUNCING_LOGGERS = ("stellarpop.components.reference_data", "stellarpop.components.templates")


def _setup_logging(verbose: bool) -> None:
    """Rich log lines on stderr: ERROR and up (INFO with ``verbose``), and the cache announcements."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, level=logging.INFO)],
    )
    for name in ANNOUNCING_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that report a user's mistake (bad arguments, files or environment)."""
    import yaml

    from stellarpop.components import reference_data, templates

    return (ValueError, OSError, yaml.YAMLError, progress.ResumeError, templates.TemplateError,
            reference_data.ReferenceDataError)


def _exit_for(exc: Exception) -> typer.Exit:
    """Print ``exc`` as one red line; the exit is 2 for a user error, 1 for anything else."""
    user = isinstance(exc, _user_errors())
    text = " ".join(str(exc).split())
    line = f"error: {text}" if user else f"internal error: {type(exc).__name__}: {text} (run with --debug for the traceback)"
    console.print(f"[red]{escape(line)}[/red]", soft_wrap=True, highlight=False)
    return typer.Exit(code=2 if user else 1)


def _command(name: Optional[str] = None):
    """``app.command`` whose exceptions end in one line and a non-zero exit, unless ``--debug``."""

    def register(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, typer.exceptions.TyperException):  # Typer's own exits
                raise
            except Exception as exc:
                if _options["debug"]:
                    raise
                raise _exit_for(exc) from None

        return app.command(name)(run)

    return register


@contextlib.contextmanager
def _about(option: str):
    """Name ``option`` in the message of a user error raised inside."""
    try:
        yield
    except (ValueError, OSError) as exc:
        raise ValueError(f"{option} {exc}") from exc


def _existing(path: Optional[Path], option: str, folder: bool = False) -> Optional[Path]:
    """``path`` made absolute once it is known to be an existing file (or folder); None stays None."""
    if path is None:
        return None
    if not path.exists():
        raise FileNotFoundError(f"{option} {path}: no such {'folder' if folder else 'file'}")
    if path.is_dir() != folder:
        raise ValueError(f"{option} {path}: " + ("not a folder" if folder else "a folder, not a file"))
    return path.resolve()


def _output_folder(output: Path) -> Path:
    """``--output`` made absolute and created (Beam workers and TFX may run elsewhere)."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output}: a file, not a folder")
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    return output


def _need_files(files: list[str], problems: list[str], argument: str) -> None:
    """Refuse a run whose inputs name no file, quoting the first few reasons."""
    if not files:
        shown = "; ".join(problems[:3]) + (f"; {len(problems) - 3} more" if len(problems) > 3 else "")
        raise FileNotFoundError(f"{argument}: no spectrum file" + (f" ({shown})" if shown else ""))


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
    """Run ``run(progress_dir)`` under a progress bar (a ``progress.ResumeError`` exits 2)."""
    progress_dir = tempfile.mkdtemp(prefix=".progress-", dir=output)
    try:
        with _ProgressWatcher(progress_dir, total, "spectra"):
            return run(progress_dir)
    finally:
        shutil.rmtree(progress_dir, ignore_errors=True)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error instead of one line.")] = False,
) -> None:
    """Stellar populations of galaxies from SDSS spectra (TFX pipeline)."""
    _options["debug"] = debug


@_command()
def ingest(
    inputs: Annotated[Optional[list[str]], typer.Argument(help="Files, directories, globs, @list files, or 'bundled' (the SDSS spectra inside ppxf).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: examples/ (TFRecords, failures, summary) and run.json.")] = Path("runs/ingest"),
    catalogue: Annotated[Optional[Path], typer.Option(help="Table (CSV/FITS/Parquet) of plate, mjd, fiber to resolve against --sdss-root.")] = None,
    sdss_root: Annotated[Optional[Path], typer.Option(help="Folder laid out like SDSS's spectra/lite: PLATE/spec-PLATE-MJD-FIBER.fits.")] = None,
    select: Annotated[bool, typer.Option(help="Drop spectra outside the paper's sample (they are recorded either way).")] = True,
    norm_centre: Annotated[float, typer.Option(help="Centre of the flux normalisation window, Angstrom.")] = 5000.0,
    norm_half_width: Annotated[float, typer.Option(help="Half width of the normalisation window, Angstrom.")] = 50.0,
    workers: Annotated[int, typer.Option(min=1, help="Local Beam worker processes (DirectRunner).")] = os.cpu_count() or 1,
    beam_arg: Annotated[Optional[list[str]], typer.Option(help="Beam pipeline argument, repeatable (e.g. --beam-arg=--runner=DataflowRunner); replaces the local profile.")] = None,
    chunk_size: Annotated[int, typer.Option(min=0, help="Files per chunk; a re-run of the same command skips finished chunks (0: one chunk).")] = 50_000,
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
    if norm_half_width <= 0:
        raise ValueError(f"--norm-half-width {norm_half_width:g}: the window's half width is > 0 Angstrom")
    catalogue, sdss_root = _existing(catalogue, "--catalogue"), _existing(sdss_root, "--sdss-root", folder=True)
    files, unresolved = ingest_lib.resolve(
        ingest_lib.IngestConfig(inputs=tuple(inputs or ()), catalogue=str(catalogue or ""), sdss_root=str(sdss_root or ""))
    )
    _need_files(files, [u["message"] for u in unresolved], "INPUTS" if inputs else "--catalogue")
    output = _output_folder(output)
    examples_dir = output / "examples"
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


@_command("templates")
def templates_cmd(
    library: Annotated[Optional[Path], typer.Option(help="Check this sps_lib .npz instead of building E-MILES.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Obtain the E-MILES SSP library (once, into $STELLARPOP_CACHE) and describe it."""
    _setup_logging(verbose)
    from stellarpop.components import templates

    path = templates.library_path(_existing(library, "--library"))
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
    nuisances: Annotated[str, typer.Option(help="Instrument and model nuisances: 'none' or 'realistic' (calibration, LSF, wavelength, sky, masked gaps, template mismatch; components/nuisances.py).")] = "none",
    shard_size: Annotated[int, typer.Option(min=1, help="Spectra per shard (the unit of resume).")] = 1000,
    fits_files: Annotated[bool, typer.Option("--fits", help="Also write SDSS spec-lite FITS files (examples/fits/).")] = False,
    library: Annotated[Optional[Path], typer.Option(help="An sps_lib .npz instead of the E-MILES build.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Local Beam worker processes (DirectRunner).")] = os.cpu_count() or 1,
    beam_arg: Annotated[Optional[list[str]], typer.Option(help="Beam pipeline argument, repeatable; replaces the local profile.")] = None,
    restart: Annotated[bool, typer.Option(help="Discard a previous run in --output instead of resuming it.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Simulate SDSS-like galaxy spectra with exact truth into train/eval/test TFRecords."""
    _setup_logging(verbose)
    from stellarpop.components import simulate as sim
    from stellarpop.components.mock_example_gen import component, job
    from stellarpop.pipeline import configs

    library = _existing(library, "--library")
    with _about("--mode"):
        priors = sim.Priors(mode=mode)
    with _about("--nuisances"):
        config = job.SimConfig(
            n=n, seed=seed, priors=priors, nuisances=nuisances, shard_size=shard_size, write_fits=fits_files,
            library=str(library or ""),
        )
    output = _output_folder(output)
    args = list(beam_arg) if beam_arg else configs.local_beam_args(workers)
    console.print(f"Simulating {n} spectra (seed {seed}, {mode} priors, nuisances {nuisances}) into {output / 'examples'}")
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


@_command()
def label(
    inputs: Annotated[list[str], typer.Argument(help="Run folders of ingest, simulate or label (their examples/ is read), Examples folders (Split-* kept) or TFRecord files.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: examples/, checkpoints/, label_summary.json.")] = Path("runs/label"),
    gas_components: Annotated[int, typer.Option(min=0, max=2, help="Kinematic components of the emission lines: 0 (stars only), 1 or 2.")] = 1,
    min_vd: Annotated[float, typer.Option(min=0.0, help="Drop spectra whose pPXF sigma is below this (km/s; the paper's cut).")] = 50.0,
    library: Annotated[Optional[Path], typer.Option(help="An sps_lib .npz instead of the E-MILES build.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Local Beam worker processes (DirectRunner).")] = os.cpu_count() or 1,
    beam_arg: Annotated[Optional[list[str]], typer.Option(help="Beam pipeline argument, repeatable; replaces the local profile.")] = None,
    restart: Annotated[bool, typer.Option(help="Discard checkpointed fits in --output instead of resuming.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Label spectra with pPXF (the paper's settings): checkpointed, resumable, on Beam."""
    _setup_logging(verbose)
    from stellarpop.components import ppxf_fit
    from stellarpop.components.ppxf_labeler import component, job
    from stellarpop.pipeline import configs

    library = _existing(library, "--library")
    splits = component.input_splits(inputs)
    total = _count_records(splits)
    if not total:
        raise ValueError(f"INPUTS {' '.join(inputs)}: 0 tf.Examples in {sum(map(len, splits.values()))} TFRecord file(s)")
    output = _output_folder(output)
    config = job.LabelConfig(
        fit=ppxf_fit.FitConfig(gas_components=gas_components, library=str(library or "")), min_vd=min_vd
    )
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


@_command("run-pipeline")
def run_pipeline(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML (see pipeline/configs.py PipelineConfig).")],
    workers: Annotated[int, typer.Option(min=0, help="Local Beam worker processes; 0: the config's, else one per core.")] = 0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every component again (no TFX execution cache).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the TFX pipeline locally (LocalDagRunner, SQLite MLMD, Beam DirectRunner)."""
    _setup_logging(verbose)
    from stellarpop.pipeline import configs

    with _about("--config"):
        cfg = configs.PipelineConfig.from_yaml(str(config))
    from stellarpop.pipeline import local_runner  # TFX: after the checks
    if workers:
        cfg = dataclasses.replace(cfg, workers=workers)
    if no_cache:
        cfg = dataclasses.replace(cfg, enable_cache=False)
    started = time.time()
    console.print(f"Running pipeline {cfg.name} ({config}) under {Path(cfg.root).resolve()}")
    cfg = local_runner.run(cfg)
    pushed = sorted(Path(cfg.serving_dir).glob("*/saved_model.pb")) if Path(cfg.serving_dir).exists() else []
    console.print(f"done in {time.time() - started:.0f} s; " + (
        f"pushed model: {pushed[-1].parent}" if pushed else "no model pushed (not blessed: see the Evaluator's output)"))


@_command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Spectrum files, folders, globs, @lists, or 'bundled'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="results.csv or results.parquet")] = Path("results.csv"),
    model: Annotated[Optional[Path], typer.Option(help="SavedModel, or a folder of numbered versions (a push); default: the shipped model.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Spectra per call of the model.")] = 256,
    show: Annotated[int, typer.Option(min=0, help="Print the first rows of the table.")] = 20,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Predict log age, [M/H], E(B-V) and sigma (with 1-sigma errors) for spectrum files."""
    _setup_logging(verbose)
    from stellarpop.components import sdss_io
    from stellarpop.serving import predict as pred

    with _about("--output"):
        pred.table_format(str(output))
    if output.is_dir():
        raise ValueError(f"--output {output}: a folder, not a file")
    files, missing = sdss_io.resolve_inputs(inputs)
    _need_files(files, [f"{m.file}: {m.message}" for m in missing], "INPUTS")
    with _about("--model"):
        predictor = pred.Predictor(str(model) if model else None)
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
    """Records in the TFRecord files (GZIP where named ``.gz``); ValueError names a file that is not one."""
    import tensorflow as tf

    def count(path: str) -> int:
        try:
            return sum(1 for _ in tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else ""))
        except tf.errors.OpError as exc:
            raise ValueError(f"{path}: not a TFRecord file of tf.Examples ({exc.message})") from exc

    return sum(count(f) for files in splits.values() for f in files)


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
