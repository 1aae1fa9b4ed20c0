"""Autoregressive densities p(x) = prod_i p(x_{o_i} | x_{o_1}, ..., x_{o_i-1}) for an order o of the dimensions:
NADE (Larochelle & Murray 2011), with RNADE's mixture-of-Gaussians conditionals for real-valued data (Uria et al.
2013, arXiv:1306.0186), and MADE (Germain et al. 2015, arXiv:1502.03509).

Each family is a Pyro model whose one site, x, is observed under ``AutoregressiveDistribution``, with a guide without
sites: the ELBO of the pair is log p(x) itself, so ppgen's SVI trainer fits it by maximum likelihood and evaluation
reports log p(x) exactly. An ensemble of K members (NADE's orderings, Uria et al. 2014, arXiv:1310.1757; MADE's
masks) is the mixture p(x) = (1/K) sum_k p_k(x), a density as exact as each member's. Training draws one member per
batch (Germain et al. 2015, section 4.3), so it maximizes E_k log p_k(x) <= log p(x); in eval mode the model is the
mixture, whose log-likelihood validation and evaluation report.
"""

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from pyro.nn import PyroModule
from torch import Tensor, nn

from ppgen.models.family import GenerativeFamily
from ppgen.nets import ACTIVATIONS, MIN_SCALE

__all__ = ["Conditionals", "AutoregressiveDistribution", "NADE", "MADE", "random_orders"]

# Examples per network call times the activations each holds: tensors of at most 16 MiB, which a CPU's allocator
# reuses, where larger ones are mapped afresh and zeroed by the kernel at every call (most of a NADE step's time).
ACTIVATIONS_PER_CALL = 2**22


class Conditionals:
    """The family of each dimension's conditional p(x_d | x_<d), from ``size`` parameters per dimension: Bernoulli
    (one logit), Gaussian (mean and scale) or a mixture of ``components`` Gaussians (logits, means, scales)."""

    def __init__(self, likelihood: str, components: int = 1):
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown likelihood {likelihood!r}: 'bernoulli' or 'gaussian'")
        self.likelihood, self.components = likelihood, components
        self.size = 1 if likelihood == "bernoulli" else 2 if components == 1 else 3 * components
        self.support = constraints.independent(
            constraints.boolean if likelihood == "bernoulli" else constraints.real, 1
        )

    def __call__(self, parameters: Tensor) -> dist.Distribution:
        """The conditionals, batch [..., D], of their parameters [..., D, size]."""
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=parameters[..., 0])
        if self.components == 1:
            loc, scale = parameters.unbind(-1)
            return dist.Normal(loc, F.softplus(scale) + MIN_SCALE)
        logits, loc, scale = parameters.unflatten(-1, (3, self.components)).unbind(-2)
        gaussians = dist.Normal(loc, F.softplus(scale) + MIN_SCALE)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), gaussians)


def random_orders(data_dim: int, count: int, seed: int) -> Tensor:
    """[count, D] orders of the dimensions (order[i] is the dimension at position i): the natural order first,
    then ``count`` - 1 random permutations drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    orders = [torch.arange(data_dim)] + [torch.randperm(data_dim, generator=generator) for _ in range(count - 1)]
    return torch.stack(orders)


class AutoregressiveDistribution(TorchDistribution):
    """p(x), event [D], of an autoregressive family: member ``member``'s p_k(x), or with None the ensemble's
    (1/K) sum_k p_k(x). ``log_prob`` is exact and differentiable; ``sample`` draws one dimension at a time in the
    member's order (for the ensemble, from a member drawn uniformly for each example)."""

    arg_constraints = {}

    def __init__(self, density: "AutoregressiveFamily", member: int | None = None, validate_args=None):
        self.density, self.member = density, member
        super().__init__(torch.Size(), torch.Size([density.data_dim]), validate_args=validate_args)

    @property
    def support(self):
        return self.density.conditionals.support

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) [...] of x [..., D]."""
        if self._validate_args:
            self._validate_sample(x)
        flat = x.reshape(-1, self.density.data_dim)
        return self.density.log_prob(flat, self.member).reshape(x.shape[:-1])

    @torch.no_grad()
    def sample(self, sample_shape=()) -> Tensor:
        """[*sample_shape, D] exact draws."""
        sample_shape = torch.Size(sample_shape)
        draws = self.density.sample(sample_shape.numel(), self.member)
        return draws.reshape(sample_shape + self.event_shape)


class AutoregressiveFamily(GenerativeFamily, PyroModule):
    """What NADE and MADE share: the Pyro model and empty guide, the ensemble's log p(x) and draws, and the exact
    held-out log-likelihood. A family defines ``conditionals_of`` (the conditionals of every dimension under one
    member) and ``member_sample``, and sets ``data_dim``, ``members`` (K) and ``conditionals``."""

    kl_per_site = False
    likelihood = "exact"
    data_dim: int
    members: int
    conditionals: Conditionals

    def conditionals_of(self, x: Tensor, member: int) -> dist.Distribution:
        """p(x_d | x before d in member's order) of every dimension d, batch [N, D], for x [N, D]."""
        raise NotImplementedError

    def member_sample(self, num_samples: int, member: int) -> Tensor:
        """[num_samples, D] draws from member's p_k, one dimension at a time."""
        raise NotImplementedError

    def model(self, x: Tensor | None = None) -> Tensor:
        """x [N, D] observed, or None to draw one example. In training mode an ensemble's member is drawn uniformly
        for the whole batch; otherwise x is scored under the ensemble."""
        member = int(torch.randint(self.members, ())) if self.training and self.members > 1 else None
        with pyro.plate("data", 1 if x is None else x.shape[0]):
            return pyro.sample("x", AutoregressiveDistribution(self, member), obs=x)

    def guide(self, x: Tensor | None = None) -> None:
        """No latent variables: the guide is empty."""

    def log_prob(self, x: Tensor, member: int | None = None, chunk_size: int | None = None) -> Tensor:
        """log p_k(x) [N] of x [N, D] under one member, or with None the ensemble's log (1/K) sum_k p_k(x), in
        network calls of ``chunk_size`` examples (None: ``ACTIVATIONS_PER_CALL`` activations)."""
        chunk_size = chunk_size or max(1, ACTIVATIONS_PER_CALL // self.activations_per_example())
        if len(x) > chunk_size:
            return torch.cat([self.log_prob(part, member, chunk_size) for part in x.split(chunk_size)])
        if member is not None:
            return self.conditionals_of(x, member).log_prob(x).sum(-1)
        per_member = torch.stack([self.log_prob(x, k) for k in range(self.members)])
        return per_member.logsumexp(0) - math.log(self.members)

    @torch.no_grad()
    def sample(self, num_samples: int, member: int | None = None) -> Tensor:
        """[num_samples, D] exact draws from one member, or from the ensemble (a member drawn per example)."""
        device = next(self.parameters()).device
        if member is not None:
            return self.member_sample(num_samples, member)
        members = torch.randint(self.members, (num_samples,), device=device)
        x = torch.empty(num_samples, self.data_dim, device=device)
        for k in members.unique().tolist():
            chosen = members == k
            x[chosen] = self.member_sample(int(chosen.sum()), k)
        return x

    @torch.no_grad()
    def exact_log_prob(self, x: Tensor, chunk_size: int | None = None) -> Tensor:
        """The ensemble's log p(x) [N] of x [N, D], without gradients, ``chunk_size`` examples per call."""
        return self.log_prob(x, None, chunk_size)

    def activations_per_example(self) -> int:
        """The numbers one example's log p(x) holds at once in a network call (sizes the chunks)."""
        raise NotImplementedError

    def analytic_elbo(self, *data: Tensor) -> Tensor:
        """The ELBO [N] of the empty guide: log p(x), exact."""
        return self.exact_log_prob(data[0])

    def held_out_log_likelihood(self, *test: Tensor, num_samples: int, chunk_size: int | None):
        """The exact log p(x) [N] as a ``LogLikelihood``: computed, not sampled, so its standard error is 0, its
        effective sample size 1 and its ``num_samples`` 1 (the evaluation's ``num_samples`` does not apply).
        ``chunk_size`` counts examples per call, each costing K network calls for an ensemble of K."""
        from ppgen.evaluate.bounds import LogLikelihood

        log_p = self.exact_log_prob(test[0], chunk_size and max(1, chunk_size // self.members))
        return LogLikelihood(log_p, torch.zeros_like(log_p), torch.ones_like(log_p), num_samples=1)


def _activation(name: str) -> nn.Module:
    return nn.Sigmoid() if name == "sigmoid" else ACTIVATIONS[name]()


class NADE(AutoregressiveFamily):
    """The neural autoregressive density estimator (Larochelle & Murray 2011): the conditional of the dimension at
    position i reads h_i = act(c + sum_{j<i} W_{o_j} x_{o_j}), one hidden layer whose pre-activations every
    position extends by one term, so that log p(x) costs O(D H). An ensemble of orderings adds to each observed
    dimension's term a learned vector U_{o_j} (the mask input of Uria et al. 2014, which tells an observed 0 from a
    dimension not yet seen).

    Args:
        data_dim: D.
        hidden: H, the hidden units.
        activation: "sigmoid" (the paper's) or a name of ``ppgen.nets.ACTIVATIONS``.
        likelihood: "bernoulli" (binary data) or "gaussian" (real-valued data: RNADE).
        components: Gaussians in each conditional's mixture (gaussian only).
        orderings: K, the ensemble's orderings: the natural one first, then random ones drawn from ``seed``.
    """

    kind = "nade"

    def __init__(
        self,
        data_dim: int,
        hidden: int = 500,
        activation: str = "sigmoid",
        likelihood: str = "bernoulli",
        components: int = 1,
        orderings: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        self.data_dim, self.members = data_dim, orderings
        self.conditionals = Conditionals(likelihood, components)
        self.activation = _activation(activation)
        self.register_buffer("orders", random_orders(data_dim, orderings, seed))  # [K, D]
        # Initialized as nn.Linear would be: uniform within 1/sqrt(fan-in).
        self.input_weight = nn.Parameter(_uniform(data_dim, hidden, fan_in=data_dim))  # W [D, H]
        self.hidden_bias = nn.Parameter(torch.zeros(hidden))  # c [H]
        self.observed_bias = nn.Parameter(torch.zeros(data_dim, hidden)) if orderings > 1 else None  # U [D, H]
        self.output_weight = nn.Parameter(_uniform(data_dim, hidden, self.conditionals.size, fan_in=hidden))  # V
        self.output_bias = nn.Parameter(torch.zeros(data_dim, self.conditionals.size))  # b [D, P]

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "NADE":
        return cls(math.prod(event_shape), **spec.model_dump(exclude={"kind"}))

    def conditionals_of(self, x: Tensor, member: int) -> dist.Distribution:
        order = self.orders[member]
        # Position i's pre-activation c + sum_{j<i} W_{o_j} x_{o_j} is a cumulative sum of terms [N, D, H]: c, then
        # the term of each position but the last (their product with ones and x is one pass, with no copies).
        inputs = torch.cat([x.new_ones(len(x), 1), x[:, order[:-1]]], 1)
        terms = inputs[:, :, None] * torch.cat([self.hidden_bias[None], self.input_weight[order[:-1]]])
        if self.observed_bias is not None:
            terms = terms + F.pad(self.observed_bias[order[:-1]], (0, 0, 1, 0))
        hidden = self.activation(terms.cumsum(1))
        in_order = torch.einsum("nih,ihp->nip", hidden, self.output_weight[order]) + self.output_bias[order]
        parameters = torch.empty_like(in_order)
        parameters[:, order] = in_order  # back to the dimensions' own order
        return self.conditionals(parameters)

    def member_sample(self, num_samples: int, member: int) -> Tensor:
        x = self.hidden_bias.new_zeros(num_samples, self.data_dim)
        pre_activation = self.hidden_bias.expand(num_samples, -1)
        for d in self.orders[member].tolist():
            parameters = self.activation(pre_activation) @ self.output_weight[d] + self.output_bias[d]  # [n, P]
            x[:, d] = self.conditionals(parameters[:, None]).sample()[:, 0]
            pre_activation = pre_activation + x[:, d, None] * self.input_weight[d]
            if self.observed_bias is not None:
                pre_activation = pre_activation + self.observed_bias[d]
        return x

    def activations_per_example(self) -> int:
        return self.data_dim * len(self.hidden_bias)


class MADE(AutoregressiveFamily):
    """The masked autoencoder for distribution estimation (Germain et al. 2015): an MLP whose weights are masked so
    that the outputs of dimension d see only the inputs before d in the order. Each input has the degree of its
    position in the order (1..D); each hidden unit a degree m drawn uniformly from [the previous layer's least
    degree, D - 1]; a unit sees the units of the layer below of degree <= m, and an output of degree d the last
    hidden units of degree < d. An ensemble of masks draws an order (``order_agnostic``) and degrees per mask.

    Args:
        data_dim: D.
        hidden: widths of the hidden layers (at least one).
        activation: a name of ``ppgen.nets.ACTIVATIONS``.
        likelihood: "bernoulli" or "gaussian".
        masks: K, the ensemble's masks; the first has the natural order.
        order_agnostic: masks after the first draw a random order too.
        seed: of the orders and degrees.
    """

    kind = "made"

    def __init__(
        self,
        data_dim: int,
        hidden: Sequence[int] = (500,),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        masks: int = 1,
        order_agnostic: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("MADE needs at least one hidden layer")
        self.data_dim, self.members = data_dim, masks
        self.conditionals = Conditionals(likelihood)
        self.activation = _activation(activation)
        widths = [data_dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output = nn.Linear(widths[-1], data_dim * self.conditionals.size)
        orders = random_orders(data_dim, masks, seed) if order_agnostic else torch.arange(data_dim).repeat(masks, 1)
        # The degrees (not the masks, K times larger) are the model's state: [K, width] per layer, inputs first.
        degrees = [torch.argsort(orders, dim=1) + 1]
        generator = torch.Generator().manual_seed(seed)
        for width in hidden:
            low = degrees[-1].min(dim=1, keepdim=True).values  # [K, 1]
            high = torch.clamp(torch.full_like(low, data_dim - 1), min=low)  # one layer of D = 1 sees nothing
            draws = torch.rand(masks, width, generator=generator)
            degrees.append(low + (draws * (high - low + 1)).long())  # uniform on low..high
        self.degree_names = [f"degrees_{layer}" for layer in range(len(degrees))]
        for name, layer_degrees in zip(self.degree_names, degrees):
            self.register_buffer(name, layer_degrees)

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "MADE":
        return cls(math.prod(event_shape), **spec.model_dump(exclude={"kind"}))

    def masks(self, member: int) -> list[Tensor]:
        """The [out, in] masks of the hidden layers and of the output layer (rows: parameter p of dimension d at
        p * D + d) under one member."""
        degrees = [getattr(self, name)[member] for name in self.degree_names]
        hidden = [d_out[:, None] >= d_in[None, :] for d_in, d_out in zip(degrees[:-1], degrees[1:])]
        output = degrees[0][:, None] > degrees[-1][None, :]
        return [*hidden, output.repeat(self.conditionals.size, 1)]

    def conditionals_of(self, x: Tensor, member: int) -> dist.Distribution:
        *hidden_masks, output_mask = self.masks(member)
        h = x
        for layer, mask in zip(self.layers, hidden_masks):
            h = self.activation(F.linear(h, layer.weight * mask, layer.bias))
        parameters = F.linear(h, self.output.weight * output_mask, self.output.bias)
        return self.conditionals(parameters.unflatten(-1, (self.conditionals.size, self.data_dim)).transpose(-1, -2))

    def member_sample(self, num_samples: int, member: int) -> Tensor:
        x = self.output.bias.new_zeros(num_samples, self.data_dim)
        order = torch.argsort(getattr(self, self.degree_names[0])[member])
        for d in order.tolist():
            x[:, d] = self.conditionals_of(x, member).sample()[:, d]
        return x

    def activations_per_example(self) -> int:
        return sum(layer.out_features for layer in self.layers) + self.output.out_features


def _uniform(*shape: int, fan_in: int) -> Tensor:
    bound = 1 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound)
