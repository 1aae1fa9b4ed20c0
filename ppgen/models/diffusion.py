"""Denoising diffusion (Ho et al. 2020, arXiv:2006.11239) as a hierarchical latent chain: the model is the
reverse chain, the guide the fixed forward noising process.

Pixels x in [0, 1] become y_0 = 2 x - 1. With a schedule beta_1..beta_T, alpha_t = 1 - beta_t and
abar_t = prod_{s <= t} alpha_s:

    model:  y_T ~ N(0, I);  y_t-1 | y_t ~ N(mu(y_t, t), sigma_t^2 I) for t = T..2;  x | y_1 ~ decoder
    guide:  q(y_t | y_0) = N(sqrt(abar_t) y_0, (1 - abar_t) I)
            q(y_t-1 | y_t, y_0) = N(c0_t y_0 + c1_t y_t, betatilde_t I)                 (Ho et al. eq. 7)
    mu(y_t, t) = (y_t - beta_t / sqrt(1 - abar_t) eps(y_t, t)) / sqrt(alpha_t)          (eps-parameterised)

Training program (the derivation). Factor the guide top-down, q(y_1:T | y_0) = q(y_T | y_0)
prod_{t >= 2} q(y_t-1 | y_t, y_0). Then

    ELBO = E_q[log p(x | y_1)] - KL(q(y_T | y_0) || N(0, I))
           - sum_{t = 2..T} E_{q(y_t | y_0)} KL(q(y_t-1 | y_t, y_0) || p(y_t-1 | y_t)),

and term t depends on q only through the pair (y_t-1, y_t), whose law is q(y_t | y_0) q(y_t-1 | y_t, y_0).
Drawing S of the T - 1 steps uniformly, one pair for each independently, and scaling their terms by
(T - 1) / S therefore gives an unbiased estimate of the ELBO and of its gradient. As Pyro programs, inside
``pyro.plate("time", T - 1, subsample_size=S)`` (which applies that scale), the guide samples "y_t" from
q(y_t | y_0) and "y_prev" from q(y_t-1 | y_t, y_0); the model samples "y_t" from the same q(y_t | y_0), so
that site's log-ratio is exactly zero, and "y_prev" from p(y_t-1 | y_t). The t = 1 and t = T terms are the
sites "y_1" (cancelling likewise; x is then observed through the decoder) and "y_T" (the N(0, I) prior).
With ``TraceMeanField_ELBO`` every KL above is computed in closed form: Ho et al.'s L_vlb with sampled t.

``chain_model``/``chain_guide`` write the same chain with one site "trajectory" holding y_1..y_T drawn
jointly by the forward process: the pair whose importance weights give log p(x) by importance sampling
with the forward process as proposal. ``chain_elbo`` sums all T terms in closed form (one y_t per t).

Label-conditional chain with classifier-free guidance (Ho & Salimans 2021, arXiv:2207.12598). With C classes the
network also takes a label, eps(y_t, t, y), where label C is a "null" label that stands for none. The model is then
p(x | y): the reverse chain and the decoder see y, the forward process (the guide) does not. In training mode the
model replaces each example's label by the null label with probability ``label_dropout``, drawn afresh at every
call, so one network learns both eps(y_t, t, y) and the unconditional eps(y_t, t, null); in eval mode it keeps the
true labels, so held-out ELBOs and importance-sampled likelihoods are of log p(x | y). Sampling with weight w uses

    eps~(y_t, t, y) = (1 + w) eps(y_t, t, y) - w eps(y_t, t, null)

in place of eps in every sampler (ancestral, predictor-corrector and Langevin, through the score), and likewise
for the decoder's mean (and the logits of the Bernoulli decoder); w = 0 is the conditional model.
"""

import math
from collections.abc import Sequence
from dataclasses import replace

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.nn import PyroModule
from torch.distributions import constraints, kl_divergence

from ppgen.errors import PpgenError
from ppgen.models.diffusion_parts import Conditioning, DiscretizedNormal, noise_schedule
from ppgen.models.family import GenerativeFamily
from ppgen.nets import SmallUNet, TimeMLP
from ppgen.precision import full_precision
from ppgen.samplers.langevin import init_state, ula_step

__all__ = ["DDPM"]

_SCALAR = torch.Size()
_NEEDS_LABELS = "a label-conditional diffusion model needs labels: call it with (x, y), y a tensor [N] of class indices"
_SAMPLER_KEYS = {  # each sampler's settings in the [sampling] table
    "ancestral": (),
    "pc": ("corrector_steps", "snr"),
    "langevin": ("langevin_steps", "step_size", "noise_levels"),
}


class _ReverseChain(TorchDistribution):
    """p(y_1:T) of the reverse chain (given the labels of ``condition``, [N] for batch shape [..., N]): event shape
    [T, D], trajectory[..., t - 1, :] = y_t."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)

    def __init__(self, ddpm: "DDPM", batch_shape: torch.Size, condition: Conditioning | None = None):
        self.ddpm, self.condition = ddpm, condition
        super().__init__(batch_shape, torch.Size([ddpm.num_steps, ddpm.data_dim]))

    def expand(self, batch_shape, _instance=None):
        return _ReverseChain(self.ddpm, torch.Size(batch_shape), self.condition)

    def log_prob(self, trajectory: torch.Tensor) -> torch.Tensor:
        ddpm, steps = self.ddpm, torch.arange(2, self.ddpm.num_steps + 1, device=trajectory.device)
        y_t, y_prev = trajectory[..., 1:, :], trajectory[..., :-1, :]
        condition = self.condition
        if condition is not None:  # labels [N, 1] against the steps' dimension
            condition = replace(condition, labels=condition.labels.unsqueeze(-1))
        loc, scale = ddpm.reverse_mean(y_t, steps, condition), ddpm.reverse_scale(steps)[:, None]
        log_p = dist.Normal(loc, scale).log_prob(y_prev).sum((-1, -2))
        return log_p + dist.Normal(0.0, 1.0).log_prob(trajectory[..., -1, :]).sum(-1)

    def sample(self, sample_shape=_SCALAR) -> torch.Tensor:
        with torch.no_grad():
            return self.ddpm.ancestral_trajectory(sample_shape + self.batch_shape, self.condition)


class _ForwardChain(TorchDistribution):
    """q(y_1:T | y_0) of the forward process, drawn step by step: event shape [T, D]."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, ddpm: "DDPM", y0: torch.Tensor):
        self.ddpm, self.y0 = ddpm, y0
        super().__init__(y0.shape[:-1], torch.Size([ddpm.num_steps, ddpm.data_dim]))

    def expand(self, batch_shape, _instance=None):
        return _ForwardChain(self.ddpm, self.y0.expand(*batch_shape, self.ddpm.data_dim))

    def rsample(self, sample_shape=_SCALAR) -> torch.Tensor:
        y = self.y0.expand(sample_shape + self.y0.shape)
        noise = torch.randn(sample_shape + self.batch_shape + self.event_shape, dtype=y.dtype, device=y.device)
        steps = []
        for t in range(1, self.ddpm.num_steps + 1):
            y = self.ddpm.alphas[t].sqrt() * y + self.ddpm.betas[t].sqrt() * noise[..., t - 1, :]
            steps.append(y)
        return torch.stack(steps, dim=-2)

    def log_prob(self, trajectory: torch.Tensor) -> torch.Tensor:
        y0 = self.y0.expand(trajectory.shape[:-2] + self.y0.shape[-1:])
        previous = torch.cat([y0.unsqueeze(-2), trajectory[..., :-1, :]], dim=-2)
        alphas, betas = self.ddpm.alphas[1:, None], self.ddpm.betas[1:, None]
        return dist.Normal(alphas.sqrt() * previous, betas.sqrt()).log_prob(trajectory).sum((-1, -2))


class DDPM(GenerativeFamily, PyroModule):
    """Args:
    data_dim: D. event_shape: the shape of one example (the U-Net needs (H, W)).
    num_steps: T. schedule, beta_start, beta_end: see ``noise_schedule``.
    variance: "beta" (sigma_t^2 = beta_t) or "posterior" (sigma_t^2 = betatilde_t) for the reverse steps; Ho et
        al. found them alike for samples, and "beta" forgives an imprecise mean, so its ELBO trains better.
    network: "mlp" (``ppgen.nets.TimeMLP`` with widths ``hidden``) or "unet" (``SmallUNet`` with ``channels``).
    time_dim: size of the time embedding.
    decoder: "discretized_gaussian" (pixels on ``levels`` values in [0, 1]) or "bernoulli" (binary pixels).
    time_subsample: S, the steps drawn per example in each training step; in ``eval()`` mode the training
        program scores every step.
    num_classes: C > 0 for a label-conditional model p(x | y), whose programs take (x, y) and whose network takes
        the label (see the module docstring); 0 for p(x).
    label_dropout: the probability that training replaces a label by the null label (conditional models).
    """

    kind = "ddpm"
    kl_per_site = False  # the chain's T sites are its ELBO's terms, not layers

    def __init__(
        self,
        data_dim: int,
        event_shape: Sequence[int] = (),
        num_steps: int = 1000,
        schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        variance: str = "beta",
        network: str = "mlp",
        hidden: Sequence[int] = (512, 512),
        channels: int = 32,
        time_dim: int = 64,
        activation: str = "silu",
        decoder: str = "discretized_gaussian",
        levels: int = 256,
        time_subsample: int = 1,
        num_classes: int = 0,
        label_dropout: float = 0.1,
    ):
        super().__init__()
        if num_steps < 2:
            raise ValueError("a diffusion chain needs at least 2 steps")
        self.data_dim, self.num_steps, self.levels = data_dim, num_steps, levels
        self.decoder_kind, self.time_subsample = decoder, time_subsample
        self.num_classes, self.label_dropout = num_classes, label_dropout
        if num_classes:
            self.data_keys = ("x", "y")
        self.calls_per_pair = num_steps  # an (example, sample) pair of the chain pair costs T network calls
        betas = torch.cat(
            [torch.zeros(1, dtype=torch.float64), noise_schedule(num_steps, schedule, beta_start, beta_end)]
        )
        alphas = 1 - betas
        alpha_bars = torch.cumprod(alphas, 0)
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
        posterior_variance = betas * (1 - previous) / (1 - alpha_bars).clamp(min=1e-20)
        reverse_variance = posterior_variance if variance == "posterior" else betas
        buffers = {
            "betas": betas,
            "alphas": alphas,
            "alpha_bars": alpha_bars,
            "posterior_variance": posterior_variance,
            "posterior_c0": previous.sqrt() * betas / (1 - alpha_bars).clamp(min=1e-20),
            "posterior_c1": alphas.sqrt() * (1 - previous) / (1 - alpha_bars).clamp(min=1e-20),
            "reverse_variance": reverse_variance,
        }
        for name, value in buffers.items():  # index t = 0..T; entry 0 is the data
            self.register_buffer(name, value.float())
        if network == "unet":
            self.net = SmallUNet(tuple(event_shape), channels, time_dim, num_classes)
        else:
            self.net = TimeMLP(data_dim, hidden, time_dim, activation, num_classes)

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "DDPM":
        """A conditional model (``model.conditional``) takes its classes 0..C-1 from the training ``labels`` [N]."""
        options = spec.model_dump(exclude={"kind", "conditional", "label_dropout"})
        if spec.conditional:
            if labels is None:
                raise PpgenError("model.conditional = true needs labelled data: this data set has no labels")
            options.update(num_classes=int(labels.max()) + 1, label_dropout=spec.label_dropout)
        return cls(math.prod(event_shape), event_shape=event_shape, **options)

    # -- the chain's distributions --------------------------------------------------------------------
    # Their arguments are valid by construction, and checking them (Pyro validates by default) would read a flag
    # back from the device each time, at every step of a sampler: hence validate_args=False.
    def forward_marginal(self, y0: torch.Tensor, t: torch.Tensor) -> dist.Distribution:
        """q(y_t | y_0) with event shape [D]; t broadcasts against y0's batch dimensions."""
        ab = self.alpha_bars[t].unsqueeze(-1)
        return dist.Normal(ab.sqrt() * y0, (1 - ab).sqrt(), validate_args=False).to_event(1)

    def forward_posterior(self, y0: torch.Tensor, y_t: torch.Tensor, t: torch.Tensor) -> dist.Distribution:
        """q(y_t-1 | y_t, y_0) for t >= 2, event shape [D]."""
        c0, c1 = self.posterior_c0[t].unsqueeze(-1), self.posterior_c1[t].unsqueeze(-1)
        scale = self.posterior_variance[t].sqrt().unsqueeze(-1).expand(y_t.shape)
        return dist.Normal(c0 * y0 + c1 * y_t, scale, validate_args=False).to_event(1)

    def _network(self, y: torch.Tensor, t: torch.Tensor, condition: Conditioning | None = None) -> torch.Tensor:
        """The network's output [..., D] at (y, t), in fp32 (bf16 under autocast: the chain's maths stays fp32). A
        conditional model's takes ``condition``: (1 + w) net(y, t, labels) - w net(y, t, null) with w its guidance
        (Ho & Salimans 2021, arXiv:2207.12598), one network call when w = 0."""
        if condition is None:
            if self.num_classes:
                raise PpgenError(_NEEDS_LABELS)
            return full_precision(self.net(y, t))
        conditional = full_precision(self.net(y, t, condition.labels))
        if not condition.guidance:
            return conditional
        unconditional = full_precision(self.net(y, t, torch.full_like(condition.labels, self.num_classes)))
        return (1 + condition.guidance) * conditional - condition.guidance * unconditional

    def noise_prediction(
        self, y_t: torch.Tensor, t: torch.Tensor, condition: Conditioning | None = None
    ) -> torch.Tensor:
        """eps(y_t, t), the network's estimate of the noise in y_t; a conditional model's eps~(y_t, t, y), guided as
        ``condition`` says."""
        return self._network(y_t, t, condition)

    def score(self, y_t: torch.Tensor, t: torch.Tensor, condition: Conditioning | None = None) -> torch.Tensor:
        """grad log q(y_t) ~ -eps(y_t, t) / sqrt(1 - abar_t)."""
        return -self.noise_prediction(y_t, t, condition) / (1 - self.alpha_bars[t]).sqrt().unsqueeze(-1)

    def reverse_mean(self, y_t: torch.Tensor, t: torch.Tensor, condition: Conditioning | None = None) -> torch.Tensor:
        """mu(y_t, t) = (y_t - beta_t / sqrt(1 - abar_t) eps(y_t, t)) / sqrt(alpha_t)."""
        beta, ab, alpha = (buffer[t].unsqueeze(-1) for buffer in (self.betas, self.alpha_bars, self.alphas))
        return (y_t - beta / (1 - ab).sqrt() * self.noise_prediction(y_t, t, condition)) / alpha.sqrt()

    def reverse_scale(self, t: torch.Tensor) -> torch.Tensor:
        return self.reverse_variance[t].sqrt()

    def reverse_step(self, y_t: torch.Tensor, t: torch.Tensor, condition: Conditioning | None = None):
        """p(y_t-1 | y_t) for t >= 2, event shape [D]."""
        loc = self.reverse_mean(y_t, t, condition)
        scale = self.reverse_scale(t).unsqueeze(-1).expand(loc.shape)
        return dist.Normal(loc, scale, validate_args=False).to_event(1)

    def decoder(self, y_1: torch.Tensor, condition: Conditioning | None = None) -> dist.Distribution:
        """p(x | y_1), event shape [D], over pixels in [0, 1]."""
        one = torch.ones(y_1.shape[:-1], dtype=torch.long, device=y_1.device)
        if self.decoder_kind == "bernoulli":  # step 0 of the network is reserved for the decoder's logits
            return dist.Bernoulli(logits=self._network(y_1, one - 1, condition)).to_event(1)
        loc = (self.reverse_mean(y_1, one, condition) + 1) / 2  # mu(y_1, 1), mapped from [-1, 1] to [0, 1]
        scale = (self.betas[1].sqrt() / 2).expand(loc.shape)
        return DiscretizedNormal(loc, scale, self.levels).to_event(1)

    # -- the training pair ------------------------------------------------------------------------------
    def model(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """The ELBO's terms with S sampled steps; see the module docstring. x [N, D] in [0, 1]; a conditional
        model's labels y [N], each dropped in training mode with probability ``label_dropout``."""
        y0 = self._y0(x)
        condition = self._training_condition(y)
        with pyro.plate("data", x.shape[0], dim=-1):
            # ones_like, not 1.0: a Python number becomes a tensor copied to the device at every step
            pyro.sample("y_T", dist.Normal(torch.zeros_like(y0), torch.ones_like(y0)).to_event(1))
            with self._time_plate() as index:
                t = (index + 2).unsqueeze(-1)  # [S, 1]: steps 2..T
                y_t = pyro.sample("y_t", self.forward_marginal(y0, t))
                pyro.sample("y_prev", self.reverse_step(y_t, t, condition))
            y_1 = pyro.sample("y_1", self.forward_marginal(y0, torch.ones((), dtype=torch.long, device=y0.device)))
            pyro.sample("x", self.decoder(y_1, condition), obs=x)

    def guide(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """The forward process q(y_1:T | y_0), the same whatever the label y."""
        y0 = self._y0(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("y_T", self.forward_marginal(y0, torch.full((), self.num_steps, device=y0.device)))
            with self._time_plate() as index:
                t = (index + 2).unsqueeze(-1)
                y_t = pyro.sample("y_t", self.forward_marginal(y0, t))
                pyro.sample("y_prev", self.forward_posterior(y0, y_t, t))
            pyro.sample("y_1", self.forward_marginal(y0, torch.ones((), dtype=torch.long, device=y0.device)))

    def _time_plate(self) -> pyro.plate:
        """Steps 2..T: S of them drawn in training mode, every one in eval mode."""
        size = self.num_steps - 1
        subsample = self.time_subsample if self.training and self.time_subsample < size else None
        return pyro.plate("time", size, subsample_size=subsample, dim=-2, device=self.betas.device)

    def _y0(self, x: torch.Tensor | None) -> torch.Tensor:
        if x is None:
            raise PpgenError("the diffusion model's program conditions on data x; draw new examples with sample(n)")
        return 2 * x - 1

    def _condition(self, y: torch.Tensor | None) -> Conditioning | None:
        """The labels y [N] of a conditional model, checked; None for an unconditional one."""
        if not self.num_classes:
            return None
        if y is None:
            raise PpgenError(_NEEDS_LABELS)
        if y.dtype not in (torch.int64, torch.int32) or y.dim() != 1:
            raise PpgenError(f"{_NEEDS_LABELS}; got {y.dtype} of shape {tuple(y.shape)}")
        return Conditioning(y.long())

    def _training_condition(self, y: torch.Tensor | None) -> Conditioning | None:
        """``_condition``, with each label replaced by the null label C with probability ``label_dropout`` in
        training mode (a fresh draw at every call; Ho & Salimans 2021, arXiv:2207.12598, Algorithm 1)."""
        condition = self._condition(y)
        if condition is None or not (self.training and self.label_dropout):
            return condition
        dropped = dist.Bernoulli(torch.full(y.shape, self.label_dropout, device=y.device)).sample().bool()
        return Conditioning(condition.labels.masked_fill(dropped, self.num_classes))

    # -- the whole-chain pair and the closed-form ELBO --------------------------------------------------
    def chain_model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(y_1:T) p(x | y_1) with one site for the whole trajectory; a conditional model's given its labels y [N]."""
        condition = self._condition(y)
        with pyro.plate("data", x.shape[0]):
            trajectory = pyro.sample("trajectory", _ReverseChain(self, torch.Size([x.shape[0]]), condition))
            pyro.sample("x", self.decoder(trajectory[..., 0, :], condition), obs=x)

    def chain_guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The forward process q(y_1:T | y_0) as the proposal."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("trajectory", _ForwardChain(self, self._y0(x)))

    def evaluation_pair(self) -> tuple:
        """The whole-chain pair: the training pair subsamples steps, and its weights would not estimate log p(x)."""
        return self.chain_model, self.chain_guide

    def analytic_elbo(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``chain_elbo`` over chunks of 256 examples: the same ELBO as the training pair's in eval mode (a
        conditional model's of log p(x | y), with the true labels), far less noise."""
        labels = [None] * len(x.split(256)) if y is None else y.split(256)
        return torch.cat([self.chain_elbo(chunk, chunk_labels) for chunk, chunk_labels in zip(x.split(256), labels)])

    @torch.no_grad()
    def chain_elbo(self, x: torch.Tensor, y: torch.Tensor | None = None, steps_per_call: int = 50) -> torch.Tensor:
        """The ELBO [N] with all T terms: each KL in closed form at one draw of y_t ~ q(y_t | y_0); a conditional
        model's given the labels y [N]."""
        y0, condition = self._y0(x), self._condition(y)
        top = self.forward_marginal(y0, torch.full((), self.num_steps, device=y0.device))
        total = -kl_divergence(top, dist.Normal(torch.zeros_like(y0), torch.ones_like(y0)).to_event(1))
        for first in range(2, self.num_steps + 1, steps_per_call):
            t = torch.arange(first, min(first + steps_per_call, self.num_steps + 1), device=y0.device).unsqueeze(-1)
            y_t = self.forward_marginal(y0, t).sample()
            reverse = self.reverse_step(y_t, t, condition)
            total = total - kl_divergence(self.forward_posterior(y0, y_t, t), reverse).sum(0)
        y_1 = self.forward_marginal(y0, torch.ones((), dtype=torch.long, device=y0.device)).sample()
        return total + self.decoder(y_1, condition).log_prob(x)

    # -- sampling ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def ancestral_trajectory(self, batch_shape: torch.Size, condition: Conditioning | None = None) -> torch.Tensor:
        """[*batch_shape, T, D] draws of y_1..y_T from the reverse chain (a conditional model's as ``condition`` says,
        its labels broadcasting against batch_shape)."""
        y = torch.randn(*batch_shape, self.data_dim, device=self.betas.device)
        steps = [y]
        for step in self._step_tensors(range(self.num_steps, 1, -1)):
            y = self.reverse_step(y, step, condition).sample()
            steps.append(y)
        return torch.stack(steps[::-1], dim=-2)

    def _step_tensors(self, steps: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """Each step as a 0-dim tensor on the model's device, all made by one copy: ``torch.tensor(t, device=...)``
        in a sampler's loop would copy to the device, and wait for it, at every step."""
        return torch.tensor(list(steps), device=self.betas.device).unbind()

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        mean: bool = True,
        sampler: str = "ancestral",
        label: int | None = None,
        guidance: float = 0.0,
        **settings,
    ) -> torch.Tensor:
        """[num_samples, D] examples in [0, 1] by ancestral sampling of the reverse chain ("ancestral"), with
        Langevin corrector steps after every step ("pc"), or by annealed Langevin dynamics ("langevin").

        label, guidance: a conditional model's class for every example (None: the classes in turn, example i of
            class i mod C) and classifier-free guidance weight w (0: the conditional model).
        settings: ``corrector_steps`` and ``snr`` for "pc"; ``langevin_steps``, ``step_size`` and
            ``noise_levels`` for "langevin" (see ``sample_predictor_corrector`` and ``sample_langevin``).
        """
        condition = self._sampling_condition(num_samples, label, guidance)
        if sampler == "ancestral":
            y_1 = self.ancestral_trajectory(torch.Size([num_samples]), condition)[..., 0, :]
        elif sampler == "pc":
            y_1 = self.sample_predictor_corrector(num_samples, **settings, condition=condition)
        elif sampler == "langevin":
            y_1 = self.sample_langevin(num_samples, **settings, condition=condition)
        else:
            raise PpgenError(f"unknown sampler {sampler!r}; expected 'ancestral', 'pc' or 'langevin'")
        likelihood = self.decoder(y_1, condition)
        return likelihood.mean if mean else likelihood.sample()

    def draw(self, num_samples: int, sampling) -> torch.Tensor:
        """[num_samples, D] examples by ``sampling.sampler``, with that sampler's keys of the ``[sampling]`` table
        and, for a conditional model, its ``label`` (None: the classes in turn) and ``guidance``."""
        settings = {key: getattr(sampling, key) for key in _SAMPLER_KEYS[sampling.sampler]}
        return self.sample(
            num_samples, sampler=sampling.sampler, label=sampling.label, guidance=sampling.guidance, **settings
        )

    def _sampling_condition(self, num_samples: int, label: int | None, guidance: float) -> Conditioning | None:
        """The labels [num_samples] and guidance to sample with; None for an unconditional model."""
        if not self.num_classes:
            if label is not None or guidance:
                raise PpgenError(
                    f"sampling.label = {label} and sampling.guidance = {guidance:g} need a label-conditional diffusion"
                    " model (model.conditional = true)"
                )
            return None
        if label is not None and not 0 <= label < self.num_classes:
            raise PpgenError(f"sampling.label = {label}: the model's classes are 0..{self.num_classes - 1}")
        if guidance and not self.label_dropout:
            raise PpgenError(
                f"sampling.guidance = {guidance:g} needs the unconditional prediction, which a model trained with"
                " model.label_dropout = 0 never learned"
            )
        classes = torch.arange(num_samples, device=self.betas.device) % self.num_classes
        return Conditioning(classes if label is None else torch.full_like(classes, label), guidance)

    @torch.no_grad()
    def sample_predictor_corrector(
        self,
        num_samples: int,
        corrector_steps: int = 1,
        snr: float = 0.16,
        condition: Conditioning | None = None,
    ) -> torch.Tensor:
        """y_1 [n, D]: each ancestral step (predictor) followed by Langevin steps on q(y_t) (corrector, ``ula_step``
        on the score) whose step size sets the signal-to-noise ratio ||eps sqrt(2 step) z|| / ||step score|| to
        ``snr`` (Song et al. 2021, arXiv:2011.13456, Algorithm 5); a conditional model's score as ``condition`` says."""
        y = torch.randn(num_samples, self.data_dim, device=self.betas.device)
        steps = range(self.num_steps, 0, -1)

        def score_only(step: torch.Tensor):  # q(y_t) is known only through its score
            return lambda y_t: (None, self.score(y_t, step, condition))

        for t, step in zip(steps, self._step_tensors(steps)):
            state = init_state(y, score_only(step))
            for _ in range(corrector_steps):
                noise = torch.randn_like(y)
                score_norm = state.score.norm(dim=-1, keepdim=True).clamp(min=1e-12)
                ratio = snr * noise.norm(dim=-1, keepdim=True) / score_norm
                state, _ = ula_step(state, score_only(step), 2 * self.alphas[t] * ratio.square(), noise)
            y = state.position
            if t > 1:
                # The ancestral step p(y_t-1 | y_t): its mean mu(y_t, t) = (y_t + beta_t score) / sqrt(alpha_t) from the
                # state's score, which saves the network call of ``reverse_step``.
                loc = (y + self.betas[t] * state.score) / self.alphas[t].sqrt()
                y = loc + self.reverse_scale(step) * torch.randn_like(y)
        return y

    @torch.no_grad()
    def sample_langevin(
        self,
        num_samples: int,
        langevin_steps: int = 5,
        step_size: float = 2e-5,
        noise_levels: int = 100,
        condition: Conditioning | None = None,
    ) -> torch.Tensor:
        """y_1 [n, D] by annealed Langevin dynamics (Song & Ermon 2019, arXiv:1907.05600, Algorithm 1) on the
        marginals q(y_t) of ``noise_levels`` steps from T down to 1, with steps step_size (1 - abar_t) /
        (1 - abar_1) so that the size of the step follows the noise level; each step is a ``ula_step`` on the score
        (a conditional model's as ``condition`` says)."""
        y = torch.randn(num_samples, self.data_dim, device=self.betas.device)
        levels = (
            torch.linspace(self.num_steps, 1, min(noise_levels, self.num_steps)).round().long().unique_consecutive()
        )
        levels = levels.tolist()  # made on the CPU: no device round trip
        steps = self._step_tensors(levels)

        def score_only(step: torch.Tensor):  # q(y_t) is known only through its score
            return lambda y_t: (None, self.score(y_t, step, condition))

        state = init_state(y, score_only(steps[0]))
        for level, (t, step) in enumerate(zip(levels, steps)):
            size = step_size * (1 - self.alpha_bars[t]) / (1 - self.alpha_bars[1])
            for k in range(langevin_steps):
                # A level's last step scores its move under the next level's marginal, where the chain goes on: one
                # network call per step, as with no state carried.
                last = k == langevin_steps - 1 and level + 1 < len(steps)
                target = score_only(steps[level + 1] if last else step)
                state, _ = ula_step(state, target, size, torch.randn_like(state.position))
        return state.position
