"""Inference: stochastic variational inference for any Pyro model/guide pair."""

from ppgen.infer.svi import FitResult, fit

__all__ = ["FitResult", "fit"]
