"""User-facing layer: the Python API, the click CLI, reports, benchmarks and the example-model zoo."""
