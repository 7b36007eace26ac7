"""The pipeline engine: configs, DAG, executors, state, accounting. Knows nothing about ML."""
