"""One Bayesian run from a declarative spec: infer -> results -> checks -> run folder.

``ppgen.run`` calls ``run_bayes`` for a ``BayesRunSpec``: the ``[inference]`` method draws from the posterior,
``ppgen.posterior`` turns the draws into ArviZ results, and ``ppgen.evaluate.checks`` checks them. A run folder
holds ``spec.toml`` (the model and inference tables as run), ``posterior.nc`` (ArviZ
results), ``summary.txt``, ``metrics.json`` and PNG plots (trace/rank, posterior predictive, Pareto k).
"""

import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ppgen.errors import PpgenError, SamplingInterrupted
from ppgen.evaluate import checks, inference_data, sensitivity
from ppgen.models.bayes import BayesModel
from ppgen.models.missing import cut_to_observed
from ppgen.posterior import draws_only, infer, results_of
from ppgen.run_folder import POSTERIOR_FILE, SUMMARY_FILE, RunFolder
from ppgen.spec.bayes_run import BayesRunSpec, dump_bayes_spec

__all__ = ["run_bayes", "run_prior", "prior_results", "compare_runs", "PARTIAL_FILE", "PRIOR_FILE"]

PARTIAL_FILE = "posterior_partial_chain.nc"  # chains that Ctrl-C stopped short of the complete ones
PRIOR_FILE = "prior.nc"  # a prior predictive check's ArviZ results: prior, prior_predictive, observed_data


def run_bayes(
    spec: BayesRunSpec, out: str | Path, *, progress: bool = False, background_plots: bool = False, force: bool = False
) -> dict:
    """Fit a declarative model, check the fit, and write the run folder ``out`` (locked meanwhile; ``force``
    replaces a run already there); returns the metrics.

    With ``background_plots`` the PNG figures are drawn by a process of their own that outlives this call
    (``metrics["plots"]`` is then "background"; its log is plots.log)."""
    with RunFolder(out) as folder:
        folder.start(resumable=False, force=force)
        folder.write_spec(dump_bayes_spec(spec, folder.path))
        started = time.perf_counter()
        inference_data.import_in_background()  # the checks need ArviZ once sampling ends
        try:
            draws = infer(spec.model, spec.settings, progress=progress)
        except SamplingInterrupted as stopped:
            raise _kept(stopped, spec, folder) from None
        # The draws reach the disk before anything else can fail: the posterior predictive, LOO and plots follow,
        # and a failure there is reported in one line that says where the draws are.
        inference_data.save(draws_only(draws), folder / POSTERIOR_FILE)
        try:
            return _check(spec, draws, folder, started, background_plots)
        except Exception as error:
            message = str(error) if isinstance(error, PpgenError) else f"{type(error).__name__}: {_first_line(error)}"
            raise PpgenError(
                f"{message} (the posterior draws are saved in {folder / POSTERIOR_FILE}; the checks after sampling"
                " did not run)"
            ) from error


def _kept(stopped: SamplingInterrupted, spec: BayesRunSpec, folder: RunFolder) -> SamplingInterrupted:
    """The draws of chains stopped by Ctrl-C, written to the run folder (posterior.nc, and PARTIAL_FILE for a chain
    shorter than the complete ones) with metrics.json saying what is partial; the interruption, saying where."""
    message = str(stopped)
    saved = []
    for draws, name in ((stopped.draws, POSTERIOR_FILE), (stopped.partial, PARTIAL_FILE)):
        if draws is not None:
            inference_data.save(draws_only(draws), folder / name)
            saved.append(str(folder / name))
    metrics = {"model": spec.model.name, "method": spec.settings.inference.method, "interrupted": message}
    folder.write_metrics({**metrics, "saved": saved})
    where = f"; draws saved in {' and '.join(saved)} (not checked)" if saved else "; no draws to save"
    return SamplingInterrupted(f"{message}{where}", stopped.draws, stopped.partial)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def _check(spec: BayesRunSpec, draws, folder: RunFolder, started: float, background_plots: bool) -> dict:
    """Results from the draws (deterministic variables, posterior predictive, log-likelihood), their checks,
    summary, metrics and plots, into the run folder; returns the metrics."""
    model, settings = spec.model, spec.settings
    results = results_of(model, draws, seed=getattr(settings.inference, "seed", 0))
    inference_data.save(results, folder / POSTERIOR_FILE)
    table, warnings = checks.summarize(results, max_tree_depth=getattr(settings.inference, "max_tree_depth", None))
    warnings = [*draws.warnings, *warnings]  # the method's own (Pathfinder's Pareto k)
    evaluation = settings.evaluation
    metrics: dict = {
        "model": model.name,
        "method": settings.inference.method,
        "seconds": draws.seconds,
        "sampler": draws.choices,
        "gradient_evaluations": draws.gradients,  # warmup and draws, all chains (None: not counted)
        "total_seconds": time.perf_counter() - started,
        "summary": json.loads(table.to_json(orient="index")),
    }
    metrics["ppc"] = {}
    if model.observed:  # a density without data (a prior, a target such as a funnel) has nothing to check against
        metrics["ppc"], ppc_warnings = checks.ppc(results, statistics=evaluation.statistics)
        warnings = [*warnings, *ppc_warnings]
        if evaluation.loo and inference_data.has_pointwise_log_likelihood(results):
            metrics["loo"], loo_warnings = checks.loo(results)
            warnings += loo_warnings
            if metrics["loo"]:
                metrics["loo_pit"], pit_warnings = checks.loo_pit(results)
                warnings += pit_warnings
        elif evaluation.loo:
            warnings.append(
                "loo: skipped, there is no one log-likelihood over conditionally independent data points to leave"
                " out (several observed variables, a likelihood without a plate, or a discrete latent variable shared"
                " by the points, such as a change point or a hidden Markov chain)"
            )
    if sensitivity.can_compute(results) and checks.num_draws(results) >= checks.MIN_LOO_DRAWS:
        metrics["sensitivity"], sensitivity_warnings = sensitivity.sensitivity(results)
        warnings += sensitivity_warnings
    metrics["warnings"] = warnings
    metrics["plots"] = ("background" if background_plots else "written") if evaluation.plots else "off"
    text = checks.format_summary(
        table, warnings, metrics["ppc"], metrics.get("loo"), metrics.get("loo_pit"), metrics.get("sensitivity")
    )
    _write(folder, text, metrics, results, POSTERIOR_FILE, evaluation.plots, background_plots)
    return metrics


def _write(folder: RunFolder, text: str, metrics: dict, results, results_file: str, plots: bool, background: bool):
    """summary.txt and metrics.json, then the plots of ``results`` (saved in ``results_file``): drawn now, or by a
    process of their own when ``background``."""
    folder.write_text(SUMMARY_FILE, text)
    folder.write_metrics(metrics)
    if plots:
        from ppgen.evaluate import check_plots

        if background:
            check_plots.plot_in_background(folder.path, results_file)
        else:
            check_plots.plot_checks(results, folder.path)


def run_prior(spec: BayesRunSpec, out: str | Path, *, background_plots: bool = False, force: bool = False) -> dict:
    """A prior predictive check, without sampling the posterior: ``inference.num_samples`` draws (``inference.seed``)
    of the parameters and of replicated data from the prior, compared with the data by the posterior predictive
    check's statistics and plot. Writes the run folder ``out`` (prior.nc, summary.txt, metrics.json,
    prior_ppc.png); returns the metrics."""
    model, evaluation, inference = spec.model, spec.settings.evaluation, spec.settings.inference
    if not model.observed:
        raise PpgenError(f"model {model.name!r} observes no data: a prior predictive check compares with the data")
    num_draws, seed = getattr(inference, "num_samples", 1000), getattr(inference, "seed", 0)
    with RunFolder(out) as folder:
        folder.start(resumable=False, force=force)
        folder.write_spec(dump_bayes_spec(spec, folder.path))
        started = time.perf_counter()
        backend = getattr(inference, "backend", "numpyro")
        results = prior_results(model, model.prior_predictive(num_draws, seed, backend=backend))
        inference_data.save(results, folder / PRIOR_FILE)
        ppc, warnings = checks.ppc(results, statistics=evaluation.statistics, group="prior_predictive")
        coverage = checks.interval_coverage(results, group="prior_predictive")
        metrics = {
            "model": model.name,
            "mode": "prior",
            "num_draws": num_draws,
            "seed": seed,
            "seconds": time.perf_counter() - started,
            "prior_predictive": ppc,
            "coverage": coverage,
            "warnings": warnings,
            "plots": ("background" if background_plots else "written") if evaluation.plots else "off",
        }
        text = checks.format_summary(None, warnings, ppc, coverage=coverage, predictive="prior")
        _write(folder, text, metrics, results, PRIOR_FILE, evaluation.plots, background_plots)
    return metrics


def prior_results(model: BayesModel, draws: dict[str, np.ndarray]):
    """ArviZ results of prior draws ({name: [draw, ...]}, ``BayesModel.prior_predictive``): ``prior`` (latent and
    deterministic variables) and ``prior_predictive`` (observed variables), one chain each, and ``observed_data``."""
    observed = set(model.observed)
    replicated = {name: draws[name][None] for name in model.observed}
    data = dict(model.observed_values)
    if model.spec.missing:  # compared at the observed entries only, as the posterior check is
        replicated, data = cut_to_observed(replicated, model.spec.missing), cut_to_observed(data, model.spec.missing)
    return inference_data.build_inference_data(
        None,
        prior={name: value[None] for name, value in draws.items() if name not in observed},
        prior_predictive=replicated,
        observed_data=data,
    )


def compare_runs(folders: Iterable[str | Path]):
    """Rank finished runs by their expected log pointwise predictive density (PSIS-LOO)."""
    named = {}
    for folder in folders:
        path = Path(folder) / POSTERIOR_FILE
        if not path.is_file():
            raise PpgenError(f"{folder}: no {POSTERIOR_FILE} (is it a Bayesian run folder?)")
        named[Path(folder).name] = inference_data.load(path)
    if len(named) < 2:
        raise PpgenError("compare needs at least two run folders with different names")
    counts = {name: _observations(results) for name, results in named.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise PpgenError(
            f"compare ranks models of the same data points, and these runs have different numbers of observations"
            f" ({listed})"
        )
    return checks.compare(named)


def _observations(results) -> int | None:
    """The data points of a run's pointwise log-likelihood (None without one)."""
    if "log_likelihood" not in inference_data.groups(results):
        return None
    variables = inference_data.get_group(results, "log_likelihood").data_vars.values()
    return sum(variable.size // (variable.sizes["chain"] * variable.sizes["draw"]) for variable in variables)
