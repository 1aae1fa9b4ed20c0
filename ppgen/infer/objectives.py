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
from pyro.poutine.messenger import Messenger

from ppgen.infer.minibatch import ScaleDataPlate

__all__ = ["KLWeight", "Objective", "make_objective", "parameter_sites"]


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


class KLWeight(Messenger):
    """Multiply the log-density of every latent (unobserved) sample site, in model and guide, by ``weight``:
    the ELBO's KL part is weighted and its likelihood part is not. Raising the weight from 0 to 1 early in
    training is KL warm-up, which keeps hierarchical models from collapsing their posteriors onto their
    priors (Sønderby et al. 2016, arXiv:1602.02282)."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.weight


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
    kl_weight: KLWeight | None = None

    def set_kl_weight(self, weight: float) -> None:
        """Weight of the KL part of the ELBO (objectives made with ``kl_warmup=True``)."""
        self.kl_weight.weight = weight

    def loss_and_backward(self, *batch: torch.Tensor) -> torch.Tensor:
        """-ELBO of the batch (a detached scalar tensor), with gradients accumulated into the parameters."""
        if isinstance(self.elbo, RenyiELBO):  # Pyro's RenyiELBO has no differentiable_loss
            return torch.as_tensor(self.elbo.loss_and_grads(self.model, self.guide, *batch))
        loss = self.elbo.differentiable_loss(self.model, self.guide, *batch)
        loss.backward()
        return loss.detach()

    def loss(self, *batch: torch.Tensor) -> float:
        """-ELBO of the batch without gradients."""
        return self.elbo.loss(self.model, self.guide, *batch)

    def loss_per_example(self, data: tuple[torch.Tensor, ...], batch_size: int) -> float:
        """-ELBO (or -bound) per example of a whole data set, in batches; the objective must have been made
        with num_data = len(data[0])."""
        num_examples = len(data[0])
        losses = [
            self.loss(*(t[start : start + batch_size] for t in data)) for start in range(0, num_examples, batch_size)
        ]
        # Rescaled batch losses each estimate the whole set's; unscaled ones are the batches' own.
        total = sum(losses) / len(losses) if self.rescaled else sum(losses)
        return total / num_examples


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
    gradients: bool = True,
    kl_warmup: bool = False,
) -> tuple[Objective, Callable[[], None]]:
    """Bind a Pyro ELBO to (model, guide), rescaled from batches to num_data examples.

    max_plate_nesting is the model's own (see ``ppgen.plates.inspect_plates``); vectorized particles
    get the plate to its left. ``gradients=False`` makes an objective for ``loss`` alone (validation).
    ``kl_warmup=True`` lets ``set_kl_weight`` weight the KL part (see ``KLWeight``).

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
    kl_weight = KLWeight() if kl_warmup else None
    if kl_weight is not None:
        model, guide = kl_weight(model), kl_weight(guide)
    cleanup = _no_cleanup
    if gradients and (jit or elbo == "iwae"):
        model, guide, cleanup = _with_param_sites(model, guide, list(modules))
    return Objective(pyro_elbo, model, guide, rescaled, kl_weight), cleanup


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
