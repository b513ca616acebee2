"""Feature keys and the tf.Transform preprocessing."""
