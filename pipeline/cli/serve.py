"""The serving commands: ``predict`` (in process or over gRPC), ``serve`` (the local
PredictionService) and ``stream`` (Beam streaming inference)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stellarpop.pipeline.cli.common import (
    BeamArgs,
    Verbose,
    about,
    command,
    console,
    existing,
    need_files,
    progress_bar,
    setup_logging,
)
from stellarpop.schema import features as F


def served_model(
    server: str,
    model: Path | None,
    name: str,
    version: int | None,
    label: str | None,
    timeout: float,
    batch_size: int,
):
    """(a ``predict.ServedModel``, a description) once the server says the model is AVAILABLE."""
    from stellarpop.serving import predict as pred
    from stellarpop.serving.client import Client

    if model:
        raise ValueError(
            "--model and --server: the server chooses the model (use --model-name, --model-version, --label)"
        )
    if version is not None and label:
        raise ValueError(f"--model-version {version} and --label {label}: one or the other")
    client = Client(server, name, version=version, label=label, timeout_s=timeout)
    served = client.wait_until_available(timeout_s=timeout)
    return pred.ServedModel(client, batch_size), f"{name} version {served} at {server}"


@command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Spectrum files, folders, globs, @lists, or 'bundled'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="results.csv or results.parquet")] = Path(
        "results.csv"
    ),
    model: Annotated[
        Path | None,
        typer.Option(help="SavedModel, or a folder of numbered versions (a push); default: the shipped model."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of TF Serving (or `stellarpop serve`): predict over gRPC instead of in process."),
    ] = None,
    model_name: Annotated[
        str, typer.Option(help="With --server: the model's name in the server's config.")
    ] = "stellarpop",
    model_version: Annotated[
        int | None, typer.Option(min=1, help="With --server: this version (default: the latest).")
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="With --server: the version with this label (stable, canary).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="With --server: seconds to wait for the model, and per request.")
    ] = 60.0,
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
    with progress_bar() as bar:
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
            row["spec_id"],
            f"{row['z']:.4f}",
            *(f"{row[k]:.3f}+-{row[k + '_err']:.3f}" for k in ("log_age", "mh", "ebv")),
            f"{row['vd']:.0f}+-{row['vd_err']:.0f}",
            f"{row[F.OOD_SCORE]:.2f}" + (" [red]FLAG[/red]" if row[F.OOD_FLAG] else ""),
            row["quality"],
        )
    # Piped output defaults to 80 columns, which would cut the values short.
    Console(stderr=True, width=max(console.width, 140)).print(table)
    if any(r.get("error") for r in rows):
        raise typer.Exit(code=1)


@command()
def stream(
    watch: Annotated[str, typer.Option(help="Folder (or gs:// prefix) where spectrum files land; listed recursively.")],
    model_base_path: Annotated[
        str, typer.Option(help="Numbered SavedModel versions; a newly pushed one is switched to.")
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Folder of windowed predictions/*.csv, dead_letters/, ledger/.")
    ],
    window: Annotated[
        float, typer.Option(help="Fixed windows of this many seconds, each written once it ends.")
    ] = 10.0,
    stop_after: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: at Ctrl-C or SIGTERM).")
    ] = None,
    poll: Annotated[float, typer.Option(help="Seconds between listings (and model-version checks).")] = 1.0,
    pubsub_subscription: Annotated[
        str | None,
        typer.Option(
            help="projects/P/subscriptions/S of the bucket's object-finalize notifications (Dataflow), "
            "read instead of listing."
        ),
    ] = None,
    beam_arg: BeamArgs = None,
    verbose: Verbose = False,
) -> None:
    """Predict spectrum files continuously as they land (a Beam streaming job), with the
    newest pushed model, into windowed tables; bad files go to dead letters."""
    setup_logging(verbose)
    from stellarpop.serving.stream_run import run_stream

    console.print(f"Streaming {watch} -> {output} with {model_base_path} (windows of {window:g} s; Ctrl-C stops)")
    summary = run_stream(
        watch,
        model_base_path,
        output,
        window_s=window,
        stop_after_s=stop_after,
        poll_s=poll,
        beam_args=list(beam_arg) if beam_arg else None,
        pubsub_subscription=pubsub_subscription,
    )
    table = Table(title=f"stream: {output}")
    table.add_column("")
    table.add_column("value", justify="right")
    for key in (
        "files_predicted",
        "dead_letters",
        "skipped_already_predicted",
        "model_versions",
        "latency_s",
        "job_id",
    ):
        if key in summary:
            table.add_row(key, str(summary[key]))
    console.print(table)


@command()
def serve(
    model_base_path: Annotated[
        Path, typer.Option(help="Folder of numbered SavedModel versions (the Pusher's serving_dir).")
    ],
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
    from stellarpop.serving.server import parse_labels
    from stellarpop.serving.server import serve as serve_models

    base = existing(model_base_path, "--model-base-path", folder=True)
    with about("--version-labels"):
        labels = parse_labels(version_labels)
    serve_models(str(base), model_name, port, rest_port, poll_s=poll_s, labels=labels, host=host)
