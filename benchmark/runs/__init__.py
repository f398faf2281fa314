"""One run from a composed Hydra config to its ``result.json``: building data, model and
trainer (``builders``), the run itself with locking, skipping and resuming (``experiment``),
config checks (``validation``), what a result records (``provenance``), the command line
(``cli``, ``config``), data preparation (``prepare_data``), W&B (``wandb_logging``) and the
per-epoch metrics a run logged (``metrics_log``)."""
