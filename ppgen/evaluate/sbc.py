"""Simulation-based calibration (SBC) of any posterior-fitting method (Talts et al. 2018, arXiv:1804.06788).

For r = 1..R: draw theta~ from the prior and data y~ given theta~ (``simulate``), fit the posterior given y~
with the method under test (``fit``), keep L roughly independent draws, and record the rank of theta~ among
them, rank = #{l : theta_l < theta~} in {0..L}, for every scalar element of every parameter. When the fit
samples the exact posterior, theta~ and the L draws are exchangeable, so each rank is uniform on {0..L}.
Too-narrow posteriors give U-shaped rank histograms, too-wide ones a hump, biased ones a slope.

The method is given as two picklable callables (module-level functions, or ``functools.partial`` of them):

    simulate(seed: int) -> (parameters, data)                 both dict[str, array]; parameters[name] shape S
    fit(data, seed: int) -> draws                             dict[str, array], draws[name] shape [num, *S]

A fit wrapping a sampler seeds it from ``seed`` (``pyro.set_rng_seed(seed)``, ``jax.random.PRNGKey(seed)``)
and returns its post-warm-up draws, chains concatenated. Each replicate's seeds come from
``numpy.random.SeedSequence(seed).spawn``, so the ranks do not depend on how replicates are spread over
workers, and the first R replicates are the same whatever the total number.
"""

import math
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from functools import cached_property
from numbers import Integral
from typing import Any

import numpy as np
from scipy import stats

from ppgen.errors import PpgenError, SpecError
from ppgen.progress import reporter

__all__ = ["Simulate", "Fit", "RankUniformity", "SBCResult", "run_sbc", "default_num_bins", "replicate_seeds"]

Simulate = Callable[[int], tuple[Mapping[str, Any], Mapping[str, Any]]]
Fit = Callable[[Mapping[str, Any], int], Mapping[str, Any]]


@dataclass(frozen=True)
class RankUniformity:
    """Tests of one scalar's ranks against the discrete uniform distribution on {0..L}.

    chi_square: Pearson's statistic over ``num_bins`` contiguous rank bins (num_bins - 1 degrees of freedom).
    ks_statistic: sup_k |F_R(k) - (k + 1) / (L + 1)| over k = 0..L, the Kolmogorov-Smirnov distance of the
    empirical CDF of the R ranks; its p-value from the continuous Kolmogorov distribution is conservative
    for a discrete null (Conover 1972, JASA 67:591).
    """

    chi_square: float
    chi_square_p_value: float
    ks_statistic: float
    ks_p_value: float

    @property
    def min_p_value(self) -> float:
        return min(self.chi_square_p_value, self.ks_p_value)


@dataclass(frozen=True, eq=False)
class SBCResult:
    """SBC ranks and their uniformity tests.

    ranks: scalar name ("mu", "theta[0]", "W[1, 2]") -> int64 [R] ranks in {0..num_draws}.
    num_draws: L, the posterior draws each rank is taken among.
    alpha: the family-wise level of ``passed``. Every scalar gets a chi-square and a KS test, and ``passed``
    is false when any of the 2K p-values (K scalars) falls below alpha / (2K) (Bonferroni), so a calibrated
    method fails with probability at most alpha.
    num_bins: rank bins of the chi-square test and the histograms; None picks ``default_num_bins``.
    """

    ranks: Mapping[str, np.ndarray]
    num_draws: int
    alpha: float = 0.01
    num_bins: int | None = None

    def __post_init__(self):
        if not self.ranks:
            raise SpecError("SBC: no parameters to rank (simulate returned an empty parameter dict)")
        if not 0.0 < self.alpha < 1.0:
            raise SpecError(f"SBC alpha must lie in (0, 1), got {self.alpha}")
        ranks = {}
        for name, values in self.ranks.items():
            values = np.array(values, dtype=np.int64)
            if values.ndim != 1 or values.size == 0 or values.min() < 0 or values.max() > self.num_draws:
                raise SpecError(f"SBC ranks of {name!r} must be a non-empty vector in 0..{self.num_draws}")
            values.setflags(write=False)
            ranks[name] = values
        if len({len(values) for values in ranks.values()}) != 1:
            raise SpecError("SBC ranks of all parameters must have the same number of replicates")
        object.__setattr__(self, "ranks", ranks)
        num_bins = default_num_bins(self.num_replicates, self.num_draws) if self.num_bins is None else self.num_bins
        if not 1 <= num_bins <= self.num_draws + 1:
            raise SpecError(f"SBC num_bins must lie in 1..{self.num_draws + 1} (num_draws + 1), got {num_bins}")
        object.__setattr__(self, "num_bins", num_bins)

    @property
    def num_replicates(self) -> int:
        return len(next(iter(self.ranks.values())))

    @property
    def bin_edges(self) -> np.ndarray:
        """[num_bins + 1] rank boundaries: bin b holds ranks edges[b] .. edges[b + 1] - 1 (equal widths when
        num_bins divides L + 1, otherwise widths differing by one, with expected counts to match)."""
        return np.arange(self.num_bins + 1) * (self.num_draws + 1) // self.num_bins

    def bin_counts(self, name: str) -> np.ndarray:
        """[num_bins] how many of the scalar's ranks fall in each bin."""
        return np.bincount(np.searchsorted(self.bin_edges, self.ranks[name], side="right") - 1, minlength=self.num_bins)

    @property
    def bin_probabilities(self) -> np.ndarray:
        """[num_bins] the chance of each bin under uniform ranks."""
        return np.diff(self.bin_edges) / (self.num_draws + 1)

    @cached_property
    def uniformity(self) -> dict[str, RankUniformity]:
        """Scalar name -> its chi-square and KS tests of uniform ranks."""
        return {name: self._test(name) for name in self.ranks}

    def _test(self, name: str) -> RankUniformity:
        counts, ranks = self.bin_counts(name), self.ranks[name]
        if self.num_bins > 1:
            chi_square, chi_square_p = stats.chisquare(counts, self.num_replicates * self.bin_probabilities)
        else:
            chi_square, chi_square_p = 0.0, 1.0
        grid = np.arange(self.num_draws + 1)
        empirical = np.cumsum(np.bincount(ranks, minlength=self.num_draws + 1)) / len(ranks)
        distance = np.abs(empirical - (grid + 1) / (self.num_draws + 1)).max()
        return RankUniformity(
            chi_square=float(chi_square),
            chi_square_p_value=float(chi_square_p),
            ks_statistic=float(distance),
            ks_p_value=float(stats.kstwo.sf(distance, len(ranks))),
        )

    @property
    def p_value(self) -> float:
        """The Bonferroni-adjusted p-value of the whole check: min(1, 2K * smallest p-value)."""
        smallest = min(test.min_p_value for test in self.uniformity.values())
        return min(1.0, 2 * len(self.ranks) * smallest)

    @property
    def passed(self) -> bool:
        """True when no scalar's ranks are detectably non-uniform at family-wise level alpha."""
        return self.p_value >= self.alpha

    def to_json(self) -> dict:
        """A JSON-ready summary for metrics.json, ranks included so that plots can be redrawn."""
        return {
            "num_replicates": self.num_replicates,
            "num_draws": self.num_draws,
            "num_bins": self.num_bins,
            "alpha": self.alpha,
            "p_value": self.p_value,
            "passed": self.passed,
            "parameters": {
                name: {
                    "chi_square": test.chi_square,
                    "chi_square_df": self.num_bins - 1,
                    "chi_square_p_value": test.chi_square_p_value,
                    "ks_statistic": test.ks_statistic,
                    "ks_p_value": test.ks_p_value,
                }
                for name, test in self.uniformity.items()
            },
            "ranks": {name: ranks.tolist() for name, ranks in self.ranks.items()},
        }

    @classmethod
    def from_json(cls, summary: Mapping) -> "SBCResult":
        """The result that ``to_json`` summarized."""
        try:
            return cls(summary["ranks"], summary["num_draws"], summary["alpha"], summary["num_bins"])
        except KeyError as error:
            raise SpecError(f"SBC summary lacks the key {error.args[0]!r}") from None


def default_num_bins(num_replicates: int, num_draws: int) -> int:
    """About R / 10 rank bins (expected counts of 10 or more), at most 20 and at most L + 1, preferring a
    divisor of L + 1 (equal-width bins) when one lies within a factor of two of that."""
    target = max(1, min(num_replicates // 10, 20, num_draws + 1))
    divisors = [b for b in range(math.ceil(target / 2), target + 1) if (num_draws + 1) % b == 0]
    return max(divisors, default=target)


def replicate_seeds(seed: int, num_replicates: int) -> list[tuple[int, int, int]]:
    """(simulate seed, fit seed, tie-break seed) per replicate, each in [0, 2^32), from SeedSequence.spawn."""
    children = np.random.SeedSequence(seed).spawn(num_replicates)
    return [tuple(int(s) for s in child.generate_state(3, dtype=np.uint32)) for child in children]


def run_sbc(
    simulate: Simulate,
    fit: Fit,
    num_replicates: int,
    num_draws: int,
    seed: int,
    *,
    thin: int | None = None,
    workers: int = 1,
    executor: Executor | None = None,
    alpha: float = 0.01,
    num_bins: int | None = None,
    progress: bool | None = False,
) -> SBCResult:
    """Run SBC: num_replicates simulate/fit pairs, each ranking the true parameters among num_draws draws.

    thin: keep every thin-th of the fit's draws, the last num_draws of them (ending at the final draw);
    None uses stride num // num_draws, for num draws returned, so the kept draws span them all. Thin MCMC
    draws to roughly independent ones (stride about num / ESS), or autocorrelation alone skews the ranks.
    workers: > 1 runs replicates in a process pool of that size (``ppgen.executors.make_executor``);
    simulate and fit must then be picklable. executor: any ``concurrent.futures.Executor`` to submit
    replicates to instead (e.g. ``make_executor("ray")``), left open.
    Ties between a draw and the true value (discrete parameters) are broken uniformly at random, which
    keeps ranks uniform under a calibrated fit.

    Returns an SBCResult whose ``passed`` says whether the ranks look uniform at family-wise level alpha.
    """
    for name, value in (("num_replicates", num_replicates), ("num_draws", num_draws)):
        if not isinstance(value, Integral) or value < 1:
            raise SpecError(f"SBC {name} must be an integer >= 1, got {value!r}")
    if thin is not None and (not isinstance(thin, Integral) or thin < 1):
        raise SpecError(f"SBC thin must be None or an integer >= 1, got {thin!r}")
    if not isinstance(workers, Integral) or workers < 1:
        raise SpecError(f"SBC workers must be an integer >= 1, got {workers!r}")
    if executor is not None and workers != 1:
        raise SpecError("SBC: give either workers or executor, not both")

    seeds = replicate_seeds(seed, num_replicates)
    if executor is None and workers == 1:
        results = [_ranked(index, simulate, fit, num_draws, thin, s) for index, s in enumerate(_bar(seeds, progress))]
    elif executor is None:
        from ppgen.executors import make_executor

        with make_executor("process", workers) as pool:
            results = _collect(pool, simulate, fit, num_draws, thin, seeds, progress)
    else:
        results = _collect(executor, simulate, fit, num_draws, thin, seeds, progress)

    names = list(results[0])
    for index, ranks in enumerate(results):
        if list(ranks) != names:
            raise PpgenError(f"SBC replicate {index} ranked parameters {list(ranks)}, replicate 0 ranked {names}")
    ranks = {name: np.array([result[name] for result in results], dtype=np.int64) for name in names}
    return SBCResult(ranks, num_draws, alpha=alpha, num_bins=num_bins)


def _collect(executor: Executor, simulate, fit, num_draws, thin, seeds, progress) -> list[dict[str, int]]:
    """Submit every replicate, then gather results in replicate order; a failure cancels what has not begun."""
    futures: list[Future] = [executor.submit(_rank_replicate, simulate, fit, num_draws, thin, s) for s in seeds]
    results = []
    try:
        for index, future in enumerate(_bar(futures, progress)):
            results.append(_with_context(index, seeds[index], future.result))
    finally:
        for future in futures:
            future.cancel()
    return results


def _ranked(index: int, simulate, fit, num_draws, thin, seeds) -> dict[str, int]:
    return _with_context(index, seeds, lambda: _rank_replicate(simulate, fit, num_draws, thin, seeds))


def _with_context(index: int, seeds: tuple[int, int, int], call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as error:
        error.add_note(f"in SBC replicate {index} (simulate seed {seeds[0]}, fit seed {seeds[1]})")
        raise


def _bar(items: list, progress: bool | None):
    """``items`` one by one, each counted once the caller is done with it (``ppgen.progress.reporter``)."""
    with reporter("SBC replicates", len(items), "fit", progress=progress) as bar:
        for done, item in enumerate(items, 1):
            yield item
            bar.update(done)


def _rank_replicate(
    simulate: Simulate, fit: Fit, num_draws: int, thin: int | None, seeds: tuple[int, int, int]
) -> dict[str, int]:
    """One replicate: simulate, fit, thin and rank; scalar name -> rank in {0..num_draws} (module-level, so
    that process pools can pickle it)."""
    simulate_seed, fit_seed, tie_seed = seeds
    parameters, data = simulate(simulate_seed)
    draws = fit(data, fit_seed)
    tie_breaker = np.random.default_rng(tie_seed)
    ranks = {}
    for name, value in parameters.items():
        value = np.asarray(value)
        if name not in draws:
            raise SpecError(f"SBC: fit returned no draws of parameter {name!r} (it returned {sorted(draws)})")
        samples = np.asarray(draws[name])
        if samples.shape[1:] != value.shape:
            raise SpecError(f"SBC: draws of {name!r} have shape {samples.shape}, expected [num_draws, *{value.shape}]")
        kept = _thinned(samples, num_draws, thin, name)
        if not (np.isfinite(value).all() and np.isfinite(kept).all()):
            raise PpgenError(f"SBC: non-finite true value or draws of parameter {name!r}")
        below, ties = (kept < value).sum(0), (kept == value).sum(0)
        rank = below + tie_breaker.integers(0, ties + 1)
        for index in np.ndindex(value.shape):
            ranks[_scalar_name(name, index)] = int(rank[index])
    return ranks


def _thinned(samples: np.ndarray, num_draws: int, thin: int | None, name: str) -> np.ndarray:
    """The last num_draws of every stride-th draw, ending at the final draw: [num_draws, *S]."""
    available = len(samples)
    stride = thin or max(1, available // num_draws)
    first = available - 1 - stride * (num_draws - 1)
    if first < 0:
        raise SpecError(
            f"SBC: fit returned {available} draws of {name!r}, fewer than num_draws={num_draws} at stride {stride}"
        )
    return samples[first::stride]


def _scalar_name(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(map(str, index))}]" if index else name
