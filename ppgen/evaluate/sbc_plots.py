"""Rank histograms of an SBC run with the band expected under uniform ranks (Talts et al. 2018,
arXiv:1804.06788, Fig. 3).

Built on ``matplotlib.figure.Figure`` directly, so nothing touches pyplot's global state or needs a display.
"""

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from ppgen.evaluate.sbc import SBCResult

__all__ = ["plot_rank_histograms"]


def plot_rank_histograms(result: SBCResult, path: str | Path, max_panels: int = 36, band: float = 0.99) -> None:
    """One panel per scalar parameter: counts of ranks in ``result.num_bins`` bins, the expected count, and
    the central ``band`` interval of each bin's Binomial(R, p_bin) count under uniform ranks.

    With more than max_panels scalars, the max_panels with the smallest p-values are drawn.
    """
    names = sorted(result.ranks, key=lambda name: result.uniformity[name].min_p_value)[:max_panels]
    names = [name for name in result.ranks if name in names]
    columns = min(len(names), 4)
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(max(4.8, 3.6 * columns), 0.5 + 2.8 * rows), layout="constrained")
    edges, probabilities = result.bin_edges, result.bin_probabilities
    expected = result.num_replicates * probabilities
    low = stats.binom.ppf((1 - band) / 2, result.num_replicates, probabilities)
    high = stats.binom.ppf((1 + band) / 2, result.num_replicates, probabilities)
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1)
        # Bars span their ranks [edge_b, edge_b+1); the band is drawn per bin, as widths may differ by one.
        left, widths = edges[:-1] - 0.5, np.diff(edges)
        for x, width, lower, upper in zip(left, widths, low, high):
            axes.fill_between([x, x + width], lower, upper, color="0.85", linewidth=0)
        axes.bar(left, result.bin_counts(name), width=widths, align="edge", color="C0", alpha=0.75, edgecolor="white")
        axes.step(np.append(left, edges[-1] - 0.5), np.append(expected, expected[-1]), where="post", color="0.4")
        test = result.uniformity[name]
        axes.set_title(f"{name}\nchi2 p={test.chi_square_p_value:.2g}, KS p={test.ks_p_value:.2g}", fontsize=9)
        axes.set_xlim(-0.5, result.num_draws + 0.5)
        axes.set_xlabel("rank")
    verdict = "passed" if result.passed else "FAILED"
    figure.suptitle(
        f"SBC {verdict} at alpha={result.alpha:g}: R={result.num_replicates}, L={result.num_draws}\n"
        f"grey: {band:.0%} band of bin counts under uniform ranks",
        fontsize=10,
    )
    figure.savefig(path, dpi=110)
