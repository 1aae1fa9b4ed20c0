"""Training objectives: the choice of Pyro ELBO, and the plumbing each one needs.

| elbo        | Pyro class (jit = false / true)                 | gradient estimator                   |
|-------------|-------------------------------------------------|--------------------------------------|
| "trace"     | Trace_ELBO / JitTrace_ELBO                      | Monte-Carlo log p - log q            |
| "meanfield" | TraceMeanField_ELBO / JitTraceMeanField_ELBO    | analytic KL where Pyro knows it      |
| "iwae"      | RenyiELBO(alpha=0)                              | importance-weighted bound, K samples |
"""

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.infer import (
    ELBO,
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceMeanField_ELBO,
)

from ppgen.infer.minibatch import ScaleDataPlate

__all__ = ["Objective", "make_objective", "parameter_sites"]


class _DetachedJitTrace_ELBO(JitTrace_ELBO):
    """Pyro 1.9.2's JitTrace_ELBO.differentiable_loss returns loss + (surrogate - surrogate.detach()) with
    a loss that is not detached inside the compiled function, so its gradient is twice the ELBO's
    (harmless under Adam, wrong under SGD or gradient clipping). This detaches it."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss, surrogate_loss = self.loss_and_surrogate_loss(model, guide, *args, **kwargs)
        return loss.detach() + (surrogate_loss - surrogate_loss.detach())


class _CachedJitTraceMeanField_ELBO(JitTraceMeanField_ELBO):
    """Pyro 1.9.2's JitTraceMeanField_ELBO stores its compiled loss as ``_differentiable_loss`` but checks
    ``_loss_and_surrogate_loss`` before building it, so it recompiles on every call (30 ms a step on a
    small VAE instead of 4). Setting the attribute it checks makes the compiled loss be reused."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        self._loss_and_surrogate_loss = self._differentiable_loss
        return loss


_ELBOS = {
    ("trace", False): Trace_ELBO,
    ("trace", True): _DetachedJitTrace_ELBO,
    ("meanfield", False): TraceMeanField_ELBO,
    ("meanfield", True): _CachedJitTraceMeanField_ELBO,
}
_fit_ids = itertools.count()


@dataclass(frozen=True)
class Objective:
    """A Pyro ELBO bound to a model/guide pair, ready for ``loss_and_backward(*batch)``.

    ``rescaled``: the loss of a batch estimates the whole data set's -ELBO (divide by its size for a
    per-example figure); otherwise it is the batch's own (divide by the batch size). The IWAE bound is
    not rescaled because its per-example logsumexp must see unscaled log-weights.
    """

    elbo: ELBO
    model: Callable
    guide: Callable
    rescaled: bool

    def loss_and_backward(self, *batch: torch.Tensor) -> torch.Tensor:
        """-ELBO of the batch (a detached scalar tensor), with gradients accumulated into the parameters."""
        if isinstance(self.elbo, RenyiELBO):  # Pyro's RenyiELBO has no differentiable_loss
            return torch.as_tensor(self.elbo.loss_and_grads(self.model, self.guide, *batch))
        loss = self.elbo.differentiable_loss(self.model, self.guide, *batch)
        loss.backward()
        return loss.detach()

    def loss(self, *batch: torch.Tensor) -> float:
        """-ELBO of the batch without gradients (used once to create lazily built parameters)."""
        return self.elbo.loss(self.model, self.guide, *batch)


def make_objective(
    model: Callable,
    guide: Callable,
    modules: Iterable[torch.nn.Module],
    *,
    elbo: str = "trace",
    num_particles: int = 1,
    jit: bool = False,
    num_data: int,
    max_plate_nesting: int,
) -> tuple[Objective, Callable[[], None]]:
    """Bind a Pyro ELBO to (model, guide), rescaled from batches to num_data examples.

    max_plate_nesting is the model's own (see ``ppgen.plates.inspect_plates``); vectorized particles
    get the plate to its left.

    Returns the objective and a function that undoes any global registration it made. Compiled ELBOs
    and RenyiELBO find parameters through ``pyro.param`` sites, so for them the modules' parameters are
    registered in Pyro's parameter store under names unique to this call, and removed by the cleanup.
    """
    vectorize = num_particles > 1
    options = {
        "num_particles": num_particles,
        "vectorize_particles": vectorize,
        "max_plate_nesting": max_plate_nesting + vectorize,
    }
    if elbo == "iwae":
        pyro_elbo = RenyiELBO(alpha=0, **options)
    else:
        pyro_elbo = _ELBOS[elbo, jit](**options, **({"ignore_jit_warnings": True} if jit else {}))
    rescaled = elbo != "iwae"
    if rescaled:
        model, guide = ScaleDataPlate(num_data)(model), ScaleDataPlate(num_data)(guide)
    cleanup = _no_cleanup
    if jit or elbo == "iwae":
        model, guide, cleanup = _with_param_sites(model, guide, list(modules))
    return Objective(pyro_elbo, model, guide, rescaled), cleanup


def _no_cleanup() -> None:
    pass


def _with_param_sites(model, guide, modules):
    """Wrap model and guide so that every call registers the modules' parameters as Pyro param sites."""
    store = pyro.get_param_store()
    prefix = f"_ppgen_fit{next(_fit_ids)}"
    names = [(f"{prefix}.{i}", module) for i, module in enumerate(modules)]

    def registered(fn):
        def run(*args, **kwargs):
            for name, module in names:
                pyro.module(name, module)
            return fn(*args, **kwargs)

        return run

    def cleanup():
        for key in [key for key in store.keys() if key.startswith(prefix)]:
            del store[key]

    return registered(model), registered(guide), cleanup


def parameter_sites(objective: Objective, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """The unconstrained tensors behind the pyro.param sites one evaluation of the objective reaches."""
    with poutine.trace(param_only=True) as capture:
        objective.loss(*batch)
    return {name: site["value"].unconstrained() for name, site in capture.trace.nodes.items()}
