"""The static report of a pipeline run: :mod:`.run_report` finds the run's artefacts in MLMD
and reads the evaluation; :mod:`.tables` writes the page and its sections; :mod:`.figures`
draws the figures (TFMA 0.47 renders only in Jupyter)."""
