"""The statistics of a verdict: paired tests and their intervals, ranks from every pairwise
test, and the power of a comparison. Pure functions of per-prompt values; no I/O."""
