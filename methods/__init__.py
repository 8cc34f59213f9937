"""Built-in steering methods: one module per method, each registered with ``@METHODS.register``.

Adding a method is one new file here (plus its tests); the registry imports every module of
this package. Third-party methods use the ``steerbench.methods`` entry-point group instead.
"""
