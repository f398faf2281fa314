"""The S-sample importance-sampling estimate of the test log-likelihood, for any
:class:`~benchmark.models.base.ImportanceWeightedModel`."""
