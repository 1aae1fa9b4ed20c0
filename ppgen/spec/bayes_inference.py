"""The inference side of a declarative Bayesian spec: how to infer (NUTS, HMC, Langevin, SGLD, SVI with an
autoguide or Pathfinder) and what to check afterwards.

The model itself (``[model]``, ``[data]``, ``[plates]``, ``[variables]``) is validated by
``ppgen.spec.bayes``; this module holds the ``[inference]``, ``[guide]`` and ``[evaluation]`` tables, and turns
them into the engines' plain settings (``BayesInferenceSpec.settings()``, ``ppgen.infer.posterior_settings``).
"""

from typing import Annotated, ClassVar, Literal

from pydantic import Discriminator, Field, PositiveFloat, PositiveInt, Tag, model_validator

from ppgen.infer.posterior_settings import (
    AutoguideSettings,
    LangevinSettings,
    MCMCSettings,
    PathfinderSettings,
    SGLDSettings,
    VariationalSettings,
)
from ppgen.spec.tables import Seed, Table

__all__ = [
    "MCMCSpec",
    "LangevinSpec",
    "SGLDSpec",
    "AutoguideSpec",
    "VariationalSpec",
    "PathfinderSpec",
    "PosteriorInferenceSpec",
    "BayesEvaluationSpec",
    "BayesInferenceSpec",
]

Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
InitStrategy = Literal["median", "uniform", "sample"]
Device = Literal["auto", "cpu", "cuda"]
# Pyro-based methods: "parallel" runs each chain in a spawned worker process (seconds to start; the same draws),
# "sequential" one after another here; "auto" is sequential.
PyroChainMethod = Literal["auto", "sequential", "parallel"]


class _InferenceTable(Table):
    """An ``[inference]`` table, which converts into the engine's settings."""

    _settings: ClassVar[type]

    def settings(self, guide: "AutoguideSpec | None" = None):
        """The engine's settings of this table (``guide``: the ``[guide]`` table, read by SVI only)."""
        return self._settings(**self.model_dump())


class MCMCSpec(_InferenceTable):
    """``[inference]`` for Hamiltonian Monte Carlo: NUTS (Hoffman & Gelman 2014, 1111.4246) or static HMC."""

    _settings: ClassVar[type] = MCMCSettings

    method: Literal["nuts", "hmc"] = "nuts"
    backend: Literal["numpyro", "pyro"] = "numpyro"  # pyro runs any Pyro model, on the CPU or CUDA
    num_chains: PositiveInt = 4
    num_warmup: PositiveInt = 1000
    num_samples: PositiveInt = 1000  # per chain
    target_accept_prob: Probability = 0.8
    # The mass matrix warmup adapts: "diag", "dense" (strongly correlated posteriors; d^2 work a leapfrog step), or
    # "auto": dense where the curvature of the posterior at a starting point is so correlated that it
    # pays (numpyro backend; pyro keeps diag).
    mass: Literal["auto", "diag", "dense"] = "auto"
    max_tree_depth: PositiveInt = 10  # nuts
    num_steps: PositiveInt = 16  # hmc: leapfrog steps per trajectory
    # uniform: unconstrained values in (-2, 2), different for each chain; pathfinder (numpyro backend): each chain
    # starts at a distinct draw of multi-path Pathfinder (ppgen.infer.pathfinder), near the posterior's bulk
    init_strategy: InitStrategy | Literal["pathfinder"] = "uniform"
    # How chains run (same draws whichever; see ppgen.infer.mcmc). numpyro: "parallel", one JAX device each
    # (on the CPU ppgen asks JAX for one per core before it starts; an error if JAX started with too few),
    # "vectorized" (one program), "sequential"; "auto": parallel when JAX has a device per chain, else
    # vectorized. pyro: "parallel", one spawned worker process per chain (seconds to start), or "sequential";
    # "auto": sequential.
    chain_method: Literal["auto", "sequential", "vectorized", "parallel"] = "auto"
    seed: Seed = 0
    device: Device = "cpu"  # pyro backend: auto | cpu | cuda (NumPyro runs where JAX does)

    @model_validator(mode="after")
    def _check_chain_method(self):
        if self.backend == "pyro" and self.chain_method == "vectorized":
            raise ValueError(
                "inference.chain_method = 'vectorized' needs inference.backend = 'numpyro'; Pyro runs chains"
                " 'sequential' or 'parallel'"
            )
        if self.backend == "pyro" and self.init_strategy == "pathfinder":
            raise ValueError(
                "inference.init_strategy = 'pathfinder' needs inference.backend = 'numpyro'; Pyro starts chains"
                " 'uniform', 'median' or 'sample'"
            )
        return self


class LangevinSpec(_InferenceTable):
    """``[inference]`` for Langevin kernels: Metropolis-adjusted (MALA) or unadjusted (ULA) Langevin."""

    _settings: ClassVar[type] = LangevinSettings

    method: Literal["mala", "ula"] = "mala"
    num_chains: PositiveInt = 4
    num_warmup: PositiveInt = 1000
    num_samples: PositiveInt = 1000  # per chain
    step_size: PositiveFloat = 0.1  # initial (mala, adapted in warmup) or fixed (ula) step size
    target_accept_prob: Probability = 0.574  # mala: the optimal rate of Roberts & Rosenthal 1998
    adapt_step_size: bool = True
    init_strategy: InitStrategy = "uniform"
    chain_method: PyroChainMethod = "auto"
    seed: Seed = 0
    device: Device = "cpu"  # auto | cpu | cuda


class SGLDSpec(_InferenceTable):
    """``[inference]`` for stochastic-gradient Langevin dynamics (Welling & Teh 2011) on minibatches."""

    _settings: ClassVar[type] = SGLDSettings

    method: Literal["sgld"] = "sgld"
    num_chains: PositiveInt = 1
    num_warmup: PositiveInt = 1000  # burn-in steps, discarded
    num_samples: PositiveInt = 1000  # kept steps per chain
    batch_size: PositiveInt = 100  # examples of the data plate per step (all of them when it has fewer)
    plate: str | None = None  # the plate to minibatch; None: the plate of the observed variables, if they share one
    step_size: PositiveFloat = 1e-4  # a in eps_t = a (b + t)^-gamma
    step_offset: PositiveFloat = 1.0  # b
    step_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.55  # gamma; Welling & Teh take (0.5, 1]
    thin: PositiveInt = 1
    init_strategy: InitStrategy = "median"
    chain_method: PyroChainMethod = "auto"
    seed: Seed = 0
    device: Device = "cpu"  # auto | cpu | cuda


class AutoguideSpec(Table):
    """``[guide]`` of a declarative model: the autoguide family SVI fits (see ppgen.infer.autoguides)."""

    family: Literal["diagonal", "multivariate_normal", "low_rank", "iaf", "affine_coupling", "spline"] = "diagonal"
    rank: PositiveInt | None = None  # low_rank; None lets Pyro pick about sqrt(dimension)
    flows: PositiveInt = 2  # flow families
    hidden: list[PositiveInt] = [32]

    def settings(self) -> AutoguideSettings:
        return AutoguideSettings(family=self.family, rank=self.rank, flows=self.flows, hidden=tuple(self.hidden))


class VariationalSpec(_InferenceTable):
    """``[inference]`` for SVI with an autoguide, then posterior draws from the guide (ADVI when diagonal)."""

    method: Literal["svi"] = "svi"
    num_steps: PositiveInt = 5000
    lr: PositiveFloat = 0.01
    lr_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1  # the learning rate falls geometrically to lr * lr_decay
    num_particles: PositiveInt = 1
    num_samples: PositiveInt = 4000  # draws from the fitted guide
    seed: Seed = 0
    device: Device = "cpu"  # auto | cpu | cuda

    def settings(self, guide: AutoguideSpec | None = None) -> VariationalSettings:
        return VariationalSettings(**self.model_dump(), guide=(guide or AutoguideSpec()).settings())


class PathfinderSpec(_InferenceTable):
    """``[inference]`` for multi-path Pathfinder (Zhang et al. 2022, arXiv 2108.03782): normal approximations along
    L-BFGS paths, importance-resampled; its Pareto k says whether to trust the draws (ppgen.infer.pathfinder)."""

    _settings: ClassVar[type] = PathfinderSettings

    method: Literal["pathfinder"] = "pathfinder"
    num_paths: PositiveInt = 4  # L-BFGS paths, each from a uniform start in (-2, 2) on the unconstrained space
    num_samples: PositiveInt = 1000  # draws kept, importance-resampled from all paths' draws
    draws_per_path: PositiveInt = 1000  # draws from each path's best normal approximation
    num_elbo_draws: PositiveInt = 25  # draws that estimate the ELBO of each approximation along a path
    max_iterations: PositiveInt = 1000  # L-BFGS iterations per path, at most
    history_size: PositiveInt = 5  # L-BFGS correction pairs: the rank of the approximations' covariance update
    seed: Seed = 0


def _method(table) -> str | None:
    """An [inference] table's method; "nuts" when the table leaves it out (None for a value that is no table)."""
    return table.get("method", "nuts") if isinstance(table, dict) else getattr(table, "method", None)


PosteriorInferenceSpec = Annotated[
    Annotated[MCMCSpec, Tag("nuts")]
    | Annotated[MCMCSpec, Tag("hmc")]
    | Annotated[LangevinSpec, Tag("mala")]
    | Annotated[LangevinSpec, Tag("ula")]
    | Annotated[SGLDSpec, Tag("sgld")]
    | Annotated[VariationalSpec, Tag("svi")]
    | Annotated[PathfinderSpec, Tag("pathfinder")],
    Discriminator(_method),
]


class BayesEvaluationSpec(Table):
    """``[evaluation]`` of a Bayesian run: the checks made after inference."""

    statistics: list[str] = ["mean", "sd", "min", "max"]  # posterior predictive test statistics
    loo: bool = True
    plots: bool = True


class BayesInferenceSpec(Table):
    """The inference side of a Bayesian run: ``[inference]``, ``[guide]`` and ``[evaluation]``."""

    inference: PosteriorInferenceSpec = MCMCSpec()
    guide: AutoguideSpec = AutoguideSpec()
    evaluation: BayesEvaluationSpec = BayesEvaluationSpec()

    def settings(self) -> MCMCSettings | LangevinSettings | SGLDSettings | VariationalSettings | PathfinderSettings:
        """The ``[inference]`` method's settings (with the ``[guide]`` for SVI), for ``ppgen.infer.methods``."""
        return self.inference.settings(self.guide)

    @model_validator(mode="after")
    def _check_guide_applies(self):
        if self.inference.method != "svi" and self.guide != AutoguideSpec():
            raise ValueError(f"[guide] applies to inference.method = 'svi', not {self.inference.method!r}")
        return self
