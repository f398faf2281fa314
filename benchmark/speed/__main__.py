"""``python -m benchmark.speed [key=value ...]``: the speed benchmark (``make bench``)."""

from benchmark.speed.bench import main

main()
