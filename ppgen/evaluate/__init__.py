"""Evaluation of fitted models: held-out bounds on log p(x) and unit conversions."""

from ppgen.evaluate.bounds import LogLikelihood, elbo, log_likelihood
from ppgen.evaluate.classify import class_log_joint, classify
from ppgen.evaluate.metrics import bits_per_dim

__all__ = ["class_log_joint", "classify", "LogLikelihood", "elbo", "log_likelihood", "bits_per_dim"]
