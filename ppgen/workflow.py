"""One Bayesian workflow run from a declarative spec: compile -> infer -> results -> checks -> run folder.

Every inference method hands back draws [chain, draw, ...] of the latent variables; one result path then
adds the deterministic variables, the posterior predictive and the pointwise log-likelihood (from the
NumPyro compilation of the same spec, vectorized over draws), builds the ArviZ results, and checks them.

A run folder holds ``spec.toml`` (the model and inference tables as run), ``posterior.nc`` (ArviZ
results), ``summary.txt``, ``metrics.json`` and PNG plots (trace/rank, posterior predictive, Pareto k).
"""

import functools
import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tomli_w

from ppgen.device import resolve_device
from ppgen.errors import PpgenError, SpecError
from ppgen.evaluate import checks, inference_data
from ppgen.files import write_text_atomic
from ppgen.infer.mcmc import Draws, numpyro_chain_method, numpyro_mcmc, pyro_init_strategy, pyro_mcmc
from ppgen.models.bayes import BayesModel, bayes_model_from_tables, is_bayes_spec, pyro_init_to_uniform
from ppgen.spec.load import read_tree, validate_tree
from ppgen.spec.subsample import likelihood_plate
from ppgen.spec.workflow import WorkflowSpec

__all__ = ["load_workflow", "infer", "results_of", "run_workflow", "compare_runs", "is_bayes_spec_file"]

MODEL_TABLES = ("model", "data", "plates", "variables")
WORKFLOW_TABLES = ("inference", "guide", "evaluation")
SPEC_FILE, RESULTS_FILE, SUMMARY_FILE, METRICS_FILE = "spec.toml", "posterior.nc", "summary.txt", "metrics.json"


def is_bayes_spec_file(path: str | Path) -> bool:
    """Whether a spec file is a declarative Bayesian model (it has a ``[variables]`` table)."""
    tree, _ = read_tree(path)
    return is_bayes_spec(tree)


def load_workflow(
    path: str | Path, *, inference: str | Path | None = None, overrides: Iterable[str] = ()
) -> tuple[BayesModel, WorkflowSpec, dict]:
    """The compiled model, the inference settings and the tables as resolved (for ``spec.toml``)."""
    tree, sources = read_tree(path, inference=inference, overrides=overrides, inference_tables=WORKFLOW_TABLES)
    unknown = [table for table in tree if table not in MODEL_TABLES + WORKFLOW_TABLES]
    if unknown:
        raise SpecError(f"{sources.get(unknown[0], path)}: [{unknown[0]}] is not a table of a declarative model spec")
    model = bayes_model_from_tables(
        {t: tree[t] for t in MODEL_TABLES if t in tree}, base_dir=Path(path).parent, source=str(path)
    )
    workflow = validate_tree(WorkflowSpec, {t: tree[t] for t in WORKFLOW_TABLES if t in tree}, sources, str(path))
    return model, workflow, tree


def infer(model: BayesModel, workflow: WorkflowSpec, data: dict | None = None, progress: bool = False) -> Draws:
    """Posterior draws of the latent variables by the ``[inference]`` method, given ``data`` (default the
    model's own data; numpy arrays, e.g. simulated ones for calibration)."""
    spec = workflow.inference
    if spec.method in ("nuts", "hmc") and spec.backend == "numpyro":
        # JAX grants devices for parallel chains only before its first computation (here, converting the data).
        spec = spec.model_copy(update={"chain_method": numpyro_chain_method(spec)})
        with _float64():
            return numpyro_mcmc(model.numpyro_model, {"data": _jax(model, data)}, spec, progress=progress)
    if spec.method == "svi":
        from ppgen.infer.autoguides import fit_autoguide

        return fit_autoguide(
            model.pyro_model, {"data": _torch(model, data, spec.device)}, spec, workflow.guide, progress
        )[0]
    # Pyro's uniform start, which also starts improper priors, on the device the model computes on.
    init = pyro_init_to_uniform(device=resolve_device(spec.device)) if spec.init_strategy == "uniform" else None
    settings = dict(init_strategy=init, max_plate_nesting=model.max_plate_nesting)
    kernel = None
    if spec.method in ("mala", "ula", "sgld"):
        settings["init_strategy"] = init or pyro_init_strategy(spec.init_strategy)
        kernel = functools.partial(_langevin_kernel, spec, settings)
    pyro_model = model.pyro_model
    if spec.method == "sgld":  # minibatches of one plate, drawn afresh at every step
        subsample = {spec.plate or likelihood_plate(model.spec): spec.batch_size}
        model.subsample_plans(subsample)  # a plate that cannot be minibatched is named before sampling starts
        pyro_model = functools.partial(model.pyro_model, subsample=subsample)
    draws = pyro_mcmc(
        pyro_model, {"data": _torch(model, data, spec.device)}, spec, kernel=kernel, progress=progress, **settings
    )
    thin = getattr(spec, "thin", 1)
    if thin > 1:
        draws = Draws(
            {k: v[:, ::thin] for k, v in draws.posterior.items()},
            {k: v[:, ::thin] for k, v in draws.sample_stats.items()},
            draws.seconds,
        )
    return draws


def _langevin_kernel(spec, settings: dict, model):
    """The Langevin MCMCKernel an ``[inference]`` table names, for ``model``."""
    from ppgen.infer.langevin_kernels import MALA, SGLD, ULA, PolynomialDecay

    if spec.method == "mala":
        return MALA(
            model,
            step_size=spec.step_size,
            adapt_step_size=spec.adapt_step_size,
            target_accept_prob=spec.target_accept,
            **settings,
        )
    if spec.method == "ula":
        return ULA(model, step_size=spec.step_size, **settings)
    schedule = PolynomialDecay(spec.step_size, spec.step_offset, spec.step_decay)
    return SGLD(model, step_size=schedule, init_strategy=settings["init_strategy"])


def results_of(model: BayesModel, draws: Draws, data: dict | None = None, seed: int = 0):
    """ArviZ results from latent draws: posterior (latent and deterministic variables), sample_stats,
    observed_data, posterior_predictive and pointwise log_likelihood of every observed variable."""
    import jax
    from numpyro.infer import Predictive, log_likelihood

    latent = {name: draws.posterior[name] for name in model.latent_names}
    chains, num_draws = next(iter(latent.values())).shape[:2]
    flat = {name: value.reshape(chains * num_draws, *value.shape[2:]) for name, value in latent.items()}
    with _float64():
        given = _jax(model, data)
        observed_keys = set(model.spec.observed_data_keys)
        unobserved = {key: value for key, value in given.items() if key not in observed_keys}
        predictive = Predictive(model.numpyro_model, posterior_samples=flat)(jax.random.PRNGKey(seed), data=unobserved)
        pointwise = log_likelihood(model.numpyro_model, flat, data=given)  # also has prior terms (factor_names)
        observed = dict(model.observed_values)
        observed.update({name: np.asarray(given[key]) for name, key in model.observed.items() if key in given})

    def per_chain(values: dict) -> dict[str, np.ndarray]:
        return {k: np.asarray(v).reshape(chains, num_draws, *np.shape(v)[1:]) for k, v in values.items()}

    deterministic = per_chain({k: predictive[k] for k in model.deterministic_names if k in predictive})
    return inference_data.build_inference_data(
        posterior={**draws.posterior, **deterministic},
        sample_stats=draws.sample_stats or None,
        observed_data=observed,
        posterior_predictive=per_chain({name: predictive[name] for name in model.observed}),
        log_likelihood=per_chain({name: pointwise[name] for name in model.observed}),
    )


def run_workflow(
    path: str | Path,
    out: str | Path,
    *,
    inference: str | Path | None = None,
    overrides: Iterable[str] = (),
    progress: bool = False,
) -> dict:
    """Fit a declarative model, check the fit, and write the run folder ``out``; returns the metrics."""
    out = Path(out)
    model, workflow, tree = load_workflow(path, inference=inference, overrides=overrides)
    if (out / RESULTS_FILE).exists():
        raise PpgenError(f"{out} already holds a run: pass --out to write elsewhere")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / SPEC_FILE, tomli_w.dumps(_plain(tree)))
    started = time.perf_counter()
    draws = infer(model, workflow, progress=progress)
    results = results_of(model, draws, seed=getattr(workflow.inference, "seed", 0))
    inference_data.save(results, out / RESULTS_FILE)
    table, warnings = checks.summarize(results)
    evaluation = workflow.evaluation
    metrics: dict = {
        "model": model.name,
        "method": workflow.inference.method,
        "seconds": draws.seconds,
        "total_seconds": time.perf_counter() - started,
        "summary": json.loads(table.to_json(orient="index")),
    }
    predictive = checks.ppc(results, statistics=evaluation.statistics)
    metrics["ppc"], ppc_warnings = predictive
    warnings = [*warnings, *ppc_warnings]
    if evaluation.loo:
        metrics["loo"], loo_warnings = checks.loo(results)
        warnings += loo_warnings
    metrics["warnings"] = warnings
    write_text_atomic(out / SUMMARY_FILE, checks.format_summary(table, warnings))
    write_text_atomic(out / METRICS_FILE, json.dumps(metrics, indent=2, default=float) + "\n")
    if evaluation.plots:
        from ppgen.evaluate.check_plots import plot_checks

        plot_checks(results, out)
    return metrics


def compare_runs(folders: Iterable[str | Path]):
    """Rank finished runs by their expected log pointwise predictive density (PSIS-LOO)."""
    named = {}
    for folder in folders:
        path = Path(folder) / RESULTS_FILE
        if not path.is_file():
            raise PpgenError(f"{folder}: no {RESULTS_FILE} (is it a Bayesian run folder?)")
        named[Path(folder).name] = inference_data.load(path)
    if len(named) < 2:
        raise PpgenError("compare needs at least two run folders with different names")
    return checks.compare(named)


def _float64():
    """Declarative models compute in float64 in both backends, as Stan does (float32 Cholesky factors of
    e.g. Gaussian-process kernels fail); JAX needs it switched on."""
    import jax

    return jax.enable_x64(True)


def _jax(model: BayesModel, data: dict | None) -> dict:
    if data is None:
        return model.jax_data()
    import jax.numpy as jnp

    return {**model.jax_data(), **{k: jnp.asarray(v) for k, v in data.items()}}


def _torch(model: BayesModel, data: dict | None, device: str = "cpu") -> dict:
    """The data as tensors on ``device`` ("auto" picks CUDA when present): the Pyro model computes there."""
    import torch

    from ppgen.device import resolve_device

    device = resolve_device(device)
    given = {
        **model.torch_data(device=device),
        **{k: torch.as_tensor(v, device=device) for k, v in (data or {}).items()},
    }
    return given


def _plain(tree: dict) -> dict:
    """TOML-writable copy of the tables (numpy values as lists)."""
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, np.ndarray):
        return tree.tolist()
    return tree
