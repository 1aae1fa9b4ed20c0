"""Pyro ELBOs whose differentiable loss stays on the device, keyed by (elbo, jit, enumerated).

| elbo                | Pyro class (jit = false / true)                | gradient estimator                       |
|---------------------|------------------------------------------------|------------------------------------------|
| "trace"             | Trace_ELBO / JitTrace_ELBO                     | Monte-Carlo log p - log q                |
| "meanfield"         | TraceMeanField_ELBO / JitTraceMeanField_ELBO   | analytic KL where Pyro knows it          |
| "iwae"              | RenyiELBO(alpha=0), with a differentiable_loss | importance-weighted bound, K samples     |
| "trace", enumerated | TraceEnum_ELBO / JitTraceEnum_ELBO             | enumerated sites summed out, Dice's rest |
| "auto" (default)    | "meanfield" where it is valid, else "trace"    | ``chosen_elbo``                          |

A pair with discrete sites marked for enumeration (``infer={"enumerate": "parallel"}``, ``config_enumerate``) is
trained with TraceEnum_ELBO, which sums those sites out by tensor variable elimination (Obermeyer et al. 2019,
arXiv:1902.03210) and estimates the rest as Trace_ELBO does; "meanfield" and "iwae" have no enumerating form.

Every ``differentiable_loss`` here returns a tensor on the model's device without reading it back: Pyro 1.9.2's eager
ELBOs read every site's log-density and the loss's NaN check to the host (``torch_item``, ``warn_if_nan``;
TraceEnum_ELBO also whether any Dice term has probability 0), a wait for the device on each step of a GPU run;
ppgen's trainer checks the losses at its log interval instead.
"""

import math

import torch
from opt_einsum import shared_intermediates
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask
from pyro.infer import (
    ELBO,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceMeanField_ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.inspect import get_dependencies
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.traceenum_elbo import _compute_model_factors
from pyro.infer.util import (
    Dice,
    check_fully_reparametrized,
    get_dependent_plate_dims,
    is_identically_zero,
    is_validation_enabled,
    torch_sum,
)
from pyro.ops import packed
from pyro.ops.contract import contract_tensor_tree
from pyro.ops.einsum.adjoint import require_backward
from pyro.ops.rings import MarginalRing, SampleRing
from pyro.poutine.util import prune_subsample_sites

from ppgen.errors import SpecError

__all__ = ["chosen_elbo", "make_elbo"]


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


class _DeviceDice(Dice):
    """Pyro's Dice expectation (Foerster et al. 2018, arXiv:1802.05098) with the terms of probability 0 zeroed by
    ``torch.where`` rather than dropped after asking whether there are any (``mask.all()``, a host read per term)."""

    def compute_expectation(self, costs):
        with shared_intermediates() as cache:
            ring = MarginalRing(cache=cache)
            expected_cost = 0.0
            for ordinal, cost_terms in costs.items():
                log_factors = self._get_log_factors(ordinal)
                scale = math.exp(sum(x for x in log_factors if not isinstance(x, torch.Tensor)))
                log_factors = [x for x in log_factors if isinstance(x, torch.Tensor)]
                queries = {frozenset(cost._pyro_dims): None for cost in cost_terms}
                for log_factor in log_factors:
                    key = frozenset(log_factor._pyro_dims)
                    if queries.get(key, False) is None:
                        queries[key] = log_factor
                for cost in cost_terms:
                    key = frozenset(cost._pyro_dims)
                    if queries[key] is None:
                        query = torch.zeros_like(cost)
                        query._pyro_dims = cost._pyro_dims
                        log_factors.append(query)
                        queries[key] = query
                sum_dims = set().union(*(x._pyro_dims for x in log_factors)) - ordinal
                for query in queries.values():
                    require_backward(query)
                root = ring.sumproduct(log_factors, sum_dims)
                root._pyro_backward()
                probs = {key: query._pyro_backward_result.exp() for key, query in queries.items()}
                for cost in cost_terms:
                    key = frozenset(cost._pyro_dims)
                    prob = probs[key]
                    prob._pyro_dims = queries[key]._pyro_dims
                    cost, prob = packed.broadcast_all(cost, prob)
                    # 0 * -inf would be NaN, in value or gradient: a term of probability 0 counts 0.
                    cost = torch.where(prob > 0, cost, torch.zeros((), dtype=cost.dtype, device=cost.device))
                    expected_cost = expected_cost + scale * (prob * cost).sum()
        return expected_cost


class _DeviceTraceEnum_ELBO(TraceEnum_ELBO):
    """TraceEnum_ELBO whose loss stays on the device: Pyro's estimate (the enumerated sites summed out by tensor
    variable elimination, the rest by Dice) without its NaN check and Dice's test for terms of probability 0,
    both host reads."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        elbo = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo = elbo + self._dice_elbo(model_trace, guide_trace)
        return -elbo / self.num_particles

    @staticmethod
    def _dice_elbo(model_trace, guide_trace) -> torch.Tensor:
        """Pyro's ``_compute_dice_elbo`` with ``_DeviceDice``: the model's costs with the enumerated sites summed
        out, less the guide's log-densities, in expectation under the guide."""
        costs, log_factors, ordering, sum_dims, scale = _compute_model_factors(model_trace, guide_trace)
        if log_factors:
            dim_to_size = {}
            for terms in log_factors.values():
                for term in terms:
                    dim_to_size.update(zip(term._pyro_dims, term.shape))
            with shared_intermediates() as cache:
                ring = SampleRing(cache=cache, dim_to_size=dim_to_size)
                log_factors = contract_tensor_tree(log_factors, sum_dims, ring=ring)
            for t, terms in log_factors.items():
                costs.setdefault(t, []).extend(packed.scale_and_mask(term, scale=scale) for term in terms)
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample":
                costs.setdefault(ordering[name], []).append(packed.neg(site["packed"]["log_prob"]))
        return _DeviceDice(guide_trace, ordering).compute_expectation(costs)


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


_ELBOS = {  # (elbo, jit, enumerated)
    ("trace", False, False): _DeviceTrace_ELBO,
    ("trace", True, False): _DetachedJitTrace_ELBO,
    ("meanfield", False, False): _DeviceTraceMeanField_ELBO,
    ("meanfield", True, False): _CachedJitTraceMeanField_ELBO,
    ("trace", False, True): _DeviceTraceEnum_ELBO,
    ("trace", True, True): JitTraceEnum_ELBO,
}


def chosen_elbo(elbo: str, model, batch: tuple[torch.Tensor, ...], enumerated: bool) -> str:
    """``elbo``, or for "auto": "meanfield" when the model has latent sites, enumerates none, and none of them
    depends on another in the model; "trace" otherwise.

    TraceMeanField_ELBO's closed-form KL terms lower the variance of each step (a VAE on MNIST reaches a given
    test NLL in fewer epochs). Pyro's condition for it is that no latent site's parents in the model are its
    descendants in the guide; a model whose latent sites have no latent parents meets it whatever the guide. The
    model is traced on ``batch`` with provenance tracking (``pyro.infer.inspect.get_dependencies``) under a
    forked random generator, so the choice draws nothing from the run's random stream.
    """
    if elbo != "auto":
        return elbo
    if enumerated:
        return "trace"
    devices = [batch[0].device] if batch[0].device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        trace = prune_subsample_sites(poutine.trace(model).get_trace(*batch))
        latent = {name for name, site in trace.nodes.items() if site["type"] == "sample" and not site["is_observed"]}
        try:
            upstream = get_dependencies(model, batch)["prior_dependencies"]
        except Exception:  # a model that provenance tracking cannot follow: the estimator that assumes nothing
            return "trace"
    independent = all(not (set(upstream.get(name, ())) - {name}) & latent for name in latent)
    return "meanfield" if latent and independent else "trace"


def make_elbo(
    elbo: str = "trace",
    *,
    jit: bool = False,
    num_particles: int = 1,
    max_plate_nesting: int,
    enumerated: bool = False,
) -> ELBO:
    """The Pyro ELBO named ``elbo`` ("trace", "meanfield" or "iwae"), compiled with ``jit``; with ``enumerated``
    (the pair has sites marked for enumeration) the one that sums them out: TraceEnum_ELBO for "trace".

    ``max_plate_nesting`` is the model's own; vectorized particles (num_particles > 1) get the plate to its left,
    and enumerated sites the dimensions left of those.

    Raises:
        SpecError: ``enumerated`` with elbo "meanfield" or "iwae", which cannot sum sites out.
    """
    if enumerated and elbo != "trace":
        raise SpecError(
            f"inference.elbo = {elbo!r} cannot sum out the model's enumerated discrete sites: use elbo = 'trace'"
            " (TraceEnum_ELBO), or sample the sites in the guide"
        )
    vectorize = num_particles > 1
    options = {
        "num_particles": num_particles,
        "vectorize_particles": vectorize,
        "max_plate_nesting": max_plate_nesting + vectorize,
    }
    if elbo == "iwae":
        return _DifferentiableRenyiELBO(alpha=0, **options)
    return _ELBOS[elbo, jit, enumerated](**options, **({"ignore_jit_warnings": True} if jit else {}))
