"""Evaluation of fitted models: held-out bounds on log p(x) and unit conversions."""

from ppgen.evaluate.bounds import LogLikelihood, elbo, log_likelihood
from ppgen.evaluate.metrics import bits_per_dim

__all__ = ["LogLikelihood", "elbo", "log_likelihood", "bits_per_dim"]
