"""The run floor: the config schema, the prompt sets, the cell plan and its cache keys, the
runner that executes cells, the results files, MLflow tracking and the executors."""
