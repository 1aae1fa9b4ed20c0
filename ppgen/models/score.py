"""A noise-conditional score network (NCSN; Song & Ermon 2019, arXiv:1907.05600) as a family trained by its own
loss: s(x, sigma) estimates grad log p_sigma(x), the score of the data convolved with N(0, sigma^2 I), at noise
levels sigma_1 > ... > sigma_L spaced geometrically from sigma_max to sigma_min.

The levels are those of the variance-exploding SDE (Song et al. 2021, arXiv:2011.13456) at times t in [0, 1],

    sigma(t) = sigma_min (sigma_max / sigma_min)^t,

and the network is conditioned on t, an affine function of log sigma, so that it is defined for every t: the
probability-flow ODE (``ppgen.evaluate.probability_flow``) gives its log-density. The network F is preconditioned
as the denoiser D of Karras et al. 2022 (arXiv:2206.00364, Table 1), per dimension i, with mu_i and sigma_i the
data's mean and standard deviation in that dimension:

    s(x, sigma) = (D(x) - x) / sigma^2,  D(x) = mu + c_skip (x - mu) + c_out F(c_in (x - mu), t),
    c_skip = sigma_i^2 / (sigma^2 + sigma_i^2),  c_out = sigma sigma_i / sqrt(sigma^2 + sigma_i^2),
    c_in = 1 / sqrt(sigma^2 + sigma_i^2),

so that F sees inputs and has targets of unit scale at every level, and F = 0 is the exact score of the data's
diagonal Gaussian N(mu, diag(sigma_i^2)) convolved with the noise. Karras et al. use one sigma_data for all
dimensions, about a zero mean; on images whose border pixels are (almost) constant that baseline is wrong there by
orders of magnitude (digits: sigma_data 0.5 against a pixel's 0.017), F must cancel its skip term to output the
constant, and where it fails, off the training data, the learned denoiser's Jacobian dD/dx, which is the posterior
covariance over sigma^2 and so positive semi-definite for the exact score, gets negative eigenvalues: the
probability-flow ODE, whose drift (d ln sigma / dt) (x - D(x)) then expands faster than sigma itself, diverged on
some test digits after a minute's training. mu and sigma_i are estimated from the whole training split before
training (``fit_to_data``, as ``ppgen run`` calls it), else from the first training batch, unless ``sigma_data``
fixes one scale for all dimensions.

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
from ppgen.infer import distributed
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
EVALUATION_SEED = 190705600
"""The seed of the loss's noise in eval mode (``ScoreModel._draws``): arbitrary, but not a small integer, whose
normal draws would repeat those of data made with the same seed (a test's Gaussian data with seed 0 gave noise equal
to the data's own and a loss 30% low)."""


class ScoreModel(LossFamily, PyroModule):
    """Args:
    data_dim: D.
    hidden, activation, time_dim: the network ``ppgen.nets.TimeMLP`` (x [..., D], 1000 t) -> [..., D].
    sigma_min, sigma_max: the smallest and largest noise levels. num_levels: L.
    sigma_data: the preconditioning's data scale: None estimates each dimension's mean and standard deviation from
        the training split or first batch (``fit_data_statistics``; until then 0 and 1); a number is every
        dimension's scale, about a zero mean (Karras et al.'s single sigma_data).
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
        sigma_data: float | None = None,
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
        self.continuous_levels = training_levels == "continuous"
        self.objective = f"{objective}_loss"
        self.probes, self.exact_trace, self.ode_rtol, self.ode_atol = probes, exact_trace, ode_rtol, ode_atol
        self.log_sigma_min, self.log_sigma_ratio = math.log(sigma_min), math.log(sigma_max / sigma_min)
        self.register_buffer("level_times", torch.linspace(1.0, 0.0, num_levels))  # t of sigma_1 = sigma_max ...
        self.register_buffer("sigmas", self.sigma(self.level_times))  # ... down to sigma_L = sigma_min
        self.net = TimeMLP(data_dim, hidden, time_dim, activation)
        self.register_buffer("data_mean", torch.zeros(data_dim))
        self.register_buffer("data_scale", torch.full((data_dim,), 1.0 if sigma_data is None else sigma_data))
        self.register_buffer("data_fitted", torch.tensor(sigma_data is not None))  # in the state dict
        self._checked_data_fitted = False  # the buffer is read once, not on every step

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "ScoreModel":
        return cls(math.prod(event_shape), **spec.model_dump(exclude={"kind"}))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A state dict saved before the data statistics were buffers had one fixed ``sigma_data``, its spec's,
        from which this model was built: it loads with this model's statistics (as ``torch.nn.BatchNorm`` fills in
        an old state dict's missing num_batches_tracked)."""
        if self.data_fitted and prefix + "data_fitted" not in state_dict:
            for name in ("data_mean", "data_scale", "data_fitted"):
                state_dict[prefix + name] = getattr(self, name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- the noise levels and the score ----------------------------------------------------------------
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t, elementwise."""
        return torch.exp(self.log_sigma_min + self.log_sigma_ratio * t)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s(x, sigma(t)) [..., D] for x [..., D] and t [] or [...] (see the module docstring)."""
        sigma = self.sigma(t).unsqueeze(-1)
        total = sigma.square() + self.data_scale.square()  # [..., D]
        centred = x - self.data_mean
        output = full_precision(self.net(centred * total.rsqrt(), TIME_SCALE * t))
        return self.data_scale * output / (sigma * total.sqrt()) - centred / total

    def fit_to_data(self, x: torch.Tensor) -> None:
        """The preconditioning's statistics from the whole training split x [N, D] (unless fixed by ``sigma_data``):
        a first batch of 64 digits under-states rarely inked pixels' scales threefold."""
        if not self.data_fitted:
            self.fit_data_statistics(x.to(self.data_mean.device, self.data_mean.dtype))

    @torch.no_grad()
    def fit_data_statistics(self, x: torch.Tensor) -> None:
        """The preconditioning's mean and scale (the sample standard deviation) of each dimension from the examples
        x [B, D], pooled over the processes under torchrun, each of which holds a shard of the batch, so that all
        precondition alike; a constant dimension gets scale 0, whose exact score -(x - mu) / sigma^2 the
        preconditioning then is."""
        moments = torch.cat([x.new_tensor([len(x)]), x.sum(0), x.square().sum(0)]).double()
        count, total, squares = distributed.all_reduce_sum(moments).split([1, self.data_dim, self.data_dim])
        mean = total / count
        variance = (squares - count * mean.square()) / (count - 1).clamp(min=1)
        self.data_mean.copy_(mean)
        self.data_scale.copy_(variance.clamp(min=0).sqrt())
        self.data_fitted.fill_(True)

    # -- the training loss ---------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """[B] the sigma^2-weighted score-matching loss of each example of x [B, D], at a level drawn for each (see
        ``_draws``); the first training batch also sets the preconditioning's data statistics (unless fixed or
        loaded)."""
        if self.training and not self._checked_data_fitted:
            if not self.data_fitted:
                self.fit_data_statistics(x)
            self._checked_data_fitted = True
        u, noise, generator = self._draws(x)
        if self.continuous_levels:
            t, sigma = u, self.sigma(u).unsqueeze(-1)
        else:
            level = (u * self.num_levels).long().clamp(max=self.num_levels - 1)
            t, sigma = self.level_times[level], self.sigmas[level].unsqueeze(-1)
        noisy = x + sigma * noise
        if self.objective == "dsm_loss":
            return 0.5 * (sigma * self.score(noisy, t) + noise).square().sum(-1)
        return sigma.squeeze(-1).square() * self._sliced_score_matching(noisy, t, generator)

    def _draws(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Generator | None]:
        """u [B] in (0, 1), which sets each example's level (t = u, or level floor(u L)), the noise z [B, D], and the
        generator of any further draws. In training all are random. In eval mode u is stratified, u_i = (i + 1/2) / B,
        and z comes from a generator seeded afresh with ``EVALUATION_SEED``: the same draws at every call (common
        random numbers), so that validation losses of successive epochs differ by the parameters alone. With fresh
        draws they also differed by a Monte-Carlo noise of about 10 / sqrt(N) (per-example losses of standard
        deviation ~10 on digits), and ``keep_best`` chose the epoch of the luckiest draw: a best validation loss of
        7.0 for parameters whose loss was 10.2."""
        if self.training:
            return torch.rand(len(x), dtype=x.dtype, device=x.device), torch.randn_like(x), None
        generator = torch.Generator(x.device).manual_seed(EVALUATION_SEED)
        u = (torch.arange(len(x), dtype=x.dtype, device=x.device) + 0.5) / len(x)
        return u, torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device), generator

    def _sliced_score_matching(
        self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """[B] the mean over ``projections`` Rademacher v (drawn with ``generator``) of v^T (ds/dx) v + 1/2 ||s||^2 at
        x [B, D]; differentiable in the parameters when gradients are on (training)."""
        create_graph = torch.is_grad_enabled()
        copies = (self.projections, *x.shape)
        vectors = torch.randint(0, 2, copies, generator=generator, device=x.device).to(x.dtype) * 2 - 1
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
                f" left the prior (|x_1| > {ESCAPE:g} sigma_max sqrt(D)): the learned denoiser expands there, as an"
                f" exact one cannot, and their log p ({estimate[escaped].min().item():.3g} at worst) dominates the"
                f" mean NLL (the median NLL is {-estimate.median().item():.4g} nats); compare by the median or by"
                " samples, and leave model.sigma_data unset (each dimension's own scale)"
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
