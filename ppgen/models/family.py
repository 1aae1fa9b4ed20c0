"""What the code that builds, evaluates and samples a generative model asks of it, so that it never asks
the model's kind: a family builds itself from its spec tables and answers for its pair, its bounds and
its samples. Zoo classes mix ``GenerativeFamily`` into their ``PyroModule``; ``as_family`` gives a user's
own PyroModule with ``model`` and ``guide`` methods the defaults.

A family trained by a loss of its own (score matching, contrastive divergence, an adversarial game) is a
``LossFamily``: its per-example loss enters the same trainer as a Pyro factor in the ``"data"`` plate with an
empty guide, so minibatches, checkpoints, resume, progress and the time limit are the ELBO families' own.
"""

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pyro
import torch

from ppgen.errors import PpgenError, SpecError
from ppgen.flows import AUTOREGRESSIVE_FLOWS
from ppgen.spec.schema import GuideSpec

__all__ = [
    "GenerativeFamily",
    "LossFamily",
    "PairFamily",
    "as_family",
    "guide_options",
    "check_autoregressive_widths",
]


class GenerativeFamily:
    """The family protocol, with the defaults of a plain model/guide pair; abstract: a family defines
    ``model``, ``guide``, ``sample`` and ``from_spec``, and overrides the defaults that differ.

    Class attributes:
        kind: the ``[model]`` table's ``kind`` it is built from.
        data_keys: the data ``model`` and ``guide`` take, in order: ``("x",)``, or ``("x", "y")`` with labels.
        classifies: it holds ``class_log_prior`` [C] and classifies by likelihood p(x | y) p(y).
        kl_per_site: its guide's sites are latent layers, whose KL to the prior per site is worth reporting.
        calls_per_pair: network calls per (example, sample) pair of the evaluation pair, by which an
            evaluation chunk of pairs is divided.
        objective: what training minimizes, the name under which evaluation reports it per split: "elbo"
            (reported as the ELBO, which training maximizes) or a loss's name (reported as that loss).
        likelihood: how ``held_out_log_likelihood`` computes log p(x): "importance-sampled", "exact", "AIS",
            "probability-flow ODE", or None for a family that defines no density (a GAN).
        validates: the training objective on held-out data says which epoch is best (early stopping and
            ``keep_best``); False for an adversarial loss, whose value does not.
    """

    kind: ClassVar[str]
    data_keys: ClassVar[tuple[str, ...]] = ("x",)
    classifies: ClassVar[bool] = False
    kl_per_site: ClassVar[bool] = True
    calls_per_pair: int = 1
    objective: ClassVar[str] = "elbo"
    likelihood: ClassVar[str | None] = "importance-sampled"
    validates: ClassVar[bool] = True

    @classmethod
    def from_spec(
        cls, spec, event_shape: tuple[int, ...], guide=None, labels: torch.Tensor | None = None
    ) -> "GenerativeFamily":
        """The model a ``[model]`` table ``spec`` (and ``[guide]`` table) describes, for examples of
        ``event_shape``; ``labels`` [N] are the training labels of a family that takes ``"y"``."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a spec")

    def fit_to_data(self, x: torch.Tensor) -> None:
        """Set what the family derives from its data before training, from the training examples x [N, D] as
        evaluation sees them; ``ppgen run`` calls it once, not on resume. The default derives nothing."""

    def training_pair(self) -> tuple[Callable, Callable]:
        """The (model, guide) pair the trainer minimizes -ELBO of: the family's own, or a loss as a factor."""
        return self.model, self.guide

    def evaluation_pair(self) -> tuple[Callable, Callable]:
        """The (model, guide) pair whose importance weights estimate log p(x)."""
        return self.model, self.guide

    def held_out_log_likelihood(self, *test: torch.Tensor, num_samples: int, chunk_size: int | None):
        """log p(x) of the test examples as a ``ppgen.evaluate.LogLikelihood`` (estimate and stderr [N]), computed
        as ``likelihood`` says; None for a family without a density. The default importance-samples the
        evaluation pair with ``num_samples`` samples per example."""
        from ppgen.evaluate import log_likelihood

        model, guide = self.evaluation_pair()
        return log_likelihood(model, guide, *test, num_samples=num_samples, chunk_size=chunk_size)

    def analytic_elbo(self, *data: torch.Tensor) -> torch.Tensor | None:
        """The ELBO [N] with its KL terms in closed form, or None where the Monte Carlo ELBO is the estimate."""
        return None

    def draw(self, num_samples: int, sampling) -> torch.Tensor:
        """[num_samples, D] examples drawn as the ``[sampling]`` table says."""
        return self.sample(num_samples)

    def reconstruct(self, *data: torch.Tensor) -> torch.Tensor | None:
        """[N, D] reconstructions of the examples, or None for a family without an encoder."""
        return None


class LossFamily(GenerativeFamily):
    """A family trained by minimizing a per-example loss of its own rather than -ELBO.

    ``loss(*batch)`` [B] is the loss of each example; ``training_pair`` turns it into the pair the trainer takes:
    a model whose only site is the factor -loss in the ``"data"`` plate (rescaled to the data set like a
    likelihood) and a guide without sites, whose -ELBO is the loss summed. Evaluation reports the loss per split
    under the family's ``objective`` name. It has no latent sites to report KLs of.
    """

    kl_per_site: ClassVar[bool] = False
    likelihood: ClassVar[str | None] = None

    def loss(self, *batch: torch.Tensor) -> torch.Tensor:
        """[B] the training loss of each example of the batch."""
        raise NotImplementedError

    def training_pair(self) -> tuple[Callable, Callable]:
        return self._loss_model, self._loss_guide

    def evaluation_pair(self) -> tuple[Callable, Callable]:
        raise PpgenError(f"a {self.kind!r} has no model/guide pair to importance-sample")

    def held_out_log_likelihood(self, *test: torch.Tensor, num_samples: int, chunk_size: int | None):
        return None

    def _loss_model(self, *batch: torch.Tensor) -> None:
        with pyro.plate("data", len(batch[0])):
            pyro.factor("loss", -self.loss(*batch))

    def _loss_guide(self, *batch: torch.Tensor) -> None:
        pass


class PairFamily(GenerativeFamily):
    """A user's own PyroModule with ``model`` and ``guide`` methods, as a family with the defaults; it may
    name its ``data_keys``, offer ``sample(num_samples)``, and hold ``class_log_prior`` to classify."""

    kind = "custom"

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.model, self.guide = module.model, module.guide
        self.data_keys = tuple(getattr(module, "data_keys", ("x",)))
        self.classifies = "y" in self.data_keys and hasattr(module, "class_log_prior")

    @property
    def class_log_prior(self) -> torch.Tensor:
        return self.module.class_log_prior

    def draw(self, num_samples: int, sampling) -> torch.Tensor:
        if not hasattr(self.module, "sample"):
            raise PpgenError(f"{type(self.module).__name__} has no sample(num_samples) method to draw examples with")
        return self.module.sample(num_samples)


def as_family(module: torch.nn.Module) -> GenerativeFamily:
    """A zoo model as it is; any other module with ``model`` and ``guide`` methods wrapped in ``PairFamily``."""
    return module if isinstance(module, GenerativeFamily) else PairFamily(module)


def guide_options(guide: GuideSpec | None, latent_dims: Sequence[int]) -> dict[str, Any]:
    """A ``[guide]`` table (None: the default one) as the ``guide_*`` arguments of a latent-variable family
    whose layers have ``latent_dims``, after checking the widths of an autoregressive guide."""
    guide = guide or GuideSpec()
    if guide.family in AUTOREGRESSIVE_FLOWS:
        check_autoregressive_widths("guide.hidden", guide.hidden, max(latent_dims))
    return {"guide_family": guide.family, "guide_flows": guide.flows, "guide_hidden": guide.hidden}


def check_autoregressive_widths(key: str, hidden: Sequence[int], dim: int) -> None:
    """Pyro's masked autoregressive networks need every hidden width >= the dimension they transform."""
    if any(width < dim for width in hidden):
        raise SpecError(
            f"{key} = {hidden}: autoregressive flows need every hidden width >= the dimension they transform ({dim})"
        )
