"""Where the Beam jobs run: the DirectRunner (local), a ``dask.distributed`` cluster, or any
runner the user names with Beam arguments.

:func:`beam_args` turns the CLI's ``--dask tcp://HOST:PORT`` plus the user's Beam arguments
into the arguments every job takes (``beam_pipeline_args`` of the TFX executors), after a
pre-flight check of the scheduler (:func:`check_scheduler`): a dead or wrong address is a
one-line :class:`SchedulerError` within seconds, not a hang in a worker or a traceback.

:class:`DaskRunner` is Beam 2.59's DaskRunner with three faults of that release fixed (all
measured, see ``tests/components/test_dask.py``):

* It passes *every* non-default pipeline option (``runner``, ``beam_plugins``, ...) to
  ``distributed.Client(**options)``, which refuses them (``ValueError: Unexpected keyword
  arguments: ['runner']``): with Beam arguments, as TFX executors get them, it never runs.
  Here only the options of ``DaskOptions`` reach the client.
* Its result calls ``Client.wait_for_workers(timeout=...)`` without ``n_workers``, which
  distributed 2024.8 requires (``TypeError``). Here the result gathers the futures only.
* It never closes its client. Here the client is closed when the pipeline finishes or fails.

Without ``--dask_client_address`` the stock runner starts a ``LocalCluster`` of processes in
the launching process (which then needs a ``__main__`` guard, and inside pytest re-imports
the test module): this runner refuses instead, with a one-line error.

The translations are Beam's own (Create, ParDo/Map, GroupByKey, Flatten); the jobs are
written to that subset (no side inputs, tagged outputs, Beam file sinks or DoFn lifecycle).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import time
from urllib.parse import urlsplit

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.dask import dask_runner
from apache_beam.runners.runner import PipelineState

log = logging.getLogger(__name__)

DASK_RUNNER = f"{__name__}.DaskRunner"
# Beam's own name of its DaskRunner (not registered: the dotted path); replaced by ours.
STOCK_DASK_RUNNERS = ("apache_beam.runners.dask.dask_runner.DaskRunner", "DaskRunner")
DEFAULT_TIMEOUT_S = 5.0
# Options of the local DirectRunner that mean nothing on a cluster (configs.local_beam_args).
_DIRECT_ONLY = ("--runner", "--direct_running_mode", "--direct_num_workers")


class SchedulerError(ValueError):
    """A Dask scheduler address that cannot be used (one line: the address and the problem)."""


def _host_port(address: str) -> tuple[str, int]:
    """(host, port) of ``tcp://HOST:PORT``; a SchedulerError for anything else."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise SchedulerError(f"--dask {address!r}: not a scheduler address (expected tcp://HOST:PORT)")
    return parts.hostname, port


def check_scheduler(address: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Check that a Dask scheduler answers at ``address``; returns its number of workers.

    A plain TCP connect first (a closed port fails at once, a dropped one after
    ``timeout_s``), then Dask's ``identity`` request (:func:`_identity`), which tells a
    scheduler from any other server and counts its workers.

    Raises
    ------
    SchedulerError
        One line naming the address and the problem (refused, timed out, not a scheduler,
        no workers).
    """
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise SchedulerError(f"--dask {address}: no Dask scheduler reachable ({exc.strerror or exc})") from None
    start = time.monotonic()
    try:
        info = _identity(address, timeout_s)
    except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
        raise SchedulerError(
            f"--dask {address}: the server there did not answer as a Dask scheduler within {timeout_s:g} s "
            f"({type(exc).__name__})"
        ) from None
    if not isinstance(info, dict) or info.get("type") != "Scheduler":
        raise SchedulerError(f"--dask {address}: the server there is not a Dask scheduler")
    n_workers = len(info.get("workers", {}))
    if not n_workers:
        raise SchedulerError(f"--dask {address}: the scheduler has no workers (start them: `dask worker {address}`)")
    log.info("Dask scheduler %s: %d workers (checked in %.1f s)", address, n_workers, time.monotonic() - start)
    return n_workers


def _identity(address: str, timeout_s: float) -> dict:
    """The scheduler's ``identity`` reply, all of it within ``timeout_s``.

    Not ``distributed.Client(address, timeout=...)``: its timeout covers the TCP connect
    only, and against a server that accepts the connection but never answers (measured: any
    silent port) it waits for ever. The exchange runs on its own event loop in its own
    thread, leaving the caller's loop (and distributed's) alone."""
    from distributed.comm import connect

    async def exchange():
        comm = await connect(address, timeout=timeout_s)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded():
        return await asyncio.wait_for(exchange(), timeout_s)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, bounded()).result()


def beam_args(
    dask_address: str | None, user_args: list[str] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[str]:
    """The Beam arguments of a job: the user's, or, with ``dask_address``, the Dask runner's.

    Parameters
    ----------
    dask_address : str or None
        ``tcp://HOST:PORT`` of a running scheduler (the CLI's ``--dask``); None: the user's
        arguments unchanged (DirectRunner or whatever ``--runner`` they name).
    user_args : list of str
        Beam arguments (the CLI's ``--beam-arg``). With ``dask_address``, the DirectRunner's
        own options (``--runner``, ``--direct_*``, as ``local_beam_args`` adds) are dropped;
        any other runner named here is a conflict.
    timeout_s : float
        For the pre-flight check and for the job's own connection.

    Raises
    ------
    SchedulerError
        The scheduler cannot be used (:func:`check_scheduler`), or ``--runner`` names another
        runner than the DirectRunner.
    """
    args = [f"--runner={DASK_RUNNER}" if _runner(a) in STOCK_DASK_RUNNERS else a for a in user_args or []]
    if dask_address is None:
        if is_dask(args):  # Dask named through Beam's own arguments: the same checks
            named = [a.split("=", 1)[1] for a in args if a.startswith("--dask_client_address=")]
            if not named:
                raise SchedulerError("DaskRunner: give --dask_client_address=tcp://HOST:PORT (a running scheduler)")
            check_scheduler(named[-1], timeout_s)
        return args
    for arg in args:
        if arg.startswith("--runner") and arg.split("=", 1)[-1] not in ("DirectRunner", DASK_RUNNER):
            raise SchedulerError(f"--dask {dask_address}: conflicts with --beam-arg={arg}")
    check_scheduler(dask_address, timeout_s)
    kept = [a for a in args if not a.startswith(_DIRECT_ONLY) and not a.startswith("--dask_")]
    return [
        *kept,
        f"--runner={DASK_RUNNER}",
        f"--dask_client_address={dask_address}",
        f"--dask_connection_timeout={int(max(1, timeout_s))}",
    ]


def _runner(arg: str) -> str | None:
    return arg.split("=", 1)[1] if arg.startswith("--runner=") else None


def pipeline_options(dask_address: str | None, user_args: list[str] | None = None) -> PipelineOptions:
    """:func:`beam_args` as PipelineOptions (for ``beam.Pipeline(options=...)``)."""
    return PipelineOptions(beam_args(dask_address, user_args))


def is_dask(args: list[str]) -> bool:
    """Whether Beam arguments select a Dask runner (the stock one or this module's)."""
    return any(a.startswith("--runner=") and a.endswith("DaskRunner") for a in args)


class _Result(dask_runner.DaskRunnerResult):
    """Waits for every future of the job, then closes the job's client (also on failure)."""

    def wait_until_finish(self, duration=None) -> str:
        if self._state in (PipelineState.DONE, PipelineState.FAILED):
            return self._state
        try:
            self.client.gather(self.futures, errors="raise")
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            self.futures = []
            self.client.close()
        return self._state

    def metrics(self):
        """Beam metrics do not reach the client on Dask (the stock result raises
        NotImplementedError); the jobs report their counts in their summaries instead."""
        raise NotImplementedError("Beam metrics are not collected on Dask: read the job's summary file")


class DaskRunner(dask_runner.DaskRunner):
    """Beam 2.59's DaskRunner that runs with Beam arguments and closes its client (see the
    module's docstring); name it ``--runner=stellarpop.components.engines.DaskRunner``."""

    def run_pipeline(self, pipeline, options):
        import distributed

        opts = options.view_as(dask_runner.DaskOptions)
        if not opts.address and not opts.scheduler_file:
            raise SchedulerError("DaskRunner: give --dask_client_address=tcp://HOST:PORT (a running scheduler)")
        timeout = opts.timeout if isinstance(opts.timeout, int) else DEFAULT_TIMEOUT_S
        if opts.address:
            check_scheduler(opts.address, timeout)
        kwargs = {
            "address": opts.address,
            "scheduler_file": opts.scheduler_file,
            "name": opts.name,
            "timeout": timeout,
            "connection_limit": opts.connection_limit,
        }
        client = distributed.Client(**{k: v for k, v in kwargs.items() if v is not None}, set_as_default=False)
        try:
            pipeline.replace_all(dask_runner.dask_overrides())
            visitor = self.to_dask_bag_visitor()
            pipeline.visit(visitor)
            futures = client.compute(list(visitor.bags.values()))
        except BaseException:
            client.close()
            raise
        return _Result(client, futures)
