"""The model and its training: architectures (:mod:`.models`), the rest-frame front end,
the Trainer's input pipeline, ``run_fn`` and its resumable fit, the export with its
signatures, calibration and warmup records, and re-calibration of an existing export."""
