"""The speed harness: ``python -m benchmark.speed`` (``make bench``, :mod:`.bench`), the
projected wall time printed before a sweep (:mod:`.eta`) and the timing tools (:mod:`.timing`).
Nothing outside this package imports it."""
