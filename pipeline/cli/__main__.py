"""``python -m stellarpop.pipeline.cli``: the ``stellarpop`` command."""

from stellarpop.pipeline.cli import main

main()
