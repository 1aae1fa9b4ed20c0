"""Settings of the posterior inference methods (``ppgen.infer.methods``), as plain frozen dataclasses.

The engines take these, not the TOML layer's tables: ``ppgen.spec.bayes_inference`` validates ``[inference]`` and
``[guide]`` and converts them (``.settings()``). Defaults are those of the spec tables. Change a field with
``dataclasses.replace(settings, seed=1)``.
"""

from dataclasses import dataclass, field

__all__ = [
    "MCMCSettings",
    "LangevinSettings",
    "SGLDSettings",
    "AutoguideSettings",
    "VariationalSettings",
    "PathfinderSettings",
]


@dataclass(frozen=True)
class MCMCSettings:
    """Hamiltonian Monte Carlo: NUTS (Hoffman & Gelman 2014, arXiv 1111.4246) or static HMC (Neal 2011, arXiv
    1206.1901), compiled with NumPyro/JAX (``backend = "numpyro"``) or run by Pyro (any Pyro model, CPU or CUDA).

    chain_method: "auto", "sequential", "vectorized" (NumPyro only) or "parallel"; see ``ppgen.infer.methods``.
    mass: the mass matrix warmup adapts: "diag", "dense" or "auto" (NumPyro: dense where the posterior's curvature
    says it pays, ``ppgen.infer.numpyro_sampler.prefers_dense``; Pyro: diag).
    init_strategy: "median", "uniform" (unconstrained values in (-2, 2)), "sample" or "pathfinder" (NumPyro: each
    chain starts at a distinct draw of multi-path Pathfinder, ``ppgen.infer.pathfinder``).
    device: where the Pyro backend computes ("auto", "cpu", "cuda"); NumPyro runs where JAX does.
    """

    method: str = "nuts"  # "nuts" | "hmc"
    backend: str = "numpyro"  # "numpyro" | "pyro"
    num_chains: int = 4
    num_warmup: int = 1000
    num_samples: int = 1000  # per chain
    target_accept_prob: float = 0.8
    mass: str = "auto"  # "auto" | "diag" | "dense"
    max_tree_depth: int = 10  # nuts
    num_steps: int = 16  # hmc: leapfrog steps per trajectory
    init_strategy: str = "uniform"
    chain_method: str = "auto"
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class LangevinSettings:
    """Metropolis-adjusted (MALA) or unadjusted (ULA) Langevin; Roberts & Tweedie 1996.

    step_size: the initial (MALA, adapted in warmup when ``adapt_step_size``) or fixed (ULA) step size.
    target_accept_prob: MALA's acceptance rate to adapt to (0.574: Roberts & Rosenthal 1998).
    chain_method: "auto" (sequential), "sequential" or "parallel" (a spawned worker process per chain).
    """

    method: str = "mala"  # "mala" | "ula"
    num_chains: int = 4
    num_warmup: int = 1000
    num_samples: int = 1000  # per chain
    step_size: float = 0.1
    target_accept_prob: float = 0.574
    adapt_step_size: bool = True
    init_strategy: str = "uniform"
    chain_method: str = "auto"
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class SGLDSettings:
    """Stochastic-gradient Langevin dynamics on minibatches of one plate (Welling & Teh 2011), with step sizes
    eps_t = step_size * (step_offset + t) ** -step_decay.

    plate: the plate to minibatch (None: the plate of the observed variables, if they share one).
    batch_size: examples of that plate per step (all of them when it has fewer).
    thin: keep every thin-th draw.
    """

    method: str = "sgld"
    num_chains: int = 1
    num_warmup: int = 1000  # burn-in steps, discarded
    num_samples: int = 1000  # kept steps per chain
    batch_size: int = 100
    plate: str | None = None
    step_size: float = 1e-4
    step_offset: float = 1.0
    step_decay: float = 0.55
    thin: int = 1
    init_strategy: str = "median"
    chain_method: str = "auto"
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class AutoguideSettings:
    """The autoguide family SVI fits (see ``ppgen.infer.autoguides``).

    family: "diagonal", "multivariate_normal", "low_rank", "iaf", "affine_coupling" or "spline".
    rank: low_rank's rank (None lets Pyro pick about sqrt(dimension)).
    flows, hidden: flow families' number of layers and the hidden widths of each layer's network.
    """

    family: str = "diagonal"
    rank: int | None = None
    flows: int = 2
    hidden: tuple[int, ...] = (32,)


@dataclass(frozen=True)
class VariationalSettings:
    """SVI with an autoguide (ADVI when diagonal; Kucukelbir et al. 2017, arXiv 1603.00788), then ``num_samples``
    draws from the fitted guide. The learning rate falls geometrically from lr to lr * lr_decay."""

    method: str = "svi"
    num_steps: int = 5000
    lr: float = 0.01
    lr_decay: float = 0.1
    num_particles: int = 1
    num_samples: int = 4000
    seed: int = 0
    device: str = "cpu"
    guide: AutoguideSettings = field(default_factory=AutoguideSettings)


@dataclass(frozen=True)
class PathfinderSettings:
    """Multi-path Pathfinder (Zhang et al. 2022, arXiv 2108.03782) by blackjax, with Stan's defaults: ``num_paths``
    L-BFGS paths of at most ``max_iterations`` iterations (``history_size`` correction pairs), each from a uniform
    start in (-2, 2) on the unconstrained space; each path's normal approximation of highest ELBO (estimated from
    ``num_elbo_draws`` draws) gives ``draws_per_path`` draws, which PSIS importance resampling turns into
    ``num_samples``. See ``ppgen.infer.pathfinder``."""

    method: str = "pathfinder"
    num_paths: int = 4
    num_samples: int = 1000
    draws_per_path: int = 1000
    num_elbo_draws: int = 25
    max_iterations: int = 1000
    history_size: int = 5
    seed: int = 0
