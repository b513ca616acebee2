"""PpxfLabeler: tf.Examples -> pPXF-labelled tf.Examples, checkpointed, on Beam."""
