"""IWAE / IWAER / IWAERrec: Gaussian layers, networks, bounds, models and evaluation."""
