"""Silence one known TensorFlow message at interpreter shutdown, and nothing else.

When a process that ran a ``tf.function`` exits (a Beam worker after tf.Transform or a
prediction stage, the CLI after a Keras model), Python's finalisation sets TensorFlow's module
globals to ``None`` before the last ``AtomicFunction`` objects are collected; their
``__del__`` then fails on the registry it can no longer reach and Python prints
``Exception ignored in: <function AtomicFunction.__del__ ...> TypeError: 'NoneType' object is
not subscriptable`` with a traceback. Nothing is lost (the process is exiting), but a user
reads it as a crash. :func:`install` adds a ``sys.unraisablehook`` that drops exactly that
case (logged at debug level) and hands every other unraisable exception to the hook before it.

Importing this module installs the hook, so ``--beam_plugins=stellarpop.components.quiet_shutdown``
(``pipeline.configs.local_beam_args``) installs it in each Beam worker process as it starts.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

_KNOWN = "AtomicFunction.__del__"


def install() -> None:
    """Install the filter once per process (idempotent).

    The hook keeps what it uses in its own defaults: at finalisation this module's globals
    may already be ``None``."""
    previous = sys.unraisablehook
    if getattr(previous, "_stellarpop_quiet", False):
        return

    def hook(unraisable, previous=previous, known=_KNOWN, logger=log):
        where = getattr(unraisable.object, "__qualname__", "")
        if where == known and isinstance(unraisable.exc_value, TypeError):
            try:
                logger.debug("ignored at shutdown: %s: %s", known, unraisable.exc_value)
            except Exception:  # noqa: BLE001 - logging itself may be gone at shutdown
                pass
            return
        previous(unraisable)

    hook._stellarpop_quiet = True
    sys.unraisablehook = hook


install()
