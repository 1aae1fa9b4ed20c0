"""A noise-conditional score network (NCSN; Song & Ermon 2019, arXiv:1907.05600) as a family trained by its own
loss: s(x, sigma) estimates grad log p_sigma(x), the score of the data convolved with N(0, sigma^2 I), at noise
levels sigma_1 > ... > sigma_L spaced geometrically from sigma_max to sigma_min.

The levels are those of the variance-exploding SDE (Song et al. 2021, arXiv:2011.13456) at times t in [0, 1],

    sigma(t) = sigma_min (sigma_max / sigma_min)^t,

and the network is conditioned on t, an affine function of log sigma, so that it is defined for every t: the
probability-flow ODE (``ppgen.evaluate.probability_flow``) gives its log-density. The network F is preconditioned
as the denoiser of Karras et al. 2022 (arXiv:2206.00364, Table 1), with sigma_data the data's scale:

    s(x, sigma) = (c_skip x + c_out F(c_in x, t) - x) / sigma^2,
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),  c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2),

so that F sees inputs and has targets of unit scale at every level, and F = 0 is the score of N(0, sigma_data^2 I)
convolved with the noise: without it the network must map inputs of size sigma_max to the noise, and on digits it
failed at the large levels, which the likelihood's integral weighs most.

Objectives, per example with lambda(sigma) = sigma^2 and its level drawn as ``training_levels`` says: t ~ U(0, 1)
(sigma log-uniform on [sigma_min, sigma_max], the continuous objective of Song et al. 2021, whose every t the ODE
visits) or one of the L levels (Song & Ermon 2019):

    dsm: lambda(sigma) 1/2 ||s(x + sigma z, sigma) + z / sigma||^2, z ~ N(0, I)      (Vincent 2011)
    ssm: lambda(sigma) [v^T (ds/dx) v + 1/2 ||s||^2] at x + sigma z, v Rademacher    (Song et al. 2019,
         arXiv:1905.07088, with the variance reduction that takes E[(v^T s)^2] = ||s||^2 in closed form)

Both equal the sigma^2-weighted Fisher divergence between s and the noised data's score up to a constant.
"""

import math
from collections.abc import Sequence

import torch
from pyro.nn import PyroModule

from ppgen.errors import PpgenError
from ppgen.evaluate.bounds import LogLikelihood
from ppgen.evaluate.probability_flow import ESCAPE, probability_flow_log_likelihood
from ppgen.models.family import LossFamily
from ppgen.nets import TimeMLP
from ppgen.precision import full_precision
from ppgen.samplers.langevin import init_state, ula_step

__all__ = ["ScoreModel"]

_SAMPLER_KEYS = {  # each sampler's settings in the [sampling] table
    "pc": ("corrector_steps", "snr"),
    "langevin": ("langevin_steps", "step_size", "noise_levels"),
}
TIME_SCALE = 1000.0
"""t in [0, 1] enters the sinusoidal embedding as 1000 t, the range of a diffusion model's integer steps."""


class ScoreModel(LossFamily, PyroModule):
    """Args:
    data_dim: D.
    hidden, activation, time_dim: the network ``ppgen.nets.TimeMLP`` (x [..., D], 1000 t) -> [..., D].
    sigma_min, sigma_max: the smallest and largest noise levels. sigma_data: the data's scale, for the
        preconditioning. num_levels: L.
    training_levels: "continuous" (t ~ U(0, 1)) or "discrete" (one of the L levels) for each training example.
    objective: "dsm" or "ssm" (see the module docstring). projections: ssm's Rademacher vectors per example.
    probes, exact_trace, ode_rtol, ode_atol: the probability-flow likelihood's (``probability_flow_log_likelihood``).
    """

    kind = "score"
    objective = "dsm_loss"  # "ssm_loss" for an instance trained by sliced score matching
    likelihood = "probability-flow ODE"

    def __init__(
        self,
        data_dim: int,
        hidden: Sequence[int] = (128, 128),
        activation: str = "silu",
        time_dim: int = 64,
        sigma_min: float = 0.01,
        sigma_max: float = 5.0,
        sigma_data: float = 0.5,
        num_levels: int = 50,
        training_levels: str = "continuous",
        objective: str = "dsm",
        projections: int = 1,
        probes: int = 4,
        exact_trace: bool = False,
        ode_rtol: float = 1e-5,
        ode_atol: float = 1e-5,
    ):
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"the noise levels need 0 < sigma_min < sigma_max, not {sigma_min} and {sigma_max}")
        if objective not in ("dsm", "ssm"):
            raise ValueError(f"unknown objective {objective!r}; expected 'dsm' or 'ssm'")
        self.data_dim, self.num_levels, self.projections = data_dim, num_levels, projections
        self.continuous_levels, self.sigma_data = training_levels == "continuous", sigma_data
        self.objective = f"{objective}_loss"
        self.probes, self.exact_trace, self.ode_rtol, self.ode_atol = probes, exact_trace, ode_rtol, ode_atol
        self.log_sigma_min, self.log_sigma_ratio = math.log(sigma_min), math.log(sigma_max / sigma_min)
        self.register_buffer("level_times", torch.linspace(1.0, 0.0, num_levels))  # t of sigma_1 = sigma_max ...
        self.register_buffer("sigmas", self.sigma(self.level_times))  # ... down to sigma_L = sigma_min
        self.net = TimeMLP(data_dim, hidden, time_dim, activation)

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "ScoreModel":
        return cls(math.prod(event_shape), **spec.model_dump(exclude={"kind"}))

    # -- the noise levels and the score ----------------------------------------------------------------
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t, elementwise."""
        return torch.exp(self.log_sigma_min + self.log_sigma_ratio * t)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s(x, sigma(t)) [..., D] for x [..., D] and t [] or [...] (see the module docstring)."""
        sigma = self.sigma(t).unsqueeze(-1)
        total = sigma.square() + self.sigma_data**2
        output = full_precision(self.net(x * total.rsqrt(), TIME_SCALE * t))
        return self.sigma_data * output / (sigma * total.sqrt()) - x / total

    # -- the training loss ---------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """[B] the sigma^2-weighted score-matching loss of each example of x [B, D], at a level drawn for each."""
        if self.continuous_levels:
            t = torch.rand(x.shape[:1], dtype=x.dtype, device=x.device)
            sigma = self.sigma(t).unsqueeze(-1)
        else:
            level = torch.randint(self.num_levels, x.shape[:1], device=x.device)
            t, sigma = self.level_times[level], self.sigmas[level].unsqueeze(-1)
        noise = torch.randn_like(x)
        noisy = x + sigma * noise
        if self.objective == "dsm_loss":
            return 0.5 * (sigma * self.score(noisy, t) + noise).square().sum(-1)
        return sigma.squeeze(-1).square() * self._sliced_score_matching(noisy, t)

    def _sliced_score_matching(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[B] the mean over ``projections`` Rademacher v of v^T (ds/dx) v + 1/2 ||s||^2 at x [B, D]; differentiable
        in the parameters when gradients are on (training)."""
        create_graph = torch.is_grad_enabled()
        copies = (self.projections, *x.shape)
        vectors = torch.randint(0, 2, copies, device=x.device).to(x.dtype) * 2 - 1
        with torch.enable_grad():
            position = x.detach().unsqueeze(0).expand(copies).requires_grad_(True)
            score = self.score(position, t)
            (vector_jacobian,) = torch.autograd.grad(score, position, vectors, create_graph=create_graph)
        trace = (vector_jacobian * vectors).sum(-1)
        return (trace + 0.5 * score.square().sum(-1)).mean(0)

    # -- the density ------------------------------------------------------------------------------------------
    def held_out_log_likelihood(self, x: torch.Tensor, *, num_samples: int, chunk_size: int | None) -> LogLikelihood:
        """log p(x) through the probability-flow ODE from t = 0 (the data convolved with N(0, sigma_min^2 I)) to
        t = 1 under the prior N(0, sigma_max^2 I), with the model's ``probes`` (``num_samples`` is the importance
        samples of other families and does not apply); ``chunk_size`` (example, probe) pairs per solve."""
        probes = self.data_dim if self.exact_trace else self.probes
        examples = len(x) if chunk_size is None else max(1, chunk_size // probes)
        results = [
            probability_flow_log_likelihood(
                self.score,
                self.sigma,
                chunk,
                probes=self.probes,
                exact_trace=self.exact_trace,
                rtol=self.ode_rtol,
                atol=self.ode_atol,
            )
            for chunk in x.split(examples)
        ]
        estimate = torch.cat([result.log_prob for result in results]).detach()
        stderr = torch.cat([result.stderr for result in results]).detach()
        escaped = torch.cat([result.escaped for result in results])
        warning = None
        if escaped.any():
            rows = escaped.nonzero().flatten()[:5].tolist()
            warning = (
                f"the probability-flow trajectories of {int(escaped.sum())} of {len(x)} test examples (rows {rows})"
                f" left the prior (|x_1| > {ESCAPE:g} sigma_max sqrt(D)): the score network extrapolates off the data"
                f" there and their log p ({estimate[escaped].min().item():.3g} at worst) dominates the mean NLL (the"
                f" median NLL is {-estimate.median().item():.4g} nats); train less long or on more data, or compare by"
                " samples"
            )
        return LogLikelihood(estimate, stderr, torch.full_like(estimate, probes), probes, warning=warning)

    # -- sampling ------------------------------------------------------------------------------------------------
    def _score_only(self, t: torch.Tensor):
        """p_sigma(t) as a target known only through its score, for ``ppgen.samplers.langevin``."""
        return lambda x: (None, self.score(x, t))

    @torch.no_grad()
    def sample(self, num_samples: int, sampler: str = "langevin", **settings) -> torch.Tensor:
        """[num_samples, D] examples by annealed Langevin dynamics ("langevin") or the predictor-corrector sampler of
        the VE SDE ("pc"); settings are that sampler's (``sample_langevin``, ``sample_predictor_corrector``)."""
        if sampler == "langevin":
            return self.sample_langevin(num_samples, **settings)
        if sampler == "pc":
            return self.sample_predictor_corrector(num_samples, **settings)
        raise PpgenError(f"unknown sampler {sampler!r}; expected 'langevin' or 'pc'")

    def draw(self, num_samples: int, sampling) -> torch.Tensor:
        """[num_samples, D] examples by ``sampling.sampler``, with that sampler's keys of the ``[sampling]`` table."""
        keys = _SAMPLER_KEYS[sampling.sampler]
        return self.sample(num_samples, sampler=sampling.sampler, **{key: getattr(sampling, key) for key in keys})

    def _prior_draws(self, num_samples: int) -> torch.Tensor:
        """[n, D] draws from N(0, sigma_max^2 I), which approximates p_sigma_max."""
        return self.sigmas[0] * torch.randn(num_samples, self.data_dim, device=self.sigmas.device)

    @torch.no_grad()
    def sample_langevin(
        self, num_samples: int, langevin_steps: int = 5, step_size: float = 2e-5, noise_levels: int = 100
    ) -> torch.Tensor:
        """[n, D] by annealed Langevin dynamics (Song & Ermon 2019, arXiv:1907.05600, Algorithm 1): ``langevin_steps``
        ``ula_step``s on each of min(noise_levels, L) of the levels from sigma_max down to sigma_min, of size
        step_size sigma_i^2 / sigma_L^2 (their alpha_i / 2), then the denoising step x + sigma_L^2 s(x, sigma_L)
        (Tweedie's formula; Jolicoeur-Martineau et al. 2020, arXiv:2009.05475)."""
        levels = torch.linspace(0, self.num_levels - 1, min(noise_levels, self.num_levels)).round().long()
        levels = levels.unique_consecutive().tolist()  # made on the CPU: no device round trip
        times, sigmas = self.level_times[levels], self.sigmas[levels]
        state = init_state(self._prior_draws(num_samples), self._score_only(times[0]))
        for level in range(len(levels)):
            size = step_size * (sigmas[level] / self.sigmas[-1]).square()
            for k in range(langevin_steps):
                # A level's last step scores its move under the next level, where the chain goes on: one network
                # call per step; the very last scores it under sigma_L, for the denoising step.
                last = k == langevin_steps - 1 and level + 1 < len(levels)
                target = self._score_only(times[level + 1] if last else times[level])
                state, _ = ula_step(state, target, size, torch.randn_like(state.position))
        return state.position + sigmas[-1].square() * state.score

    @torch.no_grad()
    def sample_predictor_corrector(self, num_samples: int, corrector_steps: int = 1, snr: float = 0.16) -> torch.Tensor:
        """[n, D] by the predictor-corrector sampler of the VE SDE (Song et al. 2021, arXiv:2011.13456, Algorithm 2)
        over the L levels: at each level sigma_i, ``corrector_steps`` Langevin steps (``ula_step`` on the score) whose
        step size 2 (snr ||z|| / ||s||)^2, with both norms averaged over the batch as in their code (per example,
        a small ||s|| near a mode gives a huge step in low dimensions), sets the signal-to-noise ratio (their
        Algorithm 4), then the reverse
        diffusion step to sigma_i+1: x + (sigma_i^2 - sigma_i+1^2) s + sqrt(sigma_i^2 - sigma_i+1^2) z, with
        sigma_L+1 = 0, so that the last step returns its mean, the denoised sample."""
        state = init_state(self._prior_draws(num_samples), self._score_only(self.level_times[0]))
        for level in range(self.num_levels):
            target = self._score_only(self.level_times[level])
            for _ in range(corrector_steps):
                noise = torch.randn_like(state.position)
                ratio = snr * noise.norm(dim=-1).mean() / state.score.norm(dim=-1).mean().clamp(min=1e-12)
                state, _ = ula_step(state, target, 2 * ratio.square(), noise)
            if level + 1 == self.num_levels:  # the step to sigma = 0 adds no noise: its mean is the sample
                return state.position + self.sigmas[level].square() * state.score
            variance = self.sigmas[level].square() - self.sigmas[level + 1].square()
            # The predictor uses the score the corrector's last step computed at the position, saving a network call.
            position = state.position + variance * state.score + variance.sqrt() * torch.randn_like(state.position)
            state = init_state(position, self._score_only(self.level_times[level + 1]))
