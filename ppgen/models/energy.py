"""An energy-based model p(x) = exp(-E(x)) / Z with an MLP energy, trained by its own loss (a ``LossFamily``):
contrastive divergence with persistent short-run Langevin chains and a replay buffer (Du & Mordatch 2019,
arXiv:1903.08689), or denoising score matching (Vincent 2011, Neural Computation 23(7), 1661-1674). Its held-out
log-likelihood is -E(x) - log Z with log Z by annealed importance sampling (``ppgen.evaluate.ais``).

The energy is an exponential tilt of a Gaussian base N(m, S) fitted to the data: E(x) = f(x) - log N(x; m, S) with f
the network. The Gaussian keeps Z finite for any network whose output grows at most linearly (an MLP with Lipschitz
activations), where exp(-f) alone could put infinite mass far from the data, and it is the start of every chain:
replay-buffer restarts, samples and AIS. m and S are the mean and covariance of the first training batch, shrunk
towards a multiple of I (``fit_base``: S = (1 - SHRINKAGE) S_batch + SHRINKAGE (tr S_batch / D) I, Ledoit & Wolf 2004,
J. Multivariate Anal. 88(2), 365-411), kept as buffers: a batch's covariance alone would be singular, or too narrow
along pixels that happen not to vary in the batch.

Every chain runs in the base's whitened coordinates z = L^-1 (x - m), S = L L^T, where the base is N(0, I): Langevin
preconditioned by the data's covariance, so one step size suits every direction (``step_size`` is in these units).
"""

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from ppgen.evaluate.ais import AISResult, ais, with_score
from ppgen.evaluate.bounds import LogLikelihood
from ppgen.models.family import LossFamily
from ppgen.nets import mlp
from ppgen.samplers.langevin import draw_langevin_noise, init_state, ula_step

__all__ = ["EBM", "SHRINKAGE"]

SHRINKAGE = 0.1  # of the base's covariance towards a multiple of I: positive definite, and wide in every direction
MIN_VARIANCE = 1e-6  # the least average variance of the base (data that do not vary at all)
AIS_STEP_SIZE = 0.1  # the AIS sampler's initial MALA step (whitened units), adapted from there


class EBM(LossFamily, PyroModule):
    """Args:
    data_dim: D. hidden, activation: the energy network f's layers ([..., D] -> [...]).
    objective: "cd" (contrastive divergence) or "dsm" (denoising score matching).
    langevin_steps: cd's unadjusted Langevin steps per negative per training step.
    step_size, noise: each Langevin step is z' = z + h grad log p(z) + noise sqrt(2 h) xi with h = step_size: the
        unadjusted Langevin step (``ppgen.samplers.langevin.ula_step``) on p^(1 / noise^2); noise = 1 samples p,
        noise < 1 a colder p, as short-run chains on images are often run.
    buffer_size: negatives kept in the replay buffer. reinit: probability that a negative restarts from the base.
    alpha: weight of the penalty alpha (f(x+)^2 + f(x-)^2) on the network's energies.
    dsm_sigma: the noise of denoising score matching.
    ais_steps, ais_chains: temperatures and chains of the AIS estimate of log Z.
    sample_steps: Langevin steps from the base per drawn example.
    """

    kind = "ebm"
    objective = "cd_loss"  # "dsm_loss" on an instance trained by score matching
    likelihood = "AIS"

    def __init__(
        self,
        data_dim: int,
        hidden: Sequence[int] = (128, 128),
        activation: str = "silu",
        objective: str = "cd",
        langevin_steps: int = 20,
        step_size: float = 0.01,
        noise: float = 1.0,
        buffer_size: int = 10000,
        reinit: float = 0.05,
        alpha: float = 0.1,
        dsm_sigma: float = 0.1,
        ais_steps: int = 500,
        ais_chains: int = 1000,
        sample_steps: int = 200,
    ):
        super().__init__()
        if objective not in ("cd", "dsm"):
            raise ValueError(f"objective must be 'cd' or 'dsm', got {objective!r}")
        self.data_dim = data_dim
        self.network = mlp(data_dim, hidden, 1, activation)
        self.objective = f"{objective}_loss"
        self.validates = objective == "dsm"  # a CD loss on held-out data does not rank epochs: its negatives move
        self.langevin_steps, self.step_size, self.noise = langevin_steps, step_size, noise
        self.reinit, self.alpha, self.dsm_sigma = reinit, alpha, dsm_sigma
        self.ais_steps, self.ais_chains, self.sample_steps = ais_steps, ais_chains, sample_steps
        self.register_buffer("base_loc", torch.zeros(data_dim))
        self.register_buffer("base_scale_tril", torch.eye(data_dim))
        self.register_buffer("base_fitted", torch.tensor(False))
        self.register_buffer("replay", torch.randn(buffer_size, data_dim))  # refilled from the fitted base

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "EBM":
        return cls(math.prod(event_shape), **spec.model_dump(exclude={"kind"}))

    def base(self) -> dist.MultivariateNormal:
        """N(m, S), with event shape [D]."""
        return dist.MultivariateNormal(self.base_loc, scale_tril=self.base_scale_tril)

    @torch.no_grad()
    def fit_base(self, x: torch.Tensor) -> None:
        """Fit the base to examples x [N, D] (their mean and shrunk covariance) and fill the replay buffer from it."""
        centred = x - x.mean(0)
        covariance = centred.T @ centred / max(len(x) - 1, 1)
        identity = torch.eye(len(covariance), dtype=x.dtype, device=x.device)
        average_variance = covariance.diag().mean().clamp(min=MIN_VARIANCE)
        covariance = (1 - SHRINKAGE) * covariance + SHRINKAGE * average_variance * identity
        self.base_loc.copy_(x.mean(0))
        self.base_scale_tril.copy_(torch.linalg.cholesky(covariance))
        self.base_fitted.fill_(True)
        self.replay.copy_(self.base().sample((len(self.replay),)))

    def network_energy(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) [...] for x [..., D]."""
        return self.network(x).squeeze(-1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = f(x) - log N(x; m, S) [...] for x [..., D]."""
        return self.network_energy(x) - self.base().log_prob(x)

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        """z = L^-1 (x - m) [N, D] for x [N, D]."""
        return torch.linalg.solve_triangular(self.base_scale_tril, (x - self.base_loc).T, upper=False).T

    def unwhiten(self, z: torch.Tensor) -> torch.Tensor:
        """x = m + L z [..., D] for z [..., D]."""
        return self.base_loc + z @ self.base_scale_tril.T

    def whitened_log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) - f(m + L z) [...]: the density of z = L^-1 (x - m) under p, times Z (the Jacobian |L|
        cancels against the base's), so it has the same normalizer Z as exp(-E)."""
        standard = dist.Normal(0.0, 1.0, validate_args=False)  # a check per Langevin step costs more than the step
        return standard.log_prob(z).sum(-1) - self.network_energy(self.unwhiten(z))

    def langevin(self, x: torch.Tensor, num_steps: int) -> torch.Tensor:
        """x [N, D] after num_steps unadjusted Langevin steps (see the class's ``step_size`` and ``noise``), detached:
        nothing backpropagates through the chain."""
        temperature = self.noise**2
        score_fn = with_score(lambda z: self.whitened_log_density(z) / temperature)

        def score_only(z: torch.Tensor) -> tuple[None, torch.Tensor]:  # ULA needs no log density
            return None, score_fn(z)[1]

        state = init_state(self.whiten(x.detach()), score_only)
        for _ in range(num_steps):
            (noise,) = draw_langevin_noise(state.position)
            state, _ = ula_step(state, score_only, self.step_size * temperature, noise)
        return self.unwhiten(state.position).detach()

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """[B] the training loss of each example x [B, D]; the first batch seen in training fits the base."""
        if self.training and not self.base_fitted:
            self.fit_base(x)
        return self.contrastive_divergence(x) if self.objective == "cd_loss" else self.denoising_score_matching(x)

    def contrastive_divergence(self, x: torch.Tensor) -> torch.Tensor:
        """[B] E(x+) - E(x-) + alpha (f(x+)^2 + f(x-)^2), a negative x- per example x+ [B, D] (Du & Mordatch 2019).

        The negatives are replay-buffer entries, each restarted from the base with probability ``reinit``, after
        ``langevin_steps`` Langevin steps; in training they are written back. The penalty is on the network's part
        f of the energy, so that the fixed Gaussian part is not pulled towards 0."""
        index = torch.randint(len(self.replay), (len(x),), device=x.device)
        restart = torch.rand(len(x), 1, device=x.device) < self.reinit
        negatives = torch.where(restart, self.base().sample((len(x),)), self.replay[index])
        negatives = self.langevin(negatives, self.langevin_steps)
        if self.training:
            self.replay[index] = negatives
        positive, negative = self.network_energy(x), self.network_energy(negatives)
        base = self.base()
        contrast = positive - base.log_prob(x) - negative + base.log_prob(negatives)
        return contrast + self.alpha * (positive.square() + negative.square())

    def denoising_score_matching(self, x: torch.Tensor) -> torch.Tensor:
        """[B] sigma^2 / 2 |s(x~) + (x~ - x) / sigma^2|^2 with x~ = x + sigma eps and s = -grad E (Vincent 2011):
        the score of p fitted to that of the data smoothed by N(0, sigma^2 I). Under ``torch.no_grad`` (validation)
        the score is still computed, without a graph for the parameters."""
        sigma = self.dsm_sigma
        eps = torch.randn_like(x)
        trains = torch.is_grad_enabled() and self.training
        with torch.enable_grad():
            noisy = (x + sigma * eps).requires_grad_(True)
            (score,) = torch.autograd.grad(-self.energy(noisy).sum(), noisy, create_graph=trains)
        return 0.5 * (sigma * score + eps).square().sum(-1)

    def log_normalizer(self) -> AISResult:
        """log Z of exp(-E) by AIS from the base in whitened coordinates ."""
        standard = dist.Normal(torch.zeros_like(self.base_loc), 1.0).to_event(1)
        return ais(
            self.whitened_log_density,
            standard,
            num_steps=self.ais_steps,
            num_chains=self.ais_chains,
            step_size=AIS_STEP_SIZE,
        )

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """-E(x) - log Z [N] for x [N, D], with an AIS estimate of log Z (a fresh one at each call)."""
        return -self.energy(x) - self.log_normalizer().log_z

    def held_out_log_likelihood(self, x: torch.Tensor, *, num_samples: int, chunk_size: int | None) -> LogLikelihood:
        """-E(x) - log Z per example x [N, D], log Z by AIS with ``ais_chains`` chains (not ``num_samples``); every
        example shares the error of log Z, its ``shared_stderr``."""
        result = self.log_normalizer()
        with torch.no_grad():
            estimate = -self.energy(x) - result.log_z
        return LogLikelihood(
            estimate,
            result.stderr.expand_as(estimate),
            result.effective_sample_size.expand_as(estimate),
            self.ais_chains,
            shared_stderr=result.stderr.item(),
        )

    def sample(self, num_samples: int) -> torch.Tensor:
        """[num_samples, D] by ``sample_steps`` Langevin steps from the base."""
        with torch.no_grad():
            start = self.base().sample((num_samples,))
        return self.langevin(start, self.sample_steps)

    def draw(self, num_samples: int, sampling) -> torch.Tensor:
        """[num_samples, D] by Langevin (the only sampler; its steps are the model's ``sample_steps``)."""
        return self.sample(num_samples)
