"""The training objective: a Pyro ELBO bound to a model/guide pair, as an ``nn.Module`` (Pyro's ``ELBOModule``).

The pair's modules are submodules of the objective, so ``objective.parameters()`` are theirs and no global
parameter store is involved. Compiled ELBOs (and RenyiELBO's ``loss_and_grads``) find parameters through
``pyro.param`` sites; for them the objective's model and guide announce the modules' parameters as such
sites, answered locally by ``LocalParams``, never by Pyro's global store. The ELBOs themselves are in
``ppgen.infer.elbos``; a pair with sites marked for enumeration gets the ELBO that sums them out.
"""

import contextlib
import weakref
from collections.abc import Callable, Iterable

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.poutine.messenger import Messenger
from torch import nn

from ppgen.infer.elbos import make_elbo
from ppgen.infer.minibatch import ScaleDataPlate
from ppgen.plates import inspect_plates

__all__ = ["KLWeight", "LocalParams", "Objective", "make_objective", "parameter_sites"]


class KLWeight(Messenger):
    """Multiply the log-density of every latent (unobserved) sample site, in model and guide, by ``weight``:
    the ELBO's KL part is weighted and its likelihood part is not. Raising the weight from 0 to 1 early in
    training is KL warm-up, which keeps hierarchical models from collapsing their posteriors onto their
    priors (Sønderby et al. 2016, arXiv:1602.02282)."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and not msg["infer"].get("enumerate"):
            msg["scale"] = msg["scale"] * self.weight


class LocalParams(Messenger):
    """Answer ``pyro.param(name)`` for the names in ``params`` (name -> unconstrained tensor) from that dict,
    as Pyro's store would (a constrained value whose ``unconstrained()`` is the tensor), without the store."""

    def __init__(self, params: dict[str, torch.Tensor]):
        super().__init__()
        self.params = params

    def _pyro_param(self, msg: dict) -> None:
        tensor = self.params.get(msg["name"])
        if tensor is None or msg["done"]:
            return
        value = tensor.view_as(tensor)  # an alias to hang the store's weakref on, leaving the parameter as it is
        value.unconstrained = weakref.ref(tensor)
        msg["value"], msg["done"] = value, True


def _announcing(fn: Callable, params: dict[str, torch.Tensor]) -> Callable:
    """``fn`` preceded by one ``pyro.param`` site per tensor of ``params``, answered by ``LocalParams``."""

    def run(*args, **kwargs):
        with LocalParams(params):
            for name in params:
                pyro.param(name)
            return fn(*args, **kwargs)

    return run


class Objective(nn.Module):
    """A Pyro ELBO bound to a model/guide pair: ``objective(*batch)`` is the batch's differentiable -ELBO.

    ``rescaled``: the loss of a batch estimates the whole data set's -ELBO (divide by its size for a
    per-example figure); otherwise it is the batch's own (divide by the batch size). The IWAE bound is
    not rescaled because its per-example logsumexp must see unscaled log-weights.

    ``elbo(enumerated)`` makes the Pyro ELBO for a pair with (True) or without sites marked for enumeration;
    ``enumerated=None`` reads that off the first batch (``_pyro_elbo``).
    """

    def __init__(
        self,
        elbo: Callable[[bool], ELBO],
        model: Callable,
        guide: Callable,
        modules: Iterable[nn.Module],
        *,
        rescaled: bool,
        num_data: int,
        enumerated: bool | None = None,
        kl_weight: KLWeight | None = None,
        local_params: dict[str, torch.Tensor] | None = None,
    ):
        super().__init__()
        self.trained = nn.ModuleList(modules)
        self.model, self.guide = model, guide
        self.rescaled, self.num_data, self.kl_weight = rescaled, num_data, kl_weight
        self.local_params = local_params or {}
        self._make_elbo = elbo
        self.elbo = None if enumerated is None else elbo(enumerated)

    def set_kl_weight(self, weight: float) -> None:
        """Weight of the KL part of the ELBO (objectives made with ``kl_warmup=True``)."""
        self.kl_weight.weight = weight

    def forward(self, *batch: torch.Tensor) -> torch.Tensor:
        """-ELBO of the batch, as a scalar tensor whose gradient is the ELBO's gradient estimator."""
        with self._local_params():
            return self._pyro_elbo(batch).differentiable_loss(self.model, self.guide, *batch)

    differentiable_loss = forward

    def loss_and_backward(self, *batch: torch.Tensor) -> torch.Tensor:
        """-ELBO of the batch (a detached scalar tensor), with gradients accumulated into the parameters."""
        loss = self(*batch)
        loss.backward()
        return loss.detach()

    def loss(self, *batch: torch.Tensor) -> float:
        """-ELBO of the batch without gradients."""
        with self._local_params():
            return self._pyro_elbo(batch).loss(self.model, self.guide, *batch)

    def _pyro_elbo(self, batch: tuple[torch.Tensor, ...]) -> ELBO:
        """The Pyro ELBO, made on the first batch when whether the pair enumerates was left open: the pair is traced
        once under a forked random generator, so that finding out draws nothing from the run's random stream (a
        resumed run then draws what an uninterrupted one does)."""
        if self.elbo is None:
            device = batch[0].device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
                enumerated = bool(inspect_plates(self.model, self.guide, *batch).enumerated)
            self.elbo = self._make_elbo(enumerated)
        return self.elbo

    def _local_params(self):
        """A compiled ELBO reads its parameters outside model and guide: answer it there too."""
        return LocalParams(self.local_params) if self.local_params else contextlib.nullcontext()

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
                loss = self(*batch).double()
                total += loss * len(batch[0]) / self.num_data if self.rescaled else loss
        return total


def make_objective(
    model: Callable,
    guide: Callable,
    modules: Iterable[nn.Module],
    *,
    elbo: str = "trace",
    num_particles: int = 1,
    jit: bool = False,
    num_data: int,
    max_plate_nesting: int,
    gradients: bool = True,
    kl_warmup: bool = False,
    enumerated: bool | None = None,
) -> Objective:
    """Bind a Pyro ELBO to (model, guide), rescaled from batches to num_data examples.

    max_plate_nesting is the model's own (see ``ppgen.plates.inspect_plates``); vectorized particles
    get the plate to its left. ``gradients=False`` makes an objective for ``loss`` alone (validation).
    ``kl_warmup=True`` lets ``set_kl_weight`` weight the KL part (see ``KLWeight``). ``enumerated``: the pair
    has sites marked for enumeration, which TraceEnum_ELBO sums out (``make_elbo``); None reads it off the
    first batch, so that any objective of the pair (the validation loss too) is the one training uses.
    """
    modules = list(modules)

    def pyro_elbo(enumerated: bool) -> ELBO:
        options = {"jit": jit, "num_particles": num_particles, "max_plate_nesting": max_plate_nesting}
        return make_elbo(elbo, **options, enumerated=enumerated)

    rescaled = elbo != "iwae"
    if rescaled:
        model, guide = ScaleDataPlate(num_data)(model), ScaleDataPlate(num_data)(guide)
    kl_weight = KLWeight() if kl_warmup else None
    if kl_weight is not None:
        model, guide = kl_weight(model), kl_weight(guide)
    local_params = {}
    if gradients and (jit or elbo == "iwae"):
        local_params = {
            f"_ppgen.{i}.{name}": p
            for i, module in enumerate(modules)
            for name, p in module.named_parameters()
            if p.requires_grad
        }
        model, guide = _announcing(model, local_params), _announcing(guide, local_params)
    return Objective(
        pyro_elbo,
        model,
        guide,
        modules,
        rescaled=rescaled,
        num_data=num_data,
        enumerated=enumerated,
        kl_weight=kl_weight,
        local_params=local_params,
    )


def parameter_sites(objective: Objective, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """The unconstrained tensors behind the pyro.param sites one evaluation of the objective reaches."""
    with poutine.trace(param_only=True) as capture:
        objective.loss(*batch)
    return {name: site["value"].unconstrained() for name, site in capture.trace.nodes.items()}
