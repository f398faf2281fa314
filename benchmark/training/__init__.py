"""Lightning training of any :class:`~benchmark.models.base.ImportanceWeightedModel`: the
module that maximises the bound with Adam for a group of R >= 1 seeds (``module``, over the
stacked parameters of ``stacked``), what runs report besides the bound (``callbacks``: weight
stds, the monitored test log-likelihood, image grids, the CUDA-graph check), and crash-safe
per-run checkpoints (``checkpointing``)."""
