"""PNG figures of the posterior checks: trace and rank plots, a posterior predictive overlay and Pareto k values.

``ppgen run`` draws them in a background process (``plot_in_background``, which runs this module on the run
folder's posterior.nc), so the command returns when the summary is printed; matplotlib's import and four figures
take about 3 s. The log of that process is ``plots.log`` in the run folder.

ArviZ draws the figures (through ``ppgen.evaluate.arviz_plots``, which closes each one after saving it). Large
posteriors are cut to their first ``max_variables`` variables and ``max_elements`` elements of each, so a
784-dimensional latent does not become a 784-panel figure.
"""

import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.errors import SpecError
from ppgen.evaluate import arviz_plots, inference_data
from ppgen.evaluate.arviz_plots import plot_pareto_k

__all__ = ["plot_trace", "plot_rank", "plot_ppc", "plot_pareto_k", "plot_checks", "plot_in_background"]

PLOT_LOG = "plots.log"

MAX_VARIABLES = 8
MAX_ELEMENTS = 4


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


def plot_ppc(results: Any, path: str | Path, var_names: Sequence[str] | None = None, num_samples: int = 50) -> Path:
    """Densities of ``num_samples`` replicated data sets overlaid on the observed data's, written as a PNG."""
    return arviz_plots.plot_ppc(results, path, var_names=var_names, num_samples=num_samples)


def plot_checks(results: Any, folder: str | Path) -> list[Path]:
    """Every plot the results allow, into ``folder``: trace.png and rank.png, ppc.png (with observed data and
    replicates) and pareto_k.png (with a single log-likelihood variable over data points). Returns the paths written."""
    folder = Path(folder)
    present = inference_data.groups(results)
    written = [plot_trace(results, folder / "trace.png"), plot_rank(results, folder / "rank.png")]
    if "observed_data" in present and "posterior_predictive" in present:
        written.append(plot_ppc(results, folder / "ppc.png"))
    if inference_data.has_pointwise_log_likelihood(results):
        written.append(plot_pareto_k(results, folder / "pareto_k.png"))
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
