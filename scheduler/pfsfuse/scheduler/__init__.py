"""Pipelines: specs, jobs, datums, executors and the worker."""
