"""TFMA: the Evaluator's EvalConfig (label keys, slices, thresholds) and the custom metrics
it computes, shared with the report and the benchmarks."""
