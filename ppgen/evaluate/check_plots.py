"""PNG figures of the checks: trace and rank plots, a posterior (or prior) predictive overlay, Pareto k and LOO-PIT.

``ppgen run`` draws them in a background process (``plot_in_background``, which runs this module on the run
folder's posterior.nc), so the command returns when the summary is printed; matplotlib's import and four figures
take about 3 s. The log of that process is ``plots.log`` in the run folder.

ArviZ draws the figures (through ``ppgen.evaluate.arviz_plots``, which closes each one after saving it), except
the posterior predictive plot of binary and count data, which ``plot_ppc_counts`` draws as bars. Large
posteriors are cut to their first ``max_variables`` variables and ``max_elements`` elements of each, so a
784-dimensional latent does not become a 784-panel figure. Small runs get the plots they can have: trace and
rank plots need 2 draws per chain, rank plots 2 chains, the Pareto k plot ``checks.MIN_LOO_DRAWS`` draws.
"""

import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.errors import SpecError
from ppgen.evaluate import arviz_plots, checks, inference_data
from ppgen.evaluate.arviz_plots import plot_pareto_k

__all__ = [
    "plot_trace",
    "plot_rank",
    "plot_ppc",
    "plot_ppc_counts",
    "plot_pareto_k",
    "plot_checks",
    "plot_in_background",
]

PLOT_LOG = "plots.log"

MAX_VARIABLES = 8
MAX_ELEMENTS = 4
MAX_BARS = 40  # whole-number data spanning more values than this is plotted as continuous
PPC_DRAWS = 1000  # replicated data sets whose counts make the intervals of plot_ppc_counts


def _plotted_posterior(
    results: Any, var_names: Sequence[str] | None, max_variables: int, max_elements: int
) -> tuple[Any, list[str]]:
    """Results holding only what is plotted: at most max_variables variables of at most max_elements elements."""
    posterior = inference_data.get_group(results, "posterior")
    if var_names is None:
        var_names = list(posterior.data_vars)
    for name in var_names:
        if name not in posterior.data_vars:
            raise SpecError(f"var_names: unknown posterior variable {name!r} ({', '.join(posterior.data_vars)})")
    var_names = list(var_names)[:max_variables]
    sizes = {name: math.prod(posterior[name].shape[2:]) for name in var_names}
    if all(size <= max_elements for size in sizes.values()):
        return results, var_names
    draws = {}
    for name in var_names:
        values = posterior[name].transpose("chain", "draw", ...).values
        draws[name] = values.reshape(*values.shape[:2], -1)[..., :max_elements] if values.ndim > 2 else values
    sample_stats = None
    if "sample_stats" in inference_data.groups(results):
        stats = inference_data.get_group(results, "sample_stats")
        if "diverging" in stats:
            sample_stats = {"diverging": np.asarray(stats["diverging"].transpose("chain", "draw").values)}
    return inference_data.build_inference_data(draws, sample_stats=sample_stats), var_names


def plot_trace(
    results: Any,
    path: str | Path,
    var_names: Sequence[str] | None = None,
    max_variables: int = MAX_VARIABLES,
    max_elements: int = MAX_ELEMENTS,
) -> Path:
    """Trace plot (per-chain densities and traces) of the posterior, written to ``path`` as a PNG."""
    return _plot_posterior(arviz_plots.plot_trace, results, path, var_names, max_variables, max_elements)


def plot_rank(
    results: Any,
    path: str | Path,
    var_names: Sequence[str] | None = None,
    max_variables: int = MAX_VARIABLES,
    max_elements: int = MAX_ELEMENTS,
) -> Path:
    """Rank plot of the posterior (Vehtari et al. 2021, arXiv:1903.08008), written to ``path`` as a PNG; by default
    of the continuous variables (ranks of a discrete variable's draws are mostly ties)."""
    if var_names is None:
        posterior = inference_data.get_group(results, "posterior")
        var_names = [name for name in posterior.data_vars if not np.issubdtype(posterior[name].dtype, np.integer)]
    return _plot_posterior(arviz_plots.plot_rank, results, path, var_names, max_variables, max_elements)


def _plot_posterior(plot, results, path, var_names, max_variables: int, max_elements: int) -> Path:
    plotted, var_names = _plotted_posterior(results, var_names, max_variables, max_elements)
    return plot(plotted, path, var_names=var_names)


def plot_ppc(
    results: Any,
    path: str | Path,
    var_names: Sequence[str] | None = None,
    num_samples: int = 50,
    group: str = "posterior_predictive",
) -> Path:
    """Densities of ``num_samples`` replicated data sets of ``group`` ("posterior_predictive" or
    "prior_predictive") overlaid on the observed data's, written as a PNG; for binary or count data (every variable
    whole numbers over at most ``MAX_BARS`` values) ``plot_ppc_counts``."""
    var_names = inference_data._check_var_names(results, "observed_data", var_names)
    pairs = _observed_and_replicated(results, var_names, group)
    if all(_counts_range(y, y_rep) is not None for y, y_rep in pairs.values()):
        return plot_ppc_counts(results, path, var_names, group)
    return arviz_plots.plot_ppc(results, path, var_names=var_names, num_samples=num_samples, group=group)


def plot_ppc_counts(
    results: Any, path: str | Path, var_names: Sequence[str] | None = None, group: str = "posterior_predictive"
) -> Path:
    """Binary or count data: per value, the observed number of data points (bars) and the replicated data sets'
    (of ``group``) median number with its 90% interval (points with error bars), a panel per variable, written as
    a PNG."""
    from matplotlib.figure import Figure

    pairs = _observed_and_replicated(results, var_names, group)
    figure = Figure(figsize=(6, 3.2 * len(pairs)), layout="constrained")
    for index, (name, (y, y_rep)) in enumerate(pairs.items()):
        axes = figure.add_subplot(len(pairs), 1, index + 1)
        low, high = _counts_range(y, y_rep)
        values = np.arange(low, high + 1)
        observed = np.array([np.sum(y == value) for value in values])
        replicated = np.stack([np.sum(y_rep == value, axis=1) for value in values], axis=1)  # [draw, value]
        q05, median, q95 = np.quantile(replicated, [0.05, 0.5, 0.95], axis=0)
        axes.bar(values, observed, color="0.8", edgecolor="0.5", label="observed")
        axes.errorbar(
            values,
            median,
            yerr=[median - q05, q95 - median],
            fmt="o",
            color="C0",
            label=f"{group.split('_')[0]} replicates (median, 90%)",
        )
        axes.set_xticks(values if len(values) <= 12 else values[:: -(-len(values) // 12)])
        axes.set_xlabel(name)
        axes.set_ylabel("data points")
        axes.legend()
    return arviz_plots._save_figure(figure, path)


def _observed_and_replicated(
    results: Any, var_names: Sequence[str] | None, group: str = "posterior_predictive"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{variable: (observed y [n], replicates of ``group`` [draw, n] (at most ``PPC_DRAWS``, evenly spaced))}."""
    observed = inference_data.get_group(results, "observed_data")
    replicated = inference_data.get_group(results, group)
    if var_names is None:
        var_names = [name for name in observed.data_vars if name in replicated.data_vars]
    pairs = {}
    for name in var_names:
        y_rep = replicated[name].transpose("chain", "draw", ...).values
        y_rep = y_rep.reshape(-1, math.prod(y_rep.shape[2:]))
        pairs[name] = np.ravel(observed[name].values), y_rep[:: -(-len(y_rep) // PPC_DRAWS)]
    return pairs


def _counts_range(y: np.ndarray, y_rep: np.ndarray) -> tuple[int, int] | None:
    """(lowest, highest) value of whole-number data spanning at most ``MAX_BARS`` values, else None."""
    values = np.concatenate([np.ravel(y), np.ravel(y_rep)]).astype(float)
    if not values.size or not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        return None
    low, high = int(values.min()), int(values.max())
    return (low, high) if high - low < MAX_BARS else None


def plot_checks(results: Any, folder: str | Path) -> list[Path]:
    """Every plot the results allow, into ``folder``: trace.png (2 or more draws per chain), rank.png (and 2 or more
    chains, which it compares), ppc.png (with observed data and replicates), pareto_k.png and loo_pit.png (with a
    single log-likelihood variable over data points, and ``checks.MIN_LOO_DRAWS`` draws; loo_pit.png also with
    replicates), and prior_ppc.png for the results of a prior predictive check. Returns the paths written."""
    folder = Path(folder)
    present = inference_data.groups(results)
    written = []
    if "observed_data" in present and "prior_predictive" in present:
        written.append(plot_ppc(results, folder / "prior_ppc.png", group="prior_predictive"))
    if "posterior" not in present:
        return written
    sizes = inference_data.get_group(results, "posterior").sizes
    if sizes["draw"] >= 2:
        written.append(plot_trace(results, folder / "trace.png"))
        if sizes["chain"] >= 2:
            written.append(plot_rank(results, folder / "rank.png"))
    if "observed_data" in present and "posterior_predictive" in present:
        written.append(plot_ppc(results, folder / "ppc.png"))
    if inference_data.has_pointwise_log_likelihood(results) and checks.num_draws(results) >= checks.MIN_LOO_DRAWS:
        written.append(plot_pareto_k(results, folder / "pareto_k.png"))
        if "observed_data" in present and "posterior_predictive" in present:
            written.append(arviz_plots.plot_loo_pit(results, folder / "loo_pit.png"))
    return written


def plot_in_background(folder: str | Path, results_file: str) -> subprocess.Popen:
    """Start a process, detached from this one's session, that writes ``plot_checks`` of ``folder/results_file``
    into ``folder``; its output goes to ``folder/plots.log``. Returns the process (``wait()`` for the plots)."""
    folder = Path(folder)
    with open(folder / PLOT_LOG, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ppgen.evaluate.check_plots", str(folder / results_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C at the terminal after ppgen returned does not stop the plots
        )


if __name__ == "__main__":
    results_path = Path(sys.argv[1])
    plot_checks(inference_data.load(results_path), results_path.parent)
