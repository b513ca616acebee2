"""The data commands: ``templates``, ``simulate``, ``ingest`` and ``label``, and their summary tables."""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from stellarpop.pipeline.cli.common import (
    CPUS,
    BeamArgs,
    Dask,
    Library,
    Restart,
    Verbose,
    Workers,
    about,
    beam_args,
    command,
    console,
    existing,
    need_files,
    output_folder,
    run_job,
    setup_logging,
)
from stellarpop.schema import features as F


def count_records(splits: dict[str, list[str]]) -> int:
    """Records in the TFRecord files (GZIP where named ``.gz``); ValueError names a file that is not one."""
    import tensorflow as tf

    def count(path: str) -> int:
        try:
            return sum(
                1 for _ in tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else "")
            )
        except tf.errors.OpError as exc:
            raise ValueError(f"{path}: not a TFRecord file of tf.Examples ({exc.message})") from exc

    return sum(count(f) for files in splits.values() for f in files)


def print_ingest_summary(summary: dict, examples_dir: Path, elapsed: float) -> None:
    from stellarpop.components.fits_example_gen import job as ingest_lib

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
        console.print(f"[{style}]{escape(rec['message'])}[/{style}]", soft_wrap=True, highlight=False)
    if len(failures) > 10:
        console.print(f"... {len(failures) - 10} more in {examples_dir / ingest_lib.FAILURES_DIR}")


@command()
def ingest(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="Files, directories, globs, @list files, or 'bundled' (the SDSS spectra inside ppxf)."),
    ] = None,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Output folder: examples/ (TFRecords, failures, summary) and run.json."),
    ] = Path("runs/ingest"),
    catalogue: Annotated[
        Path | None,
        typer.Option(help="Table (CSV/FITS/Parquet) of plate, mjd, fiber to resolve against --sdss-root."),
    ] = None,
    sdss_root: Annotated[
        Path | None, typer.Option(help="Folder laid out like SDSS's spectra/lite: PLATE/spec-PLATE-MJD-FIBER.fits.")
    ] = None,
    select: Annotated[
        bool, typer.Option(help="Drop spectra outside the paper's sample (they are recorded either way).")
    ] = True,
    norm_centre: Annotated[
        float, typer.Option(help="Centre of the flux normalisation window, Angstrom.")
    ] = F.NORM_CENTRE,
    norm_half_width: Annotated[
        float, typer.Option(help="Half width of the normalisation window, Angstrom.")
    ] = F.NORM_HALF_WIDTH,
    workers: Workers = CPUS,
    beam_arg: BeamArgs = None,
    dask: Dask = None,
    chunk_size: Annotated[
        int,
        typer.Option(min=0, help="Files per chunk; a re-run of the same command skips finished chunks (0: one chunk)."),
    ] = 50_000,
    restart: Restart = False,
    verbose: Verbose = False,
) -> None:
    """Read spectrum files into train/eval/test TFRecords of tf.Examples on the model grid."""
    setup_logging(verbose)
    from stellarpop.components.fits_example_gen import job as ingest_lib
    from stellarpop.components.fits_example_gen import run as ingest_run
    from stellarpop.schema.preparation import Preparation

    if not inputs and not catalogue:
        raise typer.BadParameter("give INPUTS or --catalogue")
    if catalogue and not sdss_root:
        raise typer.BadParameter("--catalogue needs --sdss-root")
    if norm_half_width <= 0:
        raise ValueError(f"--norm-half-width {norm_half_width:g}: the window's half width is > 0 Angstrom")
    catalogue, sdss_root = existing(catalogue, "--catalogue"), existing(sdss_root, "--sdss-root", folder=True)
    files, unresolved = ingest_lib.resolve(
        ingest_lib.IngestConfig(
            inputs=tuple(inputs or ()), catalogue=str(catalogue or ""), sdss_root=str(sdss_root or "")
        )
    )
    preparation = Preparation(norm_centre=norm_centre, norm_half_width=norm_half_width)
    need_files(files, [u["message"] for u in unresolved], "INPUTS" if inputs else "--catalogue")
    output = output_folder(output)
    examples_dir = output / "examples"
    config = ingest_lib.IngestConfig(select=select, preparation=preparation)
    args = beam_args(beam_arg, workers, dask)
    started = time.time()
    summary, elapsed = run_job(
        output,
        len(files),
        f"Ingesting {len(files)} files ({len(unresolved)} inputs name no file) into {examples_dir}",
        lambda progress_dir: ingest_run.run_chunked(
            files + [u["file"] for u in unresolved],
            str(output),
            dataclasses.replace(config, progress_dir=progress_dir),
            args,
            chunk_size,
            restart,
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


@command("templates")
def templates_cmd(
    library: Annotated[Path | None, typer.Option(help="Check this sps_lib .npz instead of building E-MILES.")] = None,
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
        f"{lib.metals.min():+.2f}..{lib.metals.max():+.2f}; {lib.lam.size} pixels "
        f"{lib.lam[0]:.0f}-{lib.lam[-1]:.0f} A; "
        f"FWHM {lib.fwhm.min():.2f}-{lib.fwhm.max():.2f} A"
    )


@command()
def simulate(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of spectra.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (recorded with the output).")] = 0,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output folder: examples/ and sim_config.json.")
    ] = Path("runs/simulate"),
    mode: Annotated[
        str,
        typer.Option(
            help="Priors: 'sdss' (like the paper's sample), 'broad', 'wide' (the real sample's range: "
            "z 0.002-0.3 weighted to low z, sigma 50-500 km/s, S/N_r 3-100), or 'sky' (wide over every kind "
            "of galaxy: sigma 10-500 km/s, S/N_r 4-100, Halpha EW up to 500 A, gas kinematics of its own)."
        ),
    ] = "sdss",
    sdss_fraction: Annotated[
        float, typer.Option(help="With --mode wide, sky or broad: this share drawn from the 'sdss' priors instead.")
    ] = 0.0,
    nuisances: Annotated[
        str,
        typer.Option(
            help="Instrument and model nuisances: 'none' or 'realistic' (calibration, LSF, wavelength, sky, "
            "masked gaps, template mismatch; components/nuisances.py)."
        ),
    ] = "none",
    shard_size: Annotated[int, typer.Option(min=1, help="Spectra per shard (the unit of resume).")] = 1000,
    fits_files: Annotated[
        bool, typer.Option("--fits", help="Also write SDSS spec-lite FITS files (examples/fits/).")
    ] = False,
    library: Library = None,
    workers: Workers = CPUS,
    beam_arg: BeamArgs = None,
    dask: Dask = None,
    restart: Restart = False,
    verbose: Verbose = False,
) -> None:
    """Simulate SDSS-like galaxy spectra with exact truth into train/eval/test TFRecords."""
    setup_logging(verbose)
    from stellarpop.components.mock_example_gen import job
    from stellarpop.components.mock_example_gen import run as sim_run
    from stellarpop.components.priors import Priors

    library = existing(library, "--library")
    with about("--mode"):
        priors = Priors(mode=mode)
    with about("--sdss-fraction"):
        priors = Priors(mode=mode, sdss_fraction=sdss_fraction)
    with about("--nuisances"):
        config = job.SimConfig(
            n=n,
            seed=seed,
            priors=priors,
            nuisances=nuisances,
            shard_size=shard_size,
            write_fits=fits_files,
            library=str(library or ""),
        )
    output = output_folder(output)
    args = beam_args(beam_arg, workers, dask)
    summary, elapsed = run_job(
        output,
        n,
        f"Simulating {n} spectra (seed {seed}, {mode} priors, nuisances {nuisances}) into {output / 'examples'}",
        lambda progress_dir: sim_run.run_standalone(
            str(output), dataclasses.replace(config, progress_dir=progress_dir), args, restart
        ),
    )
    table = Table(title=f"simulate: {sum(summary['splits'].values())} spectra in {elapsed:.1f} s")
    table.add_column("split / class")
    table.add_column("count", justify="right")
    for key in ("splits", "classes"):
        for name, count in summary[key].items():
            table.add_row(name, str(count))
    console.print(table)


@command()
def label(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Run folders of ingest, simulate or label (their examples/ is read), Examples folders "
            "(Split-* kept) or TFRecord files."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output folder: examples/, checkpoints/, label_summary.json.")
    ] = Path("runs/label"),
    gas_components: Annotated[
        int, typer.Option(min=0, max=2, help="Kinematic components of the emission lines: 0 (stars only), 1 or 2.")
    ] = 1,
    min_vd: Annotated[
        float, typer.Option(min=0.0, help="Drop spectra whose pPXF sigma is below this (km/s; the paper's cut).")
    ] = 50.0,
    library: Library = None,
    workers: Workers = CPUS,
    beam_arg: BeamArgs = None,
    dask: Dask = None,
    restart: Annotated[bool, typer.Option(help="Discard checkpointed fits in --output instead of resuming.")] = False,
    verbose: Verbose = False,
) -> None:
    """Label spectra with pPXF (the paper's settings): checkpointed, resumable, on Beam."""
    setup_logging(verbose)
    from stellarpop.components import ppxf_fit
    from stellarpop.components.ppxf_labeler import job
    from stellarpop.components.ppxf_labeler import run as label_run

    library = existing(library, "--library")
    splits = label_run.input_splits(inputs)
    total = count_records(splits)
    if not total:
        raise ValueError(
            f"INPUTS {' '.join(inputs)}: 0 tf.Examples in {sum(map(len, splits.values()))} TFRecord file(s)"
        )
    output = output_folder(output)
    config = job.LabelConfig(
        fit=ppxf_fit.FitConfig(gas_components=gas_components, library=str(library or "")), min_vd=min_vd
    )
    args = beam_args(beam_arg, workers, dask)
    summary, elapsed = run_job(
        output,
        total,
        f"Labelling {total} spectra with pPXF into {output}",
        lambda progress_dir: label_run.run_standalone(
            [str(Path(i).resolve()) for i in inputs],
            str(output),
            dataclasses.replace(config, progress_dir=progress_dir),
            args,
            restart,
        ),
    )
    table = Table(
        title=f"label: {summary['fitted']} fits ({summary['fitted'] - summary['fitted_before']} new) in {elapsed:.1f} s"
    )
    for col in ("split", job.LABELLED, job.FAILED, job.LOW_VD):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, counts in summary["splits"].items():
        table.add_row(split, *(str(counts[k]) for k in (job.LABELLED, job.FAILED, job.LOW_VD)))
    console.print(table)
    for message, n in list(summary["failure_messages"].items())[:10]:
        console.print(f"[red]{n} x {escape(message)}[/red]", soft_wrap=True, highlight=False)
