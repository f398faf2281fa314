"""IWAE / IWAER / IWAERrec benchmark, by layer (each imports only from those above it):

- ``compilation``: ``torch.compile`` as the config key ``compile`` asks;
- ``randomness``: named random streams of a run and the noise drawn from them;
- ``models``: bounds, Gaussian layers, networks, the model interface and the models;
- ``evaluation``: the S-sample log-likelihood estimator;
- ``training``: the Lightning module (a group of runs that differ only in their seeds; a
  single run is the group of one) and what it reports;
- ``runs``: runs from Hydra configs to their result files;
- ``table`` and ``speed``: Table 1 from result files, and the speed harness.
"""
