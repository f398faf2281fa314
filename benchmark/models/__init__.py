"""The models and their math: log-densities and bounds (``bounds``), linear layers with
deterministic or Gaussian weights (``gaussian_layers``), MLPs of them (``networks``), the
interface every model implements (``base``), and the models: the paper's IWAE family with one
stochastic layer (``iwae``) and Burda et al.'s two-stochastic-layer family (``two_layer``).
Above :mod:`benchmark.randomness`; nothing here knows about
training, configs or files."""

from benchmark.models.base import ImportanceWeightedModel
from benchmark.models.iwae import ImportanceWeightedAutoencoder

__all__ = ["ImportanceWeightedAutoencoder", "ImportanceWeightedModel"]
