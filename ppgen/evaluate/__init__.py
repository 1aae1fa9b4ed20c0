"""Evaluation of fitted models: held-out bounds on log p(x), the KL of each latent site, unit conversions."""

from ppgen.evaluate.bounds import (
    LogLikelihood,
    choose_chunk_size,
    elbo,
    free_memory,
    log_likelihood,
    probe_bytes_per_pair,
)
from ppgen.evaluate.classify import class_log_joint, classify
from ppgen.evaluate.latent_kl import latent_kl
from ppgen.evaluate.metrics import bits_per_dim

__all__ = [
    "class_log_joint",
    "classify",
    "LogLikelihood",
    "elbo",
    "log_likelihood",
    "choose_chunk_size",
    "free_memory",
    "probe_bytes_per_pair",
    "bits_per_dim",
    "latent_kl",
]
