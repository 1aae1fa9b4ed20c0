"""Training objectives: the choice of Pyro ELBO, and the plumbing each one needs.

| elbo        | Pyro class (jit = false / true)                 | gradient estimator                   |
|-------------|-------------------------------------------------|--------------------------------------|
| "trace"     | Trace_ELBO / JitTrace_ELBO                      | Monte-Carlo log p - log q            |
| "meanfield" | TraceMeanField_ELBO / JitTraceMeanField_ELBO    | analytic KL where Pyro knows it      |
| "iwae"      | RenyiELBO(alpha=0), with a differentiable_loss  | importance-weighted bound, K samples |

Every ``differentiable_loss`` here returns a tensor on the model's device without reading it back: Pyro 1.9.2's eager
ELBOs read every site's log-density and the loss's NaN check to the host (``torch_item``, ``warn_if_nan``), a wait
for the device on each step of a GPU run; ppgen's trainer checks the losses at its log interval instead.
"""

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask
from pyro.infer import (
    ELBO,
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import (
    check_fully_reparametrized,
    get_dependent_plate_dims,
    is_identically_zero,
    is_validation_enabled,
    torch_sum,
)
from pyro.poutine.messenger import Messenger

from ppgen.infer.minibatch import ScaleDataPlate

__all__ = ["KLWeight", "Objective", "make_objective", "parameter_sites"]


class _LossOnDevice:
    """The ``differentiable_loss`` of an ELBO that gives, for each particle's traces, its ELBO and a surrogate
    whose gradient is the ELBO's gradient estimator: -ELBO in value, the surrogate's gradient, no host reads."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo, surrogate = self._elbo_and_surrogate(model_trace, guide_trace)
            loss = loss - (elbo.detach() + (surrogate - surrogate.detach())) / self.num_particles
        return loss


class _DeviceTrace_ELBO(_LossOnDevice, Trace_ELBO):
    """Trace_ELBO whose loss stays on the device (see the module docstring); the same estimator and gradient."""

    @staticmethod
    def _elbo_and_surrogate(model_trace, guide_trace) -> tuple[torch.Tensor, torch.Tensor]:
        """log p - log q at the guide's draw, and the surrogate whose gradient estimates the ELBO's: the
        reparametrized log-densities plus, for sites that are not reparametrizable, the score-function term
        weighted by the downstream log p - log q (Ranganath et al. 2014, arXiv:1401.0118; Pyro's Rao-Blackwellized
        form, reading plates for the conditional independence)."""
        surrogate, log_r = model_trace.log_prob_sum(), None
        for site in guide_trace.nodes.values():
            if site["type"] != "sample":
                continue
            _, score_function_term, entropy_term = site["score_parts"]
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - entropy_term.sum()
            if not is_identically_zero(score_function_term):
                log_r = _compute_log_r(model_trace, guide_trace) if log_r is None else log_r
                surrogate = surrogate + (log_r.sum_to(site["cond_indep_stack"]) * score_function_term).sum()
        return model_trace.log_prob_sum() - guide_trace.log_prob_sum(), surrogate


class _DeviceTraceMeanField_ELBO(_LossOnDevice, TraceMeanField_ELBO):
    """TraceMeanField_ELBO whose loss stays on the device (see the module docstring): the KL of each latent site
    in closed form where Pyro knows it, else log p - log q at the draw, as Pyro computes it."""

    @staticmethod
    def _elbo_and_surrogate(model_trace, guide_trace) -> tuple[torch.Tensor, torch.Tensor]:
        elbo = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                elbo = elbo + site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            if is_validation_enabled():
                check_fully_reparametrized(guide_site)
            try:
                kl = kl_divergence(guide_site["fn"], site["fn"])
            except NotImplementedError:
                elbo = elbo + site["log_prob_sum"] - guide_site["score_parts"].entropy_term.sum()
                continue
            kl = scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])
            elbo = elbo - (kl.sum() if torch.is_tensor(kl) else kl * guide_site["fn"].batch_shape.numel())
        for name, guide_site in guide_trace.nodes.items():  # auxiliary guide sites
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                elbo = elbo - guide_site["score_parts"].entropy_term.sum()
        return elbo, elbo


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


class _DifferentiableRenyiELBO(RenyiELBO):
    """RenyiELBO with the ``differentiable_loss`` Pyro 1.9.2 lacks: its loss, plus a zero-valued term whose
    gradient is that of ``loss_and_grads``'s surrogate (the same sites, the same self-normalized weights; Li &
    Turner 2016, arXiv:1602.02311). A module's forward can then return it (DistributedDataParallel), and it
    stays a tensor on the device (``loss_and_grads`` returns a float, a host sync every step)."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        elbo_particles, surrogate_particles = [], []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            elbo, surrogate = 0.0, 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    log_prob = torch_sum(site["log_prob"], sum_dims)
                    elbo, surrogate = elbo + log_prob.detach(), surrogate + log_prob
            for site in guide_trace.nodes.values():
                if site["type"] == "sample":
                    _, score_function_term, entropy_term = site["score_parts"]
                    log_prob = torch_sum(site["log_prob"], sum_dims)
                    elbo = elbo - log_prob.detach()
                    if not is_identically_zero(entropy_term):
                        if not is_identically_zero(score_function_term):
                            raise NotImplementedError("RenyiELBO: partially reparametrized guide sites")
                        surrogate = surrogate - log_prob
                    elif not is_identically_zero(score_function_term):
                        surrogate = surrogate + self.alpha / (1.0 - self.alpha) * log_prob
            elbo_particles.append(torch.as_tensor(elbo))
            surrogate_particles.append(torch.as_tensor(surrogate))
        if self.vectorize_particles and self.num_particles > 1:
            elbo_particles, surrogate_particles = elbo_particles[0], surrogate_particles[0]
        else:
            elbo_particles, surrogate_particles = torch.stack(elbo_particles), torch.stack(surrogate_particles)
        log_weights = (1.0 - self.alpha) * elbo_particles
        log_mean_weight = torch.logsumexp(log_weights, dim=0) - math.log(self.num_particles)
        loss = -log_mean_weight.sum() / (1.0 - self.alpha)
        surrogate_loss = -((log_weights - log_mean_weight).exp() * surrogate_particles).sum() / self.num_particles
        return loss + (surrogate_loss - surrogate_loss.detach())


_ELBOS = {
    ("trace", False): _DeviceTrace_ELBO,
    ("trace", True): _DetachedJitTrace_ELBO,
    ("meanfield", False): _DeviceTraceMeanField_ELBO,
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
    num_data: int
    kl_weight: KLWeight | None = None

    def set_kl_weight(self, weight: float) -> None:
        """Weight of the KL part of the ELBO (objectives made with ``kl_warmup=True``)."""
        self.kl_weight.weight = weight

    def differentiable_loss(self, *batch: torch.Tensor) -> torch.Tensor:
        """-ELBO of the batch, as a scalar tensor whose gradient is the ELBO's gradient estimator."""
        return self.elbo.differentiable_loss(self.model, self.guide, *batch)

    def loss_and_backward(self, *batch: torch.Tensor) -> torch.Tensor:
        """-ELBO of the batch (a detached scalar tensor), with gradients accumulated into the parameters."""
        loss = self.differentiable_loss(*batch)
        loss.backward()
        return loss.detach()

    def loss(self, *batch: torch.Tensor) -> float:
        """-ELBO of the batch without gradients."""
        return self.elbo.loss(self.model, self.guide, *batch)

    def loss_sum(self, data: tuple[torch.Tensor, ...], batch_size: int) -> torch.Tensor:
        """-ELBO (or -bound) summed over the examples of ``data``, evaluated in batches of batch_size without
        gradients: a float64 scalar tensor on the data's device (nothing is read back per batch).

        ``data`` may be one shard of a larger set (the objective's num_data examples): a rescaled batch
        loss estimates the whole set's, so it is weighted by batch / num_data to count the batch once.
        """
        total = torch.zeros((), dtype=torch.float64, device=data[0].device)
        with torch.no_grad():
            for start in range(0, len(data[0]), batch_size):
                batch = tuple(t[start : start + batch_size] for t in data)
                loss = self.differentiable_loss(*batch).double()
                total += loss * len(batch[0]) / self.num_data if self.rescaled else loss
        return total


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
        pyro_elbo = _DifferentiableRenyiELBO(alpha=0, **options)
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
    return Objective(pyro_elbo, model, guide, rescaled, num_data, kl_weight), cleanup


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
