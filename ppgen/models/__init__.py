"""The generative model zoo (VAE, conditional and hierarchical VAEs, flow densities, DDPM) and its registry
(``ppgen.models.zoo``), and the declarative Bayesian model (``ppgen.models.bayes``). The names load on first use
(``ppgen.lazy``), so a NumPyro run of a declarative model imports neither torch nor Pyro."""

from ppgen.lazy import lazy_exports

_EXPORTS = {
    "VAE": "ppgen.models.vae",
    "ConditionalVAE": "ppgen.models.cvae",
    "HierarchicalVAE": "ppgen.models.hvae",
    "FlowDensity": "ppgen.models.flow_density",
    "DDPM": "ppgen.models.diffusion",
    "Mixture": "ppgen.models.mixture",
    "NADE": "ppgen.models.autoregressive",
    "MADE": "ppgen.models.autoregressive",
    "ScoreModel": "ppgen.models.score",
    "EBM": "ppgen.models.energy",
    "GAN": "ppgen.models.gan",
    "GenerativeFamily": "ppgen.models.family",
    "PairFamily": "ppgen.models.family",
    "LossFamily": "ppgen.models.family",
    "as_family": "ppgen.models.family",
    "FAMILIES": "ppgen.models.zoo",
    "register_family": "ppgen.models.zoo",
    "family_of": "ppgen.models.zoo",
    "build_model": "ppgen.models.zoo",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
