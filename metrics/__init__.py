"""Built-in metrics: one module per metric, each registered with ``@METRICS.register``.

Adding a metric is one new file here (plus its tests); the registry imports every module of
this package. Third-party metrics use the ``steerbench.metrics`` entry-point group instead.
"""
