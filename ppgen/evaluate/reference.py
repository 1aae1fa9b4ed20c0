"""Reference posteriors from posteriordb (Magnusson et al. 2024, arXiv:2407.04967), and how far a sampler's
draws are from them.

A posteriordb folder (``<posterior_name>/``, see the shared data's INDEX.md) holds ``reference_draws.json``
(a list of chains, each ``{"name[i,j]": [draws]}`` with Stan's 1-based indices), ``reference_mean_value.json``
(``names``, ``mean_value``, ``mcse_mean``). Stan's ``beta[1]`` is ``beta[0]`` here; a variable's entries are
gathered into one array [draws, ...] (chains one after another). A reference variable named as a Python keyword,
which a spec's expressions cannot name (``lambda``), is read from the posterior's PEP 8 spelling (``lambda_``).

A comparison reports, per scalar parameter, the error of the posterior mean in reference sds and the ratio of
posterior sds, with Monte Carlo standard errors of both sides (ArviZ's, Vehtari et al. 2021, arXiv:1903.08008;
the sd's accounts for the marginal's kurtosis), so that an error can be judged as |error| / MCSE. A posterior
agrees with its reference (``ReferenceComparison.agrees``) when every reference parameter is compared, each mean
is within ``MEAN_ERROR_LIMIT`` reference sds and each sd ratio within ``SD_RATIO_LIMITS``.

Heavy tails. A marginal whose tail falls like x^(-1/k) has moments of order below 1/k only. The sample sd has a
Monte Carlo error only when the fourth moment exists (k < 1/4); beyond that a 10% sd criterion cannot be decided
from thousands of draws (one_comp_mm_elim_abs's K_m: its posterior tail falls like K_m^-3, so its sd is infinite,
and the reference's own ten chains give sds from 4.2 to 11.1). So a parameter whose reference draws have a tail
shape ``tail_k`` >= ``HEAVY_TAIL_K`` (PSIS's generalized Pareto fit to each tail about the median, Vehtari et
al. 2024, arXiv:1507.02646) is compared by quantiles, which always exist: its "mean" columns hold the median and
its "sd" columns the interquartile range over a normal's (IQR / 1.349, an sd for a normal marginal), with their
own MCSEs; ``statistics`` says which.
"""

import json
import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ppgen.errors import DataError, PpgenError
from ppgen.evaluate import inference_data
from ppgen.evaluate.elpd import psis

__all__ = [
    "Reference",
    "ReferenceComparison",
    "load_reference",
    "compare_to_reference",
    "COMPARISON_COLUMNS",
    "MEAN_ERROR_LIMIT",
    "SD_RATIO_LIMITS",
    "HEAVY_TAIL_K",
    "tail_shape",
    "posterior_name",
]

DRAWS_FILE, MEAN_FILE = "reference_draws.json", "reference_mean_value.json"
COMPARISON_COLUMNS = (
    "mean",
    "ref_mean",
    "sd",
    "ref_sd",
    "mean_error",  # |mean - ref_mean| / ref_sd
    "sd_ratio",  # sd / ref_sd
    "mcse_mean",
    "ref_mcse_mean",
    "mcse_sd",
    "ref_mcse_sd",
    "mean_z",  # |mean - ref_mean| / sqrt(mcse_mean^2 + ref_mcse_mean^2)
    "sd_z",  # |sd - ref_sd| / sqrt(mcse_sd^2 + ref_mcse_sd^2)
    "ess_bulk",
    "tail_k",  # the reference marginal's Pareto tail shape (``tail_shape``)
    "statistics",  # "mean, sd", or "median, IQR/1.349" where tail_k >= HEAVY_TAIL_K
)
# The agreement criterion of ppgen's posteriordb validation: |mean - ref mean| <= 0.1 ref sd, sd / ref sd in
# [0.9, 1.1], for every reference parameter.
MEAN_ERROR_LIMIT = 0.1
SD_RATIO_LIMITS = (0.9, 1.1)
HEAVY_TAIL_K = 0.25  # from here on the fourth moment may not exist: compare quantiles
MIN_TAIL_DRAWS = 2000  # 95 draws in each tail's fit, a standard error of about 0.1 in k
IQR_PER_SD = 1.3489795  # a normal's interquartile range in sds, 2 * Phi^-1(3/4)
_STAN_NAME = re.compile(r"^([A-Za-z_]\w*)(?:\[(\d+(?:,\d+)*)\])?$")


@dataclass(frozen=True)
class Reference:
    """Reference draws of one posterior.

    name: the posterior's name (its folder's name).
    draws: variable -> [num_chains * draws_per_chain, ...], chain after chain, 0-based indices.
    num_chains: chains in the draws (Stan's 10 for posteriordb).
    mcse_mean: variable -> [...], posteriordb's Monte Carlo standard error of the reference mean.
    """

    name: str
    draws: dict[str, np.ndarray]
    num_chains: int
    mcse_mean: dict[str, np.ndarray]

    def chains(self, variable: str) -> np.ndarray:
        """The draws of ``variable`` by chain, [chain, draw, ...]."""
        values = self.draws[variable]
        return values.reshape(self.num_chains, -1, *values.shape[1:])


@dataclass(frozen=True)
class ReferenceComparison:
    """Posterior draws against a reference, per scalar parameter.

    table: one row per scalar parameter (``"theta[0]"``, 0-based), the columns of ``COMPARISON_COLUMNS``.
    missing: reference variables absent from the posterior (not compared).
    """

    table: pd.DataFrame
    missing: tuple[str, ...] = ()

    @property
    def max_mean_error(self) -> float:
        """The largest |mean - ref mean| / ref sd over the parameters."""
        return float(self.table["mean_error"].max())

    @property
    def sd_ratio_range(self) -> tuple[float, float]:
        """(smallest, largest) sd / ref sd over the parameters."""
        return float(self.table["sd_ratio"].min()), float(self.table["sd_ratio"].max())

    @property
    def agrees(self) -> bool:
        """Whether every reference variable was compared, every mean error is at most ``MEAN_ERROR_LIMIT`` and
        every sd ratio within ``SD_RATIO_LIMITS`` (a NaN, from a constant draw, fails)."""
        low, high = SD_RATIO_LIMITS
        ratios = self.table["sd_ratio"]
        return not self.missing and bool(
            (self.table["mean_error"] <= MEAN_ERROR_LIMIT).all() and ((ratios >= low) & (ratios <= high)).all()
        )


def _parse_name(stan_name: str, where: str) -> tuple[str, tuple[int, ...]]:
    match = _STAN_NAME.match(stan_name)
    if match is None or (match.group(2) and min(int(i) for i in match.group(2).split(",")) < 1):
        raise DataError(f"{where}: {stan_name!r} is not a Stan parameter name like 'beta[1]'")
    variable, indices = match.groups()
    return variable, tuple(int(i) - 1 for i in indices.split(",")) if indices else ()


def _gather(columns: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """{"beta[1]": [n], "beta[2]": [n], "sigma": [n]} -> {"beta": [n, 2], "sigma": [n]}."""
    entries: dict[str, dict[tuple[int, ...], np.ndarray]] = {}
    for stan_name, values in columns.items():
        variable, index = _parse_name(stan_name, where)
        entries.setdefault(variable, {})[index] = np.asarray(values, dtype=np.float64)
    gathered = {}
    for variable, by_index in entries.items():
        ranks = {len(index) for index in by_index}
        if len(ranks) != 1:
            raise DataError(f"{where}: {variable} has entries with different numbers of indices")
        shape = tuple(np.max(list(by_index), axis=0) + 1) if ranks != {0} else ()
        if len(by_index) != int(np.prod(shape)):
            raise DataError(f"{where}: {variable} lacks entries (expected {int(np.prod(shape))}, has {len(by_index)})")
        first = next(iter(by_index.values()))
        array = np.empty(first.shape + shape)
        for index, values in by_index.items():
            array[(..., *index)] = values
        gathered[variable] = array
    return gathered


def _read_json(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: not found (is {path.parent} a posteriordb reference folder?)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def load_reference(folder: str | Path) -> Reference:
    """Read a posteriordb reference folder (``reference_draws.json`` and ``reference_mean_value.json``)."""
    folder = Path(folder)
    chains = _read_json(folder / DRAWS_FILE)
    where = str(folder / DRAWS_FILE)
    if not isinstance(chains, list) or not chains or not all(isinstance(chain, dict) for chain in chains):
        raise DataError(f"{where}: expected a list of chains, each a dict of parameter name -> draws")
    names = list(chains[0])
    if any(list(chain) != names for chain in chains):
        raise DataError(f"{where}: the chains hold different parameters")
    if not all(isinstance(values, list) for chain in chains for values in chain.values()):
        raise DataError(f"{where}: draws must be lists of numbers")
    if len({len(values) for chain in chains for values in chain.values()}) != 1:
        raise DataError(f"{where}: chains of different lengths")
    try:
        columns = {name: np.concatenate([np.asarray(chain[name], float) for chain in chains]) for name in names}
    except (TypeError, ValueError):
        raise DataError(f"{where}: draws must be lists of numbers") from None
    means = _read_json(folder / MEAN_FILE)
    mean_where = str(folder / MEAN_FILE)
    try:
        mcse = dict(zip(means["names"], means["mcse_mean"], strict=True))
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{mean_where}: expected 'names' and 'mcse_mean' lists of one length") from None
    if set(mcse) != set(names):
        raise DataError(f"{mean_where}: its names differ from those of {DRAWS_FILE}")
    return Reference(
        name=folder.name,
        draws=_gather(columns, where),
        num_chains=len(chains),
        mcse_mean=_gather({name: np.float64(mcse[name]) for name in names}, mean_where),
    )


def _scalar_names(variable: str, shape: tuple[int, ...]) -> list[str]:
    return [f"{variable}[{','.join(map(str, index))}]" if shape else variable for index in np.ndindex(*shape)]


def posterior_name(variable: str) -> str:
    """The posterior's name of a reference variable: ``lambda`` -> ``lambda_`` (a keyword), else the same."""
    return f"{variable}_" if keyword.iskeyword(variable) else variable


def tail_shape(draws: np.ndarray) -> float:
    """The heavier of the two tails of draws [n] about their median, as the Pareto shape k of the distances from
    the median on each side: a tail falling like x^(-1/k) has moments of order below 1/k; a normal's k is <= 0.
    NaN for fewer than ``MIN_TAIL_DRAWS`` draws, where the fit (to 3 sqrt(n / 2) draws a side) means little."""
    draws = np.asarray(draws, dtype=np.float64)
    if draws.size < MIN_TAIL_DRAWS:
        return np.nan
    median = np.median(draws)
    tails = (draws[draws > median] - median, median - draws[draws < median])
    return max((psis(np.log(tail))[1] for tail in tails if tail.size > 1), default=-np.inf)


def _columns(ours: np.ndarray, theirs: np.ndarray, ref_mcse_mean: np.ndarray) -> dict[str, np.ndarray]:
    """Per-variable mean and sd statistics of draws [chain, draw, ...] (ours) and reference draws [chain, draw, ...]."""
    return {
        "mean": ours.mean(axis=(0, 1)),
        "ref_mean": theirs.mean(axis=(0, 1)),
        "sd": ours.std(axis=(0, 1), ddof=1),
        "ref_sd": theirs.std(axis=(0, 1), ddof=1),
        "mcse_mean": inference_data.mcse(ours, method="mean"),
        "ref_mcse_mean": ref_mcse_mean,
        "mcse_sd": inference_data.mcse(ours, method="sd"),
        "ref_mcse_sd": inference_data.mcse(theirs, method="sd"),
        "ess_bulk": inference_data.ess(ours, method="bulk"),
    }


def _quantile_columns(ours: np.ndarray, theirs: np.ndarray) -> dict[str, np.ndarray]:
    """``_columns`` by quantiles: the median and IQR / 1.349 of both sides [chain, draw, ...], with ArviZ's
    quantile MCSEs (the IQR's from its two quartiles' as if independent: their estimates are positively correlated,
    so this over-states it)."""

    def scale(draws):
        return np.subtract(*np.quantile(draws, [0.75, 0.25], axis=(0, 1))) / IQR_PER_SD

    def mcse_scale(draws):
        quartiles = [inference_data.mcse(draws, method="quantile", prob=prob) for prob in (0.25, 0.75)]
        return np.hypot(*quartiles) / IQR_PER_SD

    return {
        "mean": np.median(ours, axis=(0, 1)),
        "ref_mean": np.median(theirs, axis=(0, 1)),
        "sd": scale(ours),
        "ref_sd": scale(theirs),
        "mcse_mean": inference_data.mcse(ours, method="median"),
        "ref_mcse_mean": inference_data.mcse(theirs, method="median"),
        "mcse_sd": mcse_scale(ours),
        "ref_mcse_sd": mcse_scale(theirs),
        "ess_bulk": inference_data.ess(ours, method="bulk"),
    }


def compare_to_reference(posterior: Mapping[str, np.ndarray], reference: Reference) -> ReferenceComparison:
    """Compare posterior draws with the reference, for every reference variable the posterior holds.

    Args:
        posterior: variable -> draws [chain, draw, ...] (latent or deterministic; other variables are ignored),
            e.g. a run's posterior group (an ``xarray.Dataset`` from ``inference_data.get_group``).
        reference: from ``load_reference``.
    Returns:
        a ``ReferenceComparison``; raises PpgenError when no variable is shared or a shape differs.
    """
    shared = [variable for variable in reference.draws if posterior_name(variable) in posterior]
    if not shared:
        raise PpgenError(
            f"{reference.name}: the posterior holds none of the reference variables {list(reference.draws)}"
        )
    rows = {}
    for variable in shared:
        ours = np.asarray(posterior[posterior_name(variable)], dtype=np.float64)
        theirs = reference.chains(variable)
        if ours.ndim < 2 or ours.shape[2:] != theirs.shape[2:]:
            raise PpgenError(
                f"{reference.name}: {variable} has shape {ours.shape[2:]} per draw, the reference {theirs.shape[2:]}"
            )
        flat = theirs.reshape(-1, int(np.prod(theirs.shape[2:], dtype=int)))
        tail_k = np.array([tail_shape(flat[:, index]) for index in range(flat.shape[1])])
        with np.errstate(invalid="ignore", divide="ignore"):  # too few or constant draws: a NaN MCSE, no warning
            columns = _columns(ours, theirs, reference.mcse_mean[variable])
            robust = _quantile_columns(ours, theirs) if (tail_k >= HEAVY_TAIL_K).any() else {}
        for index, name in enumerate(_scalar_names(variable, ours.shape[2:])):
            heavy = tail_k[index] >= HEAVY_TAIL_K
            rows[name] = {key: float(np.ravel(value)[index]) for key, value in (robust if heavy else columns).items()}
            rows[name].update(tail_k=tail_k[index], statistics="median, IQR/1.349" if heavy else "mean, sd")
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["mean_error"] = (table["mean"] - table["ref_mean"]).abs() / table["ref_sd"]
    table["sd_ratio"] = table["sd"] / table["ref_sd"]
    table["mean_z"] = (table["mean"] - table["ref_mean"]).abs() / np.hypot(table["mcse_mean"], table["ref_mcse_mean"])
    table["sd_z"] = (table["sd"] - table["ref_sd"]).abs() / np.hypot(table["mcse_sd"], table["ref_mcse_sd"])
    missing = tuple(variable for variable in reference.draws if posterior_name(variable) not in posterior)
    return ReferenceComparison(table[list(COMPARISON_COLUMNS)], missing)
