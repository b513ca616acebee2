"""What every ``stellarpop`` command shares: the app and its command decorator, the options
defined once, one-line errors with their exit codes, checks of paths, Beam arguments and the
progress bars (over Beam workers, over spectra)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from stellarpop.components import progress

console = Console(stderr=True)
options = {"debug": False}  # set by the app's callback (--debug)

# --- options that several commands take --------------------------------------------------
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show INFO log lines.")]
Workers = Annotated[int, typer.Option(min=1, help="Local Beam worker processes (DirectRunner).")]
BeamArgs = Annotated[
    list[str] | None,
    typer.Option(
        help="Beam pipeline argument, repeatable (e.g. --beam-arg=--runner=DataflowRunner); replaces the local profile."
    ),
]
Dask = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="tcp://HOST:PORT",
        help="Run the job on this running dask.distributed scheduler instead of local processes.",
    ),
]
Restart = Annotated[bool, typer.Option(help="Discard a previous run in --output instead of resuming it.")]
Library = Annotated[Path | None, typer.Option(help="An sps_lib .npz instead of the E-MILES build.")]
CPUS = os.cpu_count() or 1


def beam_args(beam_arg: list[str] | None, workers: int, dask: str | None = None) -> list[str]:
    """``--beam-arg`` values, else the local multi-process profile with ``workers``; with
    ``dask`` (or Beam's DaskRunner named in ``--beam-arg``), the Dask runner's arguments
    after a check of the scheduler (a one-line error within seconds if it cannot be used)."""
    from stellarpop.components import engines
    from stellarpop.pipeline import configs

    if dask is None and not beam_arg:
        return configs.local_beam_args(workers)
    return engines.beam_args(dask, list(beam_arg or []))


# Loggers whose INFO lines always show: they announce the one-time download and build of the
# template cache, which takes a minute on a cold machine.
ANNOUNCING_LOGGERS = ("stellarpop.components.reference_data", "stellarpop.components.templates")


def setup_logging(verbose: bool) -> None:
    """Rich log lines on stderr: ERROR and up (INFO with ``verbose``), and the cache announcements."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, level=logging.INFO)],
    )
    for name in ANNOUNCING_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that report a user's mistake (bad arguments, files or environment)."""
    import yaml

    from stellarpop.components import reference_data, templates

    # OSError covers serving.client.ServingError: a server that is down, or says no.
    return (
        ValueError,
        OSError,
        yaml.YAMLError,
        progress.ResumeError,
        templates.TemplateError,
        reference_data.ReferenceDataError,
    )


def exit_for(exc: Exception) -> typer.Exit:
    """Print ``exc`` as one red line; the exit is 2 for a user error, 1 for anything else."""
    user = isinstance(exc, user_errors())
    text = " ".join(str(exc).split())
    line = (
        f"error: {text}"
        if user
        else f"internal error: {type(exc).__name__}: {text} (run with --debug for the traceback)"
    )
    console.print(f"[red]{escape(line)}[/red]", soft_wrap=True, highlight=False)
    return typer.Exit(code=2 if user else 1)


def commands(app: typer.Typer):
    """A decorator factory like ``app.command`` whose commands end an exception in one line
    and a non-zero exit (2: the user's mistake, 1: ours), unless ``--debug`` was given."""

    def command(name: str | None = None):
        def register(fn):
            @functools.wraps(fn)
            def run(*args, **kwargs):
                try:
                    return fn(*args, **kwargs)
                except (typer.Exit, typer.Abort, typer.exceptions.TyperException):  # Typer's own exits
                    raise
                except Exception as exc:
                    if options["debug"]:
                        raise
                    raise exit_for(exc) from None

            return app.command(name)(run)

        return register

    return command


@contextlib.contextmanager
def about(option: str):
    """Name ``option`` in the message of a user error raised inside."""
    try:
        yield
    except (ValueError, OSError) as exc:
        raise ValueError(f"{option} {exc}") from exc


def existing(path: Path | None, option: str, folder: bool = False) -> Path | None:
    """``path`` made absolute once it is known to be an existing file (or folder); None stays None."""
    if path is None:
        return None
    if not path.exists():
        raise FileNotFoundError(f"{option} {path}: no such {'folder' if folder else 'file'}")
    if path.is_dir() != folder:
        raise ValueError(f"{option} {path}: " + ("not a folder" if folder else "a folder, not a file"))
    return path.resolve()


def output_folder(output: Path) -> Path:
    """``--output`` made absolute and created (Beam workers and TFX may run elsewhere)."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output}: a file, not a folder")
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    return output


def need_files(files: list[str], problems: list[str], argument: str) -> None:
    """Refuse a run whose inputs name no file, quoting the first few reasons."""
    if not files:
        shown = "; ".join(problems[:3]) + (f"; {len(problems) - 3} more" if len(problems) > 3 else "")
        raise FileNotFoundError(f"{argument}: no spectrum file" + (f" ({shown})" if shown else ""))


class ProgressWatcher:
    """A Rich progress bar over the counts that Beam workers report to a folder."""

    def __init__(self, folder: str, total: int, label: str):
        self.folder, self.total, self.label = folder, total, label
        self._stop = threading.Event()

    def __enter__(self):
        self._progress = progress_bar()
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


def run_with_progress(output: Path, total: int, run):
    """Run ``run(progress_dir)`` under a progress bar (a ``progress.ResumeError`` exits 2)."""
    progress_dir = tempfile.mkdtemp(prefix=".progress-", dir=output)
    try:
        with ProgressWatcher(progress_dir, total, "spectra"):
            return run(progress_dir)
    finally:
        shutil.rmtree(progress_dir, ignore_errors=True)


def run_job(output: Path, total: int, message: str, job: Callable[[str], dict]) -> tuple[dict, float]:
    """Say ``message``, run ``job(progress_dir)`` under the progress bar; (its summary, seconds)."""
    console.print(message)
    started = time.time()
    summary = run_with_progress(output, total, job)
    return summary, time.time() - started


def progress_bar() -> Progress:
    """The one progress bar of the commands: what, bar, done/total, elapsed, remaining."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


app = typer.Typer(help="Stellar populations of galaxies from SDSS spectra (TFX pipeline).", no_args_is_help=True)
command = commands(app)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of an error instead of one line.")
    ] = False,
) -> None:
    """Stellar populations of galaxies from SDSS spectra (TFX pipeline)."""
    options["debug"] = debug
