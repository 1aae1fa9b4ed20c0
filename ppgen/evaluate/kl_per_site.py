"""How much each latent site of a model/guide pair is used: its share of the ELBO's KL part.

For a latent site z_s the ELBO charges E_q[log q(z_s | ...) - log p(z_s | ...)] nats per example. A site
whose figure is near zero carries no information about x: the guide has collapsed onto the prior there
(the "inactive units" of Burda et al. 2015, arXiv:1509.00519, section 5.2). Hierarchical VAEs are
prone to it layer by layer, so this is the first thing to read when one underperforms.
"""

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

__all__ = ["latent_kl"]


@torch.no_grad()
def latent_kl(
    model: Callable, guide: Callable, data: tuple[torch.Tensor, ...], num_samples: int = 10
) -> dict[str, float]:
    """Monte-Carlo estimate of E_q[log q - log p] per example for each latent site of the guide.

    Args:
        model, guide: a Pyro pair taking ``*data``, each tensor with the ``"data"`` plate as its first dimension.
        data: the examples, e.g. (x [N, D],).
        num_samples: guide draws averaged (one pass over all N examples each).

    Returns:
        {site name: nats per example}, in the guide's order. Sites outside the ``"data"`` plate (global
        latents) are divided by N too, so that the figures add up to the ELBO's KL part per example.
    """
    num_examples = len(data[0])
    totals: dict[str, torch.Tensor] = {}
    for _ in range(num_samples):
        guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(*data))
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*data)
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            value = site["value"]
            gap = site["fn"].log_prob(value) - model_trace.nodes[name]["fn"].log_prob(value)
            totals[name] = totals.get(name, 0.0) + gap.sum()  # stays on the device
    return {name: float(total) / (num_samples * num_examples) for name, total in totals.items()}
