"""Evaluation of fitted models: held-out bounds on log p(x), the KL of each latent site, unit conversions, and
sample-based figures (MMD, classifier two-sample test, FID-like and KID-like distances, precision/recall).
The names load on first use (``ppgen.lazy``)."""

from ppgen.lazy import lazy_exports

_EXPORTS = {
    "LogLikelihood": "ppgen.evaluate.bounds",
    "elbo": "ppgen.evaluate.bounds",
    "log_likelihood": "ppgen.evaluate.bounds",
    "choose_chunk_size": "ppgen.evaluate.bounds",
    "free_memory": "ppgen.evaluate.bounds",
    "probe_bytes_per_pair": "ppgen.evaluate.bounds",
    "class_log_joint": "ppgen.evaluate.classification",
    "classify": "ppgen.evaluate.classification",
    "latent_kl": "ppgen.evaluate.kl_per_site",
    "bits_per_dim": "ppgen.evaluate.metrics",
    "mmd_test": "ppgen.evaluate.sample_metrics",
    "classifier_two_sample_test": "ppgen.evaluate.sample_metrics",
    "frechet_distance": "ppgen.evaluate.sample_metrics",
    "gaussian_frechet_distance": "ppgen.evaluate.sample_metrics",
    "kernel_inception_distance": "ppgen.evaluate.sample_metrics",
    "precision_recall": "ppgen.evaluate.sample_metrics",
    "sample_evaluation": "ppgen.evaluate.sample_metrics",
    "Features": "ppgen.evaluate.features",
    "data_features": "ppgen.evaluate.features",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
