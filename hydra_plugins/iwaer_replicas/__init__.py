"""Hydra launcher ``hydra/launcher=replicas``: a sweep's runs that differ only in their seeds
train together as replicas of one stacked model (see
:func:`benchmark.runs.experiment.run_group`)."""
