"""Inference: stochastic variational inference for any Pyro model/guide pair, as state and step or as ``fit``.
The names load on first use (``ppgen.lazy``): the NumPyro modules of this package import neither torch nor Pyro."""

from ppgen.lazy import lazy_exports

_EXPORTS = {
    "FitResult": "ppgen.infer.fitting",
    "fit": "ppgen.infer.fitting",
    "SVISettings": "ppgen.infer.settings",
    "SVIState": "ppgen.infer.svi",
    "svi_init": "ppgen.infer.svi",
    "svi_step": "ppgen.infer.svi",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
