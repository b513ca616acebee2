"""MockExampleGen: simulated SDSS-like spectra with exact truth, as tf.Examples."""
