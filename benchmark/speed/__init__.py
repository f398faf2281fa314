"""The speed harness (``python -m benchmark.speed``, ``make bench``): timings against the
device's matmul peak and minimal FLOP counts (``bench``, ``flops``, ``timing``),
straightforward implementations to compare with (``reference``), the report
(``report``) and the projected wall time printed before a sweep (``eta``). Nothing outside
this package imports it."""
