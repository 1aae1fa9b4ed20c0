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

from ppgen.errors import PpgenError
from ppgen.evaluate import checks, inference_data
from ppgen.posterior import draws_only, infer, results_of
from ppgen.run_folder import POSTERIOR_FILE, SUMMARY_FILE, RunFolder
from ppgen.spec.bayes_run import BayesRunSpec, dump_bayes_spec

__all__ = ["run_bayes", "compare_runs"]


def run_bayes(spec: BayesRunSpec, out: str | Path, *, progress: bool = False, background_plots: bool = False) -> dict:
    """Fit a declarative model, check the fit, and write the run folder ``out``; returns the metrics.

    With ``background_plots`` the PNG figures are drawn by a process of their own that outlives this call
    (``metrics["plots"]`` is then "background"; its log is plots.log)."""
    folder = RunFolder(out)
    folder.start(resumable=False)
    folder.write_spec(dump_bayes_spec(spec, folder.path))
    started = time.perf_counter()
    draws = infer(spec.model, spec.settings, progress=progress)
    # The draws reach the disk before anything else can fail: the posterior predictive, LOO and plots follow, and
    # a failure there is reported in one line that says where the draws are.
    inference_data.save(draws_only(draws), folder / POSTERIOR_FILE)
    try:
        return _check(spec, draws, folder, started, background_plots)
    except Exception as error:
        message = str(error) if isinstance(error, PpgenError) else f"{type(error).__name__}: {_first_line(error)}"
        raise PpgenError(
            f"{message} (the posterior draws are saved in {folder / POSTERIOR_FILE}; the checks after sampling did"
            " not run)"
        ) from error


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
    evaluation = settings.evaluation
    metrics: dict = {
        "model": model.name,
        "method": settings.inference.method,
        "seconds": draws.seconds,
        "sampler": draws.choices,
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
        elif evaluation.loo:
            warnings.append(
                "loo: skipped, there is no one log-likelihood over conditionally independent data points to leave"
                " out (several observed variables, a likelihood without a plate, or a discrete latent variable shared"
                " by the points, such as a change point or a hidden Markov chain)"
            )
    metrics["warnings"] = warnings
    metrics["plots"] = ("background" if background_plots else "written") if evaluation.plots else "off"
    folder.write_text(SUMMARY_FILE, checks.format_summary(table, warnings))
    folder.write_metrics(metrics)
    if evaluation.plots:
        from ppgen.evaluate import check_plots

        if background_plots:
            check_plots.plot_in_background(folder.path, POSTERIOR_FILE)
        else:
            check_plots.plot_checks(results, folder.path)
    return metrics


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
    return checks.compare(named)
