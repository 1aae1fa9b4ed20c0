"""Formula models through ``ppgen run`` against Bambi (NUTS through PyMC) on the same formula, family, data and
priors: the README's formula validation (issue 15).

Each case writes its data to a CSV and a formula spec that reads it, runs ``python -m ppgen run SPEC`` in a
subprocess (as a user does; the run folder's ``posterior.nc`` is read back), and fits the same formula with
``bambi.Model(...).fit()`` on the same CSV. The priors are ppgen's defaults, written explicitly into Bambi's: the
bench expands the spec (``ppgen.spec.formula.FormulaModel``) and gives Bambi each term's prior as ppgen generated
it (Bambi's own defaults differ: a gaussian intercept's scale, and most priors of the bernoulli family; each case
prints both). Bambi's group-specific effects are independent (it has no correlated, LKJ, prior), so the spec fixes
ppgen's correlation factor ``L_<g>`` to the identity (``priors = { "cor|g" = { value = "eye(2)" } }``) where a
factor has several effects.

The posteriors are compared per scalar parameter by ``ppgen.evaluate.reference.compare_to_reference``, with
Bambi's draws as the reference: ppgen's ``b_Intercept`` (the intercept at the predictors' zero) against Bambi's
``Intercept`` (Bambi uncentres it after sampling), ``b_<term>`` against ``<term>``, ``sd_<g>__<effect>`` against
``<effect>|<g>_sigma``, ``r_<g>[level, effect]`` against ``<effect>|<g>[level]``, and the family's auxiliary
parameters by name. z is |difference| / sqrt(MCSE_ppgen^2 + MCSE_Bambi^2) for the mean and for the sd (ArviZ's
MCSEs, Vehtari et al. 2021; for a marginal whose tail is too heavy for an sd's MCSE, the median and IQR / 1.349
instead, as ``compare_to_reference`` does). The verdict is "agree" when every parameter's z, of mean and of sd,
is at most 4: under agreement z is about |N(0, 1)|, and P(|N(0, 1)| > 4) = 6e-5 per figure, so a table of ~60
figures has a false alarm below 0.5%. Two controls show that the comparison can fail: ``--bambi-defaults`` gives
Bambi its own default priors and ``--lkj`` keeps ppgen's default LKJ(2) correlation of a factor's effects, which
Bambi's independent effects lack.

Wall seconds: ppgen's is the whole ``ppgen run`` subprocess (Python start-up, imports, JAX compilation, sampling,
and the run's checks: summary, posterior predictive, LOO, sensitivity, plots); Bambi's is ``bambi.Model`` +
``fit`` in this process (modules imported already, PyTensor's compilation included; its cache under
~/.pytensor makes a second run faster). "sampling s" is each side's own figure (ppgen's metrics.json "seconds",
warmup and draws with JAX compilation; PyMC's ``sampling_time``). Both sides run chains on every core: ppgen's
chains on one JAX device per core, Bambi's in one process per core (``cores``; PyMC's default takes half the CPUs
for hyperthreads).

Needs Bambi: ``pip install -e ".[bench]"`` (bambi==0.16.0, which adds only bambi and graphviz to ppgen's
packages; Bambi 0.17.2 pins formulae < 0.7, so would run both sides on formulae 0.6, and brings ArviZ 1's arviz-base
and arviz-plots), then

    python bench/bambi_formulas.py [--chains 4] [--warmup 1000] [--draws 1000] [--seed 1]
                                              [--only kidiq_interaction] [--out DIR] [--table FILE]
                                              [--bambi-defaults] [--lkj]
"""

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ppgen.evaluate import inference_data
from ppgen.evaluate.reference import Reference, compare_to_reference
from ppgen.spec.formula import FormulaModel, _identifier

REPO = Path(__file__).resolve().parents[1]
Z_LIMIT = 4.0
# ppgen's distribution -> PyMC's names of its arguments, in ppgen's order (ppgen's Gamma is (concentration, rate)).
PYMC_ARGUMENTS = {
    "Normal": ("mu", "sigma"),
    "HalfNormal": ("sigma",),
    "HalfStudentT": ("nu", "sigma"),
    "HalfCauchy": ("beta",),
    "Gamma": ("alpha", "beta"),
}


def kidiq_frame() -> pd.DataFrame:
    """posteriordb's kidiq data (Gelman & Hill 2007, ch. 3), as ``models/kidiq_formula.toml`` reads it."""
    columns = json.loads((REPO / "models" / "posteriordb" / "data" / "kidiq.json").read_text())
    return pd.DataFrame({name: columns[name] for name in ("kid_score", "mom_hs", "mom_iq")})


def trials_frame() -> pd.DataFrame:
    """The README walkthrough's trial (examples/data/make_trials.py): 480 patients in 12 clinics."""
    return pd.read_csv(REPO / "examples" / "data" / "trials.csv")


def counts_frame(seed: int = 15, groups: int = 10, per_group: int = 24) -> pd.DataFrame:
    """Simulated counts: count ~ Poisson(exp(0.8 + 0.4 x + u_g)), x ~ N(0, 1), u_g ~ N(0, 0.5), 10 groups of 24."""
    rng = np.random.default_rng(seed)
    effects = rng.normal(0.0, 0.5, groups)
    group = np.repeat(np.arange(groups), per_group)
    x = rng.normal(size=group.size).round(3)
    count = rng.poisson(np.exp(0.8 + 0.4 * x + effects[group]))
    return pd.DataFrame({"count": count, "x": x, "g": [f"g{level:02d}" for level in group]})


@dataclass(frozen=True)
class Case:
    """One formula model: its formula and family, its data, and the priors ppgen's spec sets (beyond defaults)."""

    name: str
    formula: str
    family: str
    frame: Callable[[], pd.DataFrame]
    priors: dict = field(default_factory=dict)


CASES = (
    Case("kidiq_interaction", "kid_score ~ mom_hs * mom_iq", "gaussian", kidiq_frame),
    Case(
        "trials_slopes",
        "recovered ~ treatment + age + (1 + treatment | clinic)",
        "bernoulli",
        trials_frame,
        {"cor|clinic": {"value": "eye(2)"}},
    ),
    Case("counts_groups", "count ~ x + (1 | g)", "poisson", counts_frame),
)


def write_spec(case: Case, folder: Path) -> Path:
    """The case's data as ``<name>.csv`` and its formula spec ``<name>.toml`` in ``folder``; returns the spec."""
    case.frame().to_csv(folder / f"{case.name}.csv", index=False)
    priors = "".join(f"\n{json.dumps(term)} = {_toml(value)}" for term, value in case.priors.items())
    spec = folder / f"{case.name}.toml"
    spec.write_text(
        f'[model]\nname = "{case.name}"\ndata_file = "{case.name}.csv"\nformula = "{case.formula}"\n'
        f'family = "{case.family}"\n[model.priors]{priors}\n'
    )
    return spec


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + " }"
    return json.dumps(value)


@dataclass(frozen=True)
class Fit:
    """One side's fit: draws (ppgen's variable names -> [chain, draw, ...]), wall and sampling seconds, and the
    divergent transitions after warmup."""

    draws: dict
    wall: float
    sampling: float
    divergences: int

    def max_rhat(self, variables) -> float:
        """The largest rank-normalized split R-hat over the entries of ``variables``."""
        return max(float(np.max(inference_data.rhat(self.draws[name]))) for name in variables)


def run_ppgen(spec: Path, folder: Path, options: argparse.Namespace) -> Fit:
    """``ppgen run SPEC --out folder`` in a subprocess, its posterior read back from the run folder; wall seconds
    are the subprocess's, sampling seconds the run's."""
    settings = {
        "num_chains": options.chains,
        "num_warmup": options.warmup,
        "num_samples": options.draws,
        "seed": options.seed,
    }
    command = [sys.executable, "-m", "ppgen", "run", str(spec), "--out", str(folder), "--quiet"]
    command += [item for key, value in settings.items() for item in ("--set", f"inference.{key}={value}")]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"ppgen run {spec} exited {finished.returncode}: {finished.stderr.strip()[-2000:]}")
    results = inference_data.load(folder / "posterior.nc")
    posterior = inference_data.get_group(results, "posterior")
    diverging = inference_data.get_group(results, "sample_stats")["diverging"]
    return Fit(
        draws={name: np.asarray(values) for name, values in posterior.data_vars.items()},
        wall=wall,
        sampling=json.loads((folder / "metrics.json").read_text())["seconds"],
        divergences=int(np.sum(diverging)),
    )


def parse_prior(entry, where: str):
    """A ppgen prior string ("Normal(0, 2.5)") as a ``bambi.Prior`` with the same arguments."""
    import bambi

    match = re.fullmatch(r"(\w+)\((.*)\)", entry) if isinstance(entry, str) else None
    if match is None or match[1] not in PYMC_ARGUMENTS:
        raise SystemExit(f"{where}: the bench cannot give Bambi ppgen's prior {entry!r}")
    values = [float(value) for value in match[2].split(",")]
    return bambi.Prior(match[1], **dict(zip(PYMC_ARGUMENTS[match[1]], values, strict=True)))


@dataclass(frozen=True)
class TermMap:
    """ppgen's prior for each Bambi term, and which Bambi draws make up each ppgen variable."""

    priors: dict  # Bambi term -> bambi.Prior
    ppgen_priors: dict  # Bambi term -> ppgen's prior (text)
    variables: dict  # ppgen variable -> Bambi variables (several: the effects of one factor, stacked last)
    levels: dict  # grouping factor -> its levels in ppgen's order


def map_terms(spec: Path, bambi_model) -> TermMap:
    """Bambi's terms of ``bambi_model`` named as ppgen names the variables of ``spec``, with ppgen's priors."""
    import bambi

    tables = tomllib.loads(spec.read_text())
    formula = FormulaModel(tables, spec.parent, str(spec))
    generated = formula.tables()["variables"]
    component = bambi_model.components[bambi_model.family.likelihood.parent]
    priors, variables = {}, {}
    if component.intercept_term is not None:
        priors["Intercept"] = generated["Intercept"]
        variables["b_Intercept"] = ["Intercept"]
    for term in component.common_terms:
        priors[term] = generated[f"b_{_identifier(term)}"]
        variables[f"b_{_identifier(term)}"] = [term]
    for term in component.group_specific_terms:
        effect, factor = term.split("|", 1)
        sd = f"sd_{_identifier(factor)}__{'Intercept' if effect == '1' else _identifier(effect)}"
        priors[term] = generated[sd]
        variables[sd] = [f"{term}_sigma"]
        variables.setdefault(f"r_{_identifier(factor)}", []).append(term)
    for parameter in bambi_model.family.likelihood.params:
        if parameter != bambi_model.family.likelihood.parent:
            priors[parameter] = generated[parameter]
            variables[parameter] = [parameter]
    bambi_priors = {term: parse_prior(entry, f"{spec}: {term}") for term, entry in priors.items()}
    for term in component.group_specific_terms:
        bambi_priors[term] = bambi.Prior("Normal", mu=0.0, sigma=bambi_priors[term])
    group = formula.design.group
    levels = {name.split("|", 1)[1]: list(term.groups) for name, term in group.terms.items()} if group else {}
    return TermMap(bambi_priors, priors, variables, levels)


def bambi_default_priors(bambi_model) -> dict:
    """Bambi's own default prior of each term (and auxiliary parameter), as text."""
    component = bambi_model.components[bambi_model.family.likelihood.parent]
    terms = {"Intercept": component.intercept_term} if component.intercept_term is not None else {}
    terms |= component.common_terms | component.group_specific_terms
    defaults = {name: str(term.prior) for name, term in terms.items()}
    for parameter, other in bambi_model.components.items():
        if parameter != bambi_model.family.likelihood.parent:
            defaults[parameter] = str(other.prior)
    return defaults


def run_bambi(case: Case, spec: Path, options: argparse.Namespace) -> tuple[Fit, TermMap, dict]:
    """Bambi's fit of the case with ppgen's priors (its draws by ppgen's variable names; wall seconds of model and
    fit, PyMC's sampling seconds), the mapping of names and priors, and Bambi's own default priors."""
    import bambi

    for library in ("pymc", "bambi"):  # their progress notes; set after their import, which sets their level
        logging.getLogger(library).setLevel(logging.ERROR)
    frame = pd.read_csv(spec.with_suffix(".csv"))
    bare = bambi.Model(case.formula, frame, family=case.family)
    defaults, mapping = bambi_default_priors(bare), map_terms(spec, bare)
    started = time.perf_counter()
    priors = None if options.bambi_defaults else mapping.priors
    model = bambi.Model(case.formula, frame, family=case.family, priors=priors)
    fitted = model.fit(
        draws=options.draws,
        tune=options.warmup,
        chains=options.chains,
        cores=min(options.chains, os.cpu_count() or 1),
        random_seed=options.seed,
        progressbar=False,
    )
    wall = time.perf_counter() - started
    posterior = fitted.posterior
    draws = {}
    for variable, names in mapping.variables.items():
        arrays = [_squeezed(posterior[name], mapping.levels) for name in names]
        draws[variable] = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=-1)
    divergences = int(fitted.sample_stats["diverging"].sum())
    return Fit(draws, wall, float(posterior.attrs["sampling_time"]), divergences), mapping, defaults


def _squeezed(values, levels: dict) -> np.ndarray:
    """A Bambi variable as [chain, draw, level] (group effects, levels in ppgen's order) or [chain, draw]: its
    one-entry dims (a term's single contrast column) dropped."""
    values = values.squeeze([dim for dim in values.dims if values.sizes[dim] == 1 and dim not in ("chain", "draw")])
    factor_dims = [dim for dim in values.dims if dim.endswith("__factor_dim")]
    if factor_dims:
        factor = factor_dims[0].removesuffix("__factor_dim")
        values = values.sel({factor_dims[0]: levels[factor]}).transpose("chain", "draw", factor_dims[0])
    if values.ndim > 2 + len(factor_dims):
        raise SystemExit(f"{values.name}: a term of several columns; the bench maps single-column terms only")
    return np.asarray(values, dtype=np.float64)


def compare(name: str, ppgen_draws: dict, bambi_draws: dict) -> pd.DataFrame:
    """The comparison table (``compare_to_reference``'s columns), Bambi's draws as the reference."""
    chains = next(iter(bambi_draws.values())).shape[0]
    reference = Reference(
        name=name,
        draws={key: value.reshape(-1, *value.shape[2:]) for key, value in bambi_draws.items()},
        num_chains=chains,
        mcse_mean={key: inference_data.mcse(value, method="mean") for key, value in bambi_draws.items()},
    )
    comparison = compare_to_reference(ppgen_draws, reference)
    if comparison.missing:
        raise SystemExit(f"{name}: ppgen's posterior lacks {', '.join(comparison.missing)}")
    return comparison.table


def bambi_label(row: str, mapping: TermMap) -> str:
    """Bambi's name of a row of the table: ``r_clinic[3,1]`` -> ``treatment|clinic[clinic04]``."""
    variable, _, index = row.partition("[")
    names = mapping.variables[variable]
    if not index:
        return names[0]
    positions = [int(position) for position in index.rstrip("]").split(",")]
    term = names[positions[1]] if len(positions) > 1 else names[0]
    return f"{term}[{mapping.levels[term.split('|', 1)[1]][positions[0]]}]"


def markdown(case: Case, table: pd.DataFrame, mapping: TermMap, defaults: dict, fits: dict) -> str:
    """The case's tables: priors, then per parameter the two posteriors and z, then the verdict and timings."""
    lines = [f"### {case.name}: `{case.formula}`, {case.family}", "", "| term | prior (both) | Bambi's default |"]
    lines.append("|---|---|---|")
    for term, prior in mapping.ppgen_priors.items():
        both = f"Normal(0, {prior})" if "|" in term else prior  # a group term's prior is its sd's
        lines.append(f"| {_code(term)} | {both} | {defaults[term]} |")
    lines += ["", "| ppgen | Bambi | ppgen mean | ppgen sd | Bambi mean | Bambi sd | z mean | z sd |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for row, values in table.iterrows():
        lines.append(
            f"| {_code(row)} | {_code(bambi_label(row, mapping))} | {values['mean']:.4g} | {values['sd']:.3g} |"
            f" {values['ref_mean']:.4g} | {values['ref_sd']:.3g} | {values['mean_z']:.2f} | {values['sd_z']:.2f} |"
        )
    worst = float(table[["mean_z", "sd_z"]].to_numpy().max())
    sides = "; ".join(
        f"{side}: wall {fit.wall:.1f} s (sampling {fit.sampling:.1f} s), max R-hat"
        f" {fit.max_rhat(mapping.variables):.3f}, {fit.divergences} divergences"
        for side, fit in fits.items()
    )
    lines += [
        "",
        f"**{_verdict(worst)}** (max z {worst:.2f} over {len(table)} parameters; agree when <= {Z_LIMIT:g})."
        f" {sides}. Statistics: {_statistics(table)}.",
    ]
    return "\n".join(lines)


def _verdict(worst_z: float) -> str:
    return "agree" if worst_z <= Z_LIMIT else "DISAGREE"


def _code(text: str) -> str:
    """Markdown code in a table cell: its pipes escaped (``1|g``)."""
    return "`" + text.replace("|", "\\|") + "`"


def _statistics(table: pd.DataFrame) -> str:
    robust = table.index[table["statistics"] != "mean, sd"].tolist()
    return "mean and sd" + (f"; median and IQR/1.349 (heavy tail) for {', '.join(robust)}" if robust else "")


def summary_row(case: Case, table: pd.DataFrame, mapping: TermMap, fits: dict) -> str:
    """One row of the summary table: the case, its verdict, and per side wall (sampling) seconds, R-hat and
    divergences."""
    worst = float(table[["mean_z", "sd_z"]].to_numpy().max())
    ppgen, bambi = fits.values()
    return (
        f"| {case.name} | {_code(case.formula)} | {case.family} | {len(table)} | {worst:.2f} | {_verdict(worst)} |"
        f" {ppgen.wall:.1f} ({ppgen.sampling:.1f}) | {bambi.wall:.1f} ({bambi.sampling:.1f}) |"
        f" {ppgen.max_rhat(mapping.variables):.3f} / {bambi.max_rhat(mapping.variables):.3f} |"
        f" {ppgen.divergences} / {bambi.divergences} |"
    )


def _controls(options: argparse.Namespace) -> str:
    controls = {"bambi_defaults": "Bambi's own default priors", "lkj": "ppgen's LKJ(2) correlation"}
    chosen = [text for key, text in controls.items() if getattr(options, key)]
    return f"; controls: {', '.join(chosen)}" if chosen else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="case names (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="folder for specs, data and run folders")
    parser.add_argument("--table", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--bambi-defaults", action="store_true", help="control: Bambi's own default priors")
    parser.add_argument("--lkj", action="store_true", help="control: ppgen's LKJ(2) correlation of group effects")
    options = parser.parse_args()
    warnings.filterwarnings("ignore")  # PyTensor's BLAS advice, Bambi's and ArviZ's notices
    cases = [case for case in CASES if options.only is None or case.name in options.only]
    if options.lkj:
        cases = [
            replace(case, priors={k: v for k, v in case.priors.items() if not k.startswith("cor|")}) for case in cases
        ]
    with tempfile.TemporaryDirectory() as temporary:
        out = options.out or Path(temporary)
        out.mkdir(parents=True, exist_ok=True)
        sections, rows = [], []
        for case in cases:
            spec = write_spec(case, out)
            ppgen = run_ppgen(spec, out / f"run-{case.name}", options)
            bambi, mapping, defaults = run_bambi(case, spec, options)
            table = compare(case.name, ppgen.draws, bambi.draws)
            fits = {"ppgen": ppgen, "Bambi": bambi}
            sections.append(markdown(case, table, mapping, defaults, fits))
            rows.append(summary_row(case, table, mapping, fits))
            print(sections[-1] + "\n", flush=True)
    header = (
        f"{options.chains} chains x {options.warmup} warmup + {options.draws} draws, seed {options.seed}"
        f"{_controls(options)}\n\n"
        "| case | formula | family | parameters | max z | verdict | ppgen wall s (sampling) |"
        " Bambi wall s (sampling) | max R-hat ppgen / Bambi | divergences ppgen / Bambi |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    text = "\n".join([header, *rows]) + "\n\n" + "\n\n".join(sections) + "\n"
    print("\n".join([header, *rows]))
    if options.table is not None:
        options.table.write_text(text)


if __name__ == "__main__":
    main()
