"""IWAE / IWAER / IWAERrec benchmark, by layer (each imports only from those above it):

- ``kernels``: the CPU fast paths, behind one switch;
- ``randomness``: named random streams of a run and the noise drawn from them;
- ``models``: bounds, Gaussian layers, networks, the model interface and the models;
- ``evaluation``: the S-sample log-likelihood estimator;
- ``training``: the Lightning module and callbacks;
- ``runs``: one run from a Hydra config to its result file;
- ``table`` and ``speed``: Table 1 from result files, and the speed harness.
"""
