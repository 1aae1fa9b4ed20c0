"""ppgen: deep generative models and Bayesian analysis as Pyro model/guide pairs.

The names users reach for first are re-exported here; each lives in its own module.
"""

from ppgen.errors import DataError, PpgenError, SpecError, TrainingError
from ppgen.evaluate import LogLikelihood, bits_per_dim, elbo, log_likelihood
from ppgen.infer import FitResult, fit
from ppgen.models import VAE
from ppgen.spec.load import load_spec

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "fit",
    "FitResult",
    "elbo",
    "log_likelihood",
    "LogLikelihood",
    "bits_per_dim",
    "load_spec",
    "PpgenError",
    "SpecError",
    "DataError",
    "TrainingError",
    "__version__",
]
