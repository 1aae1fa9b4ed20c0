"""Inference: stochastic variational inference for any Pyro model/guide pair, as state and step or as ``fit``."""

from ppgen.infer.fitting import FitResult, fit
from ppgen.infer.settings import SVISettings
from ppgen.infer.svi import SVIState, svi_init, svi_step

__all__ = ["FitResult", "SVISettings", "SVIState", "fit", "svi_init", "svi_step"]
