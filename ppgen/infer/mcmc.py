"""Hamiltonian Monte Carlo (NUTS or static HMC) with the NumPyro backend (compiled with JAX, the default for
declarative models) or the Pyro backend (any Pyro model, on the CPU or CUDA); draws come back as numpy
arrays [chain, draw, ...] with per-draw sampler statistics named as ArviZ names them.

NUTS: Hoffman & Gelman 2014, arXiv 1111.4246; HMC: Neal 2011, arXiv 1206.1901.
"""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ppgen.spec.workflow import MCMCSpec

__all__ = ["Draws", "numpyro_kernel", "numpyro_mcmc", "pyro_kernel", "pyro_mcmc", "pyro_init_strategy", "stack_chains"]


@dataclass(frozen=True)
class Draws:
    """Posterior draws and what the sampler says about them.

    posterior: site name -> [chain, draw, ...] constrained values.
    sample_stats: ArviZ names (``diverging``, ``acceptance_rate``, ``step_size``, ``tree_depth``, ``lp``, ...)
        -> [chain, draw].
    seconds: wall time of warmup and sampling.
    """

    posterior: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


def numpyro_mcmc(model: Callable, model_kwargs: Mapping, spec: MCMCSpec, progress: bool = False) -> Draws:
    """Run NumPyro's NUTS or HMC on ``model(**model_kwargs)``."""
    import jax
    from numpyro.infer import MCMC

    mcmc = MCMC(
        numpyro_kernel(model, spec),
        num_warmup=spec.num_warmup,
        num_samples=spec.num_samples,
        num_chains=spec.num_chains,
        chain_method=spec.chain_method,
        progress_bar=progress,
    )
    started = time.perf_counter()
    extra = ("diverging", "accept_prob", "adapt_state.step_size", "num_steps", "potential_energy")
    mcmc.run(jax.random.PRNGKey(spec.seed), extra_fields=extra, **model_kwargs)
    posterior = {name: np.asarray(value) for name, value in mcmc.get_samples(group_by_chain=True).items()}
    seconds = time.perf_counter() - started
    fields = {name: np.asarray(value) for name, value in mcmc.get_extra_fields(group_by_chain=True).items()}
    stats = {
        "diverging": fields["diverging"].astype(bool),
        "acceptance_rate": fields["accept_prob"],
        "step_size": fields["adapt_state.step_size"],
        "n_steps": fields["num_steps"],
        "lp": -fields["potential_energy"],
    }
    if spec.method == "nuts":
        stats["tree_depth"] = np.floor(np.log2(fields["num_steps"])).astype(np.int64) + 1
    return Draws(posterior, stats, seconds)


def numpyro_kernel(model: Callable, spec: MCMCSpec):
    """NumPyro's NUTS or HMC for ``model`` with the settings of an ``[inference]`` table."""
    from numpyro.infer import HMC, NUTS

    settings = dict(
        target_accept_prob=spec.target_accept,
        dense_mass=spec.dense_mass,
        init_strategy=_numpyro_init(spec.init_strategy),
    )
    if spec.method == "nuts":
        return NUTS(model, max_tree_depth=spec.max_tree_depth, **settings)
    # trajectory_length=None, or NumPyro fixes the step size to 2 pi / num_steps instead of adapting it
    return HMC(model, num_steps=spec.num_steps, trajectory_length=None, **settings)


def pyro_kernel(
    model: Callable, spec: MCMCSpec, init_strategy: Callable | None = None, max_plate_nesting: int | None = None
):
    """Pyro's NUTS or HMC for ``model`` with the settings of an ``[inference]`` table (``init_strategy``
    overrides the table's)."""
    from pyro.infer import HMC, NUTS

    settings = dict(
        target_accept_prob=spec.target_accept,
        full_mass=spec.dense_mass,
        init_strategy=init_strategy or pyro_init_strategy(spec.init_strategy),
        max_plate_nesting=max_plate_nesting,
    )
    if spec.method == "nuts":
        return NUTS(model, max_tree_depth=spec.max_tree_depth, **settings)
    return HMC(model, num_steps=spec.num_steps, **settings)


def pyro_mcmc(
    model: Callable,
    model_kwargs: Mapping,
    spec: MCMCSpec,
    kernel: Callable | None = None,
    progress: bool = False,
    init_strategy: Callable | None = None,
    max_plate_nesting: int | None = None,
) -> Draws:
    """Run Pyro's NUTS or HMC (or the MCMCKernel that ``kernel(model)`` builds) on ``model(**model_kwargs)``,
    one chain after another in this process, chain c seeded with ``spec.seed + c``.

    Per-draw statistics come from a hook after every step: a Langevin kernel's ``last_info``, or for HMC the
    step size, with acceptance and divergences from Pyro's diagnostics. ``init_strategy`` (default: the spec's)
    and ``max_plate_nesting`` go to HMC/NUTS; models with improper priors need both, since Pyro cannot trace
    them by sampling.
    """
    import pyro
    from pyro.infer import MCMC

    chains, stats = [], []
    started = time.perf_counter()
    for chain in range(spec.num_chains):
        pyro.set_rng_seed((spec.seed + chain) % 2**32)
        if kernel is not None:
            sampler = kernel(model)
        else:
            sampler = pyro_kernel(model, spec, init_strategy, max_plate_nesting)
        infos: list = []

        def record(kernel, params, stage, index, infos=infos):
            if stage.startswith("Sample"):  # Langevin kernels describe each step; HMC only its step size
                infos.append(getattr(kernel, "last_info", None) or float(getattr(kernel, "step_size", np.nan)))

        mcmc = MCMC(
            sampler,
            num_samples=spec.num_samples,
            warmup_steps=spec.num_warmup,
            disable_progbar=not progress,
            hook_fn=record,
        )
        mcmc.run(**model_kwargs)
        chains.append({name: value.detach().cpu().numpy() for name, value in mcmc.get_samples().items()})
        diagnostics = mcmc.diagnostics() if spec.num_samples >= 4 else {}  # Pyro's R-hat needs 4 draws
        stats.append(_step_stats(infos, diagnostics, spec.num_samples))
    seconds = time.perf_counter() - started
    return Draws(stack_chains(chains), stack_chains(stats), seconds)


def _step_stats(infos: list, diagnostics: dict, num_samples: int) -> dict[str, np.ndarray]:
    """Per-draw statistics of one Pyro chain, from the hook's records and ``MCMC.diagnostics()``."""
    if infos and not isinstance(infos[0], float):  # LangevinInfo tuples
        return {
            "acceptance_rate": np.array([float(info.accept_prob) for info in infos]),
            "step_size": np.array([float(info.step_size) for info in infos]),
            "lp": np.array([float(info.log_density) for info in infos]),
        }
    diverging = np.zeros(num_samples, dtype=bool)
    diverging[np.asarray(diagnostics.get("divergences", {}).get("chain 0", []), dtype=np.int64)] = True
    acceptance = float(diagnostics.get("acceptance rate", {}).get("chain 0", np.nan))
    return {
        "diverging": diverging,
        "acceptance_rate": np.full(num_samples, acceptance),  # Pyro reports the chain's mean only
        "step_size": np.asarray(infos, dtype=np.float64),
    }


def stack_chains(chains: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[{name: [draw, ...]}] per chain -> {name: [chain, draw, ...]}."""
    return {name: np.stack([chain[name] for chain in chains]) for name in chains[0]}


def _numpyro_init(name: str):
    from numpyro.infer import init_to_median, init_to_sample, init_to_uniform

    return {"median": init_to_median, "uniform": init_to_uniform, "sample": init_to_sample}[name]


def pyro_init_strategy(name: str):
    """Pyro's initialization strategy of an ``init_strategy`` key: "median", "uniform" or "sample"."""
    from pyro.infer.autoguide.initialization import init_to_median, init_to_sample, init_to_uniform

    return {"median": init_to_median, "uniform": init_to_uniform, "sample": init_to_sample}[name]
