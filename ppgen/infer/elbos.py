"""Pyro ELBOs whose differentiable loss stays on the device, keyed by (elbo, jit).

| elbo        | Pyro class (jit = false / true)                 | gradient estimator                   |
|-------------|-------------------------------------------------|--------------------------------------|
| "trace"     | Trace_ELBO / JitTrace_ELBO                      | Monte-Carlo log p - log q            |
| "meanfield" | TraceMeanField_ELBO / JitTraceMeanField_ELBO    | analytic KL where Pyro knows it      |
| "iwae"      | RenyiELBO(alpha=0), with a differentiable_loss  | importance-weighted bound, K samples |

Every ``differentiable_loss`` here returns a tensor on the model's device without reading it back: Pyro 1.9.2's eager
ELBOs read every site's log-density and the loss's NaN check to the host (``torch_item``, ``warn_if_nan``), a wait
for the device on each step of a GPU run; ppgen's trainer checks the losses at its log interval instead.
"""

import math

import torch
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

__all__ = ["make_elbo"]


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


def make_elbo(elbo: str = "trace", *, jit: bool = False, num_particles: int = 1, max_plate_nesting: int) -> ELBO:
    """The Pyro ELBO named ``elbo`` ("trace", "meanfield" or "iwae"), compiled with ``jit``.

    ``max_plate_nesting`` is the model's own; vectorized particles (num_particles > 1) get the plate to its left.
    """
    vectorize = num_particles > 1
    options = {
        "num_particles": num_particles,
        "vectorize_particles": vectorize,
        "max_plate_nesting": max_plate_nesting + vectorize,
    }
    if elbo == "iwae":
        return _DifferentiableRenyiELBO(alpha=0, **options)
    return _ELBOS[elbo, jit](**options, **({"ignore_jit_warnings": True} if jit else {}))
