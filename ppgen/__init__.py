"""ppgen: deep generative models and Bayesian analysis as Pyro model/guide pairs.

The names the README uses are re-exported here, each from the module that defines it. They load on first
use (PEP 562), so ``import ppgen`` is cheap and a NumPyro run does not pay for torch's import.
"""

from ppgen.errors import DataError, PpgenError, SpecError, TrainingError
from ppgen.lazy import lazy_exports
from ppgen.threads import prefer_short_spinning

prefer_short_spinning()  # before torch loads: its OpenMP runtime reads the setting once (see ppgen.threads)

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "load_spec": "ppgen.spec.load",
    "run": "ppgen.runner",
    "load": "ppgen.fitted",  # a finished Bayesian run: summary, draws, predict(new data)
    "FittedModel": "ppgen.fitted",
    # the model zoo and its registry
    "VAE": "ppgen.models",
    "ConditionalVAE": "ppgen.models",
    "HierarchicalVAE": "ppgen.models",
    "FlowDensity": "ppgen.models",
    "DDPM": "ppgen.models",
    "GenerativeFamily": "ppgen.models",
    "FAMILIES": "ppgen.models",
    "register_family": "ppgen.models",
    # SVI for any model/guide pair
    "fit": "ppgen.infer",
    "FitResult": "ppgen.infer",
    "SVISettings": "ppgen.infer",
    "svi_init": "ppgen.infer",
    "svi_step": "ppgen.infer",
    # evaluation
    "elbo": "ppgen.evaluate",
    "log_likelihood": "ppgen.evaluate",
    "LogLikelihood": "ppgen.evaluate",
    "bits_per_dim": "ppgen.evaluate",
    # inference methods for declarative models, and the Langevin steps they and the DDPM samplers share
    "METHODS": "ppgen.infer.methods",
    "ula_step": "ppgen.samplers",
    "mala_step": "ppgen.samplers",
    "sgld_step": "ppgen.samplers",
}

__all__ = [*_EXPORTS, "PpgenError", "SpecError", "DataError", "TrainingError", "__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
