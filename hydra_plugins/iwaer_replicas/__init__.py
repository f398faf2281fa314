"""Hydra launcher ``hydra/launcher=replicas``: a sweep's runs that differ only in their seeds
train together as replicas of one stacked model (see
:mod:`benchmark.runs.replica_group`)."""
