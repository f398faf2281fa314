"""Lightning training of any :class:`~benchmark.models.base.ImportanceWeightedModel`: the
module that maximises the bound with Adam (``module``), the callbacks that log weight stds,
the monitored test log-likelihood and image grids (``callbacks``), and crash-safe
checkpoints (``checkpointing``)."""
