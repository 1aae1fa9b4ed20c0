"""Evaluation of fitted models: held-out bounds on log p(x), the KL of each latent site, unit conversions.
The names load on first use (``ppgen.lazy``)."""

from ppgen.lazy import lazy_exports

_EXPORTS = {
    "LogLikelihood": "ppgen.evaluate.bounds",
    "elbo": "ppgen.evaluate.bounds",
    "log_likelihood": "ppgen.evaluate.bounds",
    "choose_chunk_size": "ppgen.evaluate.bounds",
    "free_memory": "ppgen.evaluate.bounds",
    "probe_bytes_per_pair": "ppgen.evaluate.bounds",
    "class_log_joint": "ppgen.evaluate.classify",
    "classify": "ppgen.evaluate.classify",
    "latent_kl": "ppgen.evaluate.latent_kl",
    "bits_per_dim": "ppgen.evaluate.metrics",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
