"""The TFX pipeline, its runners and the command line."""
