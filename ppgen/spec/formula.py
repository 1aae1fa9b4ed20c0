"""Formula models (lme4, brms and Bambi style), expanded into the declarative spec's own variables, so that every
backend, method and check applies unchanged and ``ppgen show`` prints what a formula means.

    [model]
    data_file = "radon.csv"
    formula = "log_radon ~ 1 + floor + (1 + floor | county)"
    family = "gaussian"
    priors = { floor = "Normal(0, 1)" }   # optional, by term name (or by the generated variable's name)

The formula is read by ``formulae`` (the library Bambi uses): categorical predictors are coded as contrasts
(reduced rank with an intercept), interactions as products of columns. ``data_file`` (or ``[data]``, columns as
lists) holds the columns; a CSV may hold text columns (groups, categories).

What a formula becomes (brms's names):
- ``Intercept``: the intercept of the predictors centred on their means (sampled; less correlated with the
  slopes), and ``b_Intercept``, the intercept of the predictors as given (computed);
- ``b_<term>``: each common term's coefficients (a vector for a categorical term);
- for each grouping factor ``g`` with effects ``1 + x | g``: ``sd_g__Intercept`` and ``sd_g__x`` (their
  standard deviations), ``L_g`` (the Cholesky factor of their correlation, LKJ(2)) when there are several,
  ``z_g`` (standard normal, [levels, effects]) and ``r_g`` = z_g (diag(sd) L)^T, the effects (non-centred);
- the response, observed: its family's distribution of the linear predictor (written out in it) through the
  family's link.

Default priors are weakly informative and scaled to the data, as rstanarm and Bambi do (s = sd(y) for the
gaussian and student_t families, 1 for the others; sd(x) each column's sd): Intercept ~ Normal(mean(y) or 0,
2.5 s), b ~ Normal(0, 2.5 s / sd(x)), sd ~ HalfNormal(2.5 s / sd(x)) (sd(x) = 1 for an intercept), sigma ~
HalfStudentT(4, sd(y)), nu ~ Gamma(2, 0.1), alpha and kappa ~ HalfCauchy(1).

Families and links: gaussian and student_t (identity), bernoulli and binomial (logit; ``trials`` names the
column of trials), poisson and negative_binomial (log; NB2 with shape alpha), gamma (log; shape alpha), beta
(logit; precision kappa).
"""

import functools
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.errors import DataError, SpecError
from ppgen.suggest import suggest

__all__ = ["FORMULA_KEYS", "FAMILIES", "has_formula", "expand_formula"]

FORMULA_KEYS = ("formula", "family", "priors", "trials")
FAMILIES = ("gaussian", "student_t", "bernoulli", "binomial", "poisson", "negative_binomial", "gamma", "beta")
IDENTITY_FAMILIES = ("gaussian", "student_t")
LKJ_CONCENTRATION = 2.0
PLACEHOLDER = {"gamma": 1.0, "beta": 0.5}  # a response value in the family's support (0 for the others)


def has_formula(tables: dict) -> bool:
    model = tables.get("model") if isinstance(tables, dict) else None
    return isinstance(model, dict) and "formula" in model


def _number(value: float) -> str:
    return f"{float(value):.6g}"


def _identifier(text: str) -> str:
    """A term's name as part of a variable name: ``x1:x2`` -> ``x1_x2``, ``C(c)`` -> ``C_c``."""
    name = re.sub(r"\W+", "_", text).strip("_")
    return name if name and not name[0].isdigit() else f"t_{name}"


def _frame(tables: dict, base_dir: Path, source: str):
    """The columns as a pandas DataFrame: ``model.data_file`` (CSV with text columns allowed, JSON or .npz
    columns), then ``[data]`` columns over it."""
    import pandas as pd

    from ppgen.spec.data_files import read_data_file

    model, columns = tables["model"], {}
    data_file = model.get("data_file")
    if data_file is not None:
        if not isinstance(data_file, str):
            raise SpecError(f"{source}: model.data_file must be a path string, not {data_file!r}")
        path = Path(base_dir) / data_file
        if path.suffix == ".csv" and path.is_file():
            try:
                columns.update(pd.read_csv(path).to_dict("series"))
            except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
                raise DataError(f"data file {path}: not a readable CSV file ({error})") from None
        else:
            columns.update(read_data_file(path))
    data = tables.get("data", {})
    if not isinstance(data, dict):
        raise SpecError(f"{source}: [data] must be a table, not {type(data).__name__}")
    columns.update(data)
    columns = {name: np.asarray(value) for name, value in columns.items()}
    columns = {name: value for name, value in columns.items() if value.ndim == 1}  # scalars (sizes) are no columns
    lengths = {name: len(value) for name, value in columns.items()}
    if len(set(lengths.values())) != 1:
        listed = ", ".join(f"{name} {length}" for name, length in lengths.items()) or "none"
        raise SpecError(f"{source}: a formula's data columns must have one length, got {listed}")
    return pd.DataFrame(columns)


def _design(formula: str, frame, source: str):
    """formulae's design matrices of ``frame``; a response column with missing values is filled for formulae (its
    NaNs are put back by ``FormulaModel``: the likelihood imputes them), a predictor's are an error."""
    from formulae import design_matrices

    response = formula.split("~", 1)[0].strip()
    if response in frame.columns and frame[response].isna().any():
        frame = frame.assign(**{response: frame[response].fillna(frame[response].median())})
    missing = [name for name in frame.columns if frame[name].isna().any() and re.search(rf"\b{name}\b", formula)]
    if missing:
        rows = np.flatnonzero(frame[missing[0]].isna().to_numpy())
        raise DataError(
            f"{source}: column {missing[0]!r} has missing values (rows {', '.join(map(str, rows[:5]))}"
            f"{', ...' if len(rows) > 5 else ''}); a formula's columns must be complete"
        )
    try:
        return design_matrices(formula, frame, na_action="error")
    except KeyError as error:
        name = str(error).strip("'\"")
        raise SpecError(
            f"{source}: model.formula: no column {name!r}{suggest(name, list(frame.columns))} (columns:"
            f" {', '.join(frame.columns)})"
        ) from None
    except Exception as error:  # formulae's parse and evaluation errors have no common base class
        text = str(error).strip().splitlines()
        raise SpecError(f"{source}: model.formula = {formula!r}: {text[0] if text else type(error).__name__}") from None


class _Builder:
    """The [data], [plates] and [variables] tables of one formula, in the order the model reads them."""

    def __init__(self, family: str, y: np.ndarray, priors: dict, source: str, record_mu: bool = False):
        self.family, self.source, self.record_mu = family, source, record_mu
        self.rows_source = "new data"  # where new rows came from (``FormulaModel.tables``), named by their errors
        self.scale = (float(np.nanstd(y)) or 1.0) if family in IDENTITY_FAMILIES else 1.0
        self.data: dict[str, Any] = {"N": len(y)}
        self.plates: dict[str, str] = {"obs": "N"}
        self.variables: dict[str, Any] = {}
        self.priors = dict(priors)
        self.aliases: dict[str, str] = {}  # a term's name -> its variable's name (for prior overrides)

    def prior(self, name: str, default: str, term: str | None = None) -> str:
        if term is not None:
            self.aliases[term] = name
        for key in (term, name):
            if key is not None and key in self.priors:
                return self.priors.pop(key)
        return default

    def add(self, name: str, entry: Any, observes_data: bool = False) -> None:
        if name in self.variables or (name in self.data and not observes_data):
            raise SpecError(f"{self.source}: model.formula: two terms are both named {name!r}; rename a column")
        self.variables[name] = entry


def _column_scales(columns: np.ndarray, scale: float) -> np.ndarray:
    sd = columns.std(axis=0)
    return 2.5 * scale / np.where(sd > 0, sd, 1.0)


def _common_terms(builder: _Builder, common, y: np.ndarray, rows) -> list[str]:
    """Variables of the common terms, their priors and centring from the training rows, their data from ``rows``
    (a DataFrame of new rows, or None: the training rows); the linear predictor's parts."""
    matrix = np.asarray(common.design_matrix, dtype=float)
    evaluated = matrix if rows is None else _new_rows(functools.partial(common.evaluate_new_data, rows), builder)
    evaluated = np.asarray(getattr(evaluated, "design_matrix", evaluated)).astype(float)
    has_intercept = "Intercept" in common.terms
    parts, back = [], []
    for term, columns in common.slices.items():
        if term == "Intercept":
            continue
        values = matrix[:, columns]
        means = values.mean(axis=0) if has_intercept else np.zeros(values.shape[1])
        name, data = f"b_{_identifier(term)}", f"X_{_identifier(term)}"
        scales = _column_scales(values, builder.scale)
        if values.shape[1] == 1:
            builder.data[data] = evaluated[:, columns][:, 0] - means[0]
            builder.add(name, builder.prior(name, f"Normal(0, {_number(scales[0])})", term))
            parts.append(f"{data} * {name}")
            back.append(f"{_number(means[0])} * {name}")
        else:
            builder.data[data] = evaluated[:, columns] - means
            builder.data[f"{data}_scale"] = scales
            default = {"dist": f"Normal(0, {data}_scale)", "shape": [values.shape[1]]}
            builder.add(name, _with_shape(builder.prior(name, default, term), values.shape[1]))
            parts.append(f"{data} @ {name}")
            builder.data[f"{data}_mean"] = means
            back.append(f"dot({data}_mean, {name})")
    if has_intercept:
        location = float(np.nanmean(y)) if builder.family in IDENTITY_FAMILIES else 0.0
        default = f"Normal({_number(location)}, {_number(2.5 * builder.scale)})"
        builder.add("Intercept", builder.prior("Intercept", default, "Intercept"))
        parts.insert(0, "Intercept")
        builder.add("b_Intercept", {"value": f"Intercept - ({' + '.join(back)})" if back else "Intercept"})
    return parts


def _new_rows(evaluate: Callable, builder: "_Builder"):
    """``evaluate()`` on new rows, formulae's complaint (a column or level the model needs) as a DataError naming the
    rows' source."""
    try:
        with warnings.catch_warnings():  # formulae's pandas calls for unseen levels, which it handles itself
            warnings.filterwarnings("ignore", message="Constructing a Categorical with a dtype and values")
            return evaluate()
    except (ValueError, KeyError) as error:
        text = str(error).strip("'\"").splitlines()
        complaint = text[0] if text else type(error).__name__
        if isinstance(error, KeyError):
            complaint = f"no column {complaint!r}, which the formula reads"
        raise DataError(f"{builder.rows_source}: {complaint}") from None


def _with_shape(entry: Any, size: int) -> Any:
    """A user's prior for a vector term: a distribution string gets the term's shape."""
    return {"dist": entry, "shape": [size]} if isinstance(entry, str) else entry


def _group_terms(builder: _Builder, group, rows) -> tuple[list[str], dict[str, int]]:
    """Variables of the group-specific terms, by grouping factor, their priors from the training rows and their data
    from ``rows`` (new rows, or None); the linear predictor's parts, and the number of levels each factor's rows
    hold that the training rows did not (drawn from the population by ``ppgen.fitted``)."""
    by_factor: dict[str, list] = {}
    for name, term in group.terms.items():
        by_factor.setdefault(name.split("|", 1)[1], []).append((name, term))
    parts, unseen = [], {}
    for factor, terms in by_factor.items():
        g = _identifier(factor)
        matrices = [group[name].tocsr() if hasattr(group[name], "tocsr") else group[name] for name, _ in terms]
        codes = _group_codes(terms, matrices, builder.source, factor)
        effects = [np.asarray(matrix[np.arange(len(codes)), codes]).ravel() for matrix in matrices]
        levels = len(terms[0][1].groups)
        if rows is None:
            new_codes, new_effects = codes, effects
        else:
            new_codes, added = _new_rows(functools.partial(terms[0][1].eval_new_data_group_index, rows), builder)
            if (new_codes < 0).any():
                missing = np.flatnonzero(new_codes < 0)[:5].tolist()
                raise DataError(f"{builder.rows_source}: {factor!r} is missing in rows {missing}")
            unseen[g] = len(added)
            new_effects = [
                np.broadcast_to(np.asarray(term.expr.eval_new_data(rows), float), len(rows)) for _, term in terms
            ]
        builder.plates[g] = f"N_{g}"
        builder.data[f"N_{g}"] = levels + unseen.get(g, 0)
        builder.data[f"group_{g}"] = np.asarray(new_codes, dtype=np.int64)
        sds = []
        for (name, term), values in zip(terms, effects):
            effect = "Intercept" if term.kind == "intercept" else _identifier(name.split("|", 1)[0])
            sd = f"sd_{g}__{effect}"
            spread = 1.0 if term.kind == "intercept" else float(np.std(values)) or 1.0
            builder.add(sd, builder.prior(sd, f"HalfNormal({_number(2.5 * builder.scale / spread)})", name))
            sds.append(sd)
        if len(terms) == 1:
            builder.add(f"z_{g}", {"dist": "Normal(0, 1)", "plate": g})
            builder.add(f"r_{g}", {"value": f"z_{g} * {sds[0]}", "plate": g})
            builder.data[f"Z_{g}"] = np.asarray(new_effects[0], dtype=float)
            parts.append(f"r_{g}[group_{g}] * Z_{g}")
            continue
        k = len(terms)
        cholesky = f"L_{g}"
        builder.add(
            cholesky, builder.prior(cholesky, f"LKJCholesky({k}, {_number(LKJ_CONCENTRATION)})", f"cor|{factor}")
        )
        builder.add(f"z_{g}", {"dist": "Normal(0, 1)", "plate": g, "shape": [k]})
        scaled = f"diag(stack([{', '.join(sds)}])) @ {cholesky}"
        builder.add(f"r_{g}", {"value": f"z_{g} @ transpose({scaled})", "plate": g})
        builder.data[f"Z_{g}"] = np.stack(new_effects, axis=1).astype(float)
        parts.append(f"sum(r_{g}[group_{g}] * Z_{g}, 1)")
    return parts, unseen


def _group_codes(terms: list, matrices: list, source: str, factor: str) -> np.ndarray:
    """Each row's level of a grouping factor (0-based), from the indicator columns of its intercept term, or of
    any term where each row has one entry."""
    for (_, term), matrix in zip(terms, matrices):
        dense = np.asarray(matrix.todense()) if hasattr(matrix, "todense") else np.asarray(matrix)
        nonzero = dense != 0
        if term.kind == "intercept" or nonzero.sum(axis=1).min() == 1:
            return nonzero.argmax(axis=1).astype(np.int64)
    raise SpecError(
        f"{source}: model.formula: cannot tell the levels of {factor!r} from its terms; add its intercept"
        f" (1 + ... | {factor})"
    )


def _likelihood(builder: _Builder, response: str, mu: str, y: np.ndarray, trials: np.ndarray | None) -> None:
    """The response's variable: its family's distribution of the linear predictor ``mu`` (an expression)."""
    family, sd_y = builder.family, float(np.nanstd(y)) or 1.0
    if builder.record_mu:  # predictions keep the linear predictor, a deterministic variable
        builder.add("mu", {"value": mu, "plate": "obs"})
        mu = "mu"
    obs = {"plate": "obs", "observed": response}
    aux = {
        "gaussian": [("sigma", f"HalfStudentT(4, {_number(sd_y)})")],
        "student_t": [("sigma", f"HalfStudentT(4, {_number(sd_y)})"), ("nu", "Gamma(2, 0.1)")],
        "negative_binomial": [("alpha", "HalfCauchy(1)")],
        "gamma": [("alpha", "HalfCauchy(1)")],
        "beta": [("kappa", "HalfCauchy(1)")],
    }.get(family, [])
    for name, default in aux:
        builder.add(name, builder.prior(name, default, name))
    if trials is not None:
        builder.data["trials"] = trials
    builder.add(
        response,
        {
            "dist": {
                "gaussian": f"Normal({mu}, sigma)",
                "student_t": f"StudentT(nu, {mu}, sigma)",
                "bernoulli": f"Bernoulli(logits={mu})",
                "binomial": f"Binomial(trials, logits={mu})",
                "poisson": f"Poisson(exp({mu}))",
                "negative_binomial": f"NegativeBinomial(alpha, logits={mu} - log(alpha))",  # mean exp(mu)
                "gamma": f"Gamma(alpha, alpha / exp({mu}))",
                "beta": f"Beta(sigmoid({mu}) * kappa, (1 - sigmoid({mu})) * kappa)",
            }[family],
            **obs,
        },
        observes_data=True,
    )


def expand_formula(tables: dict, base_dir: Path, source: str) -> dict:
    """The spec ``tables`` with their formula (``[model] formula``, ``family``, ``priors``, ``trials``) expanded into
    ``[data]``, ``[plates]`` and ``[variables]`` tables; the rest of ``[model]`` (name) is kept.

    Raises SpecError naming the key at fault (unknown family, column, prior key), DataError for data."""
    return FormulaModel(tables, base_dir, source).tables()


class FormulaModel:
    """A formula spec and the design its training rows give: its tables (``tables()``), on the training rows or
    on new ones (``tables(rows)``: the same priors, centring, contrasts and group levels, for predictions)."""

    def __init__(self, tables: dict, base_dir: Path, source: str):
        model = dict(tables["model"])
        for table in ("variables", "plates"):
            if table in tables:
                raise SpecError(f"{source}: [{table}]: a formula model generates its own; drop it or the formula")
        formula, family = model.pop("formula"), model.pop("family", "gaussian")
        priors, trials_column = model.pop("priors", {}), model.pop("trials", None)
        if not isinstance(formula, str) or "~" not in formula:
            raise SpecError(f"{source}: model.formula: expected 'response ~ terms', not {formula!r}")
        if family not in FAMILIES:
            raise SpecError(
                f"{source}: model.family: {family!r} is not one of {', '.join(FAMILIES)}{suggest(family, FAMILIES)}"
            )
        if not isinstance(priors, dict) or not all(isinstance(v, str | dict) for v in priors.values()):
            raise SpecError(f'{source}: model.priors: expected a table of term = "Distribution(...)"')
        if (trials_column is None) == (family == "binomial"):
            raise SpecError(f"{source}: model.trials: the binomial family, and only it, needs the column of trials")
        self.source, self.family, self.priors, self.trials_column = source, family, priors, trials_column
        self.rest = {key: value for key, value in tables.items() if key not in ("model", "data")}
        self.model_table = {key: value for key, value in model.items() if key != "data_file"}
        self.frame = _frame(tables, base_dir, source)
        self.design = _design(formula, self.frame, source)
        self.response = _identifier(self.design.response.name)
        self.y = np.asarray(self.design.response.design_matrix, dtype=float).reshape(len(self.frame), -1)[:, 0]
        response_column = formula.split("~", 1)[0].strip()
        if response_column in self.frame.columns:  # missing responses stay NaN: imputed (ppgen.models.missing)
            self.y = np.where(self.frame[response_column].isna().to_numpy(), np.nan, self.y)
        self.unseen: dict[str, int] = {}  # grouping factor -> levels of the last tables' rows not in the training

    def tables(self, rows=None, rows_source: str = "new data") -> dict:
        """The expanded tables on the training rows, or on ``rows`` (a DataFrame of new rows, read from
        ``rows_source``, which errors in them name: the response's data is then a placeholder in its support, which
        predictions leave out, and the linear predictor ``mu`` is recorded)."""
        predicting = rows is not None
        builder = _Builder(self.family, self.y, self.priors, self.source, record_mu=predicting)
        builder.rows_source = rows_source
        frame = self.frame if rows is None else rows
        builder.data["N"] = len(frame)
        y = self.y if not predicting else np.full(len(frame), PLACEHOLDER.get(self.family, 0.0))
        builder.data[self.response] = y.astype(np.int64) if np.all(y == np.round(y)) else y  # NaN is no int
        trials = None
        if self.trials_column is not None:
            if self.trials_column not in frame.columns:
                hint = suggest(self.trials_column, frame.columns)
                where = f"{rows_source}: no column" if predicting else f"{self.source}: model.trials: no column"
                raise SpecError(f"{where} {self.trials_column!r}{hint}")
            trials = frame[self.trials_column].to_numpy().astype(np.int64)
        design = self.design
        parts = _common_terms(builder, design.common, self.y, rows) if design.common is not None else []
        if design.group is not None:
            group_parts, self.unseen = _group_terms(builder, design.group, rows)
            parts += group_parts
        _likelihood(builder, self.response, " + ".join(parts) if parts else "zeros(N)", self.y, trials)
        if builder.priors:
            unknown = next(iter(builder.priors))
            known = [*builder.aliases, *builder.variables]
            raise SpecError(
                f"{self.source}: model.priors.{unknown}: no such term{suggest(unknown, known)}"
                f" (terms: {', '.join(builder.aliases)})"
            )
        return {
            **self.rest,
            "model": self.model_table,
            "data": builder.data,
            "plates": builder.plates,
            "variables": builder.variables,
        }
