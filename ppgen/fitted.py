"""A finished Bayesian run as one object: ``ppgen.load(RUN)`` gives its spec, data, draws, summary and
predictions for new data (``ppgen predict RUN --data new.csv``).

It is read from ppgen's own files only: the folder's ``spec.toml`` (and the data file copied beside it) and
``posterior.nc`` (NetCDF, no pickle). Predictions draw the posterior predictive for new rows, with each posterior
draw of the parameters: for a formula model (``ppgen.spec.formula``) the new rows are coded as the training rows
were (contrasts, centring), a group level the training rows did not have draws its effects from the population
(standard normal ``z`` for it, scaled by each draw's sds and correlation), and a category of a common predictor
that they did not have is an error naming the column and the level. A variables spec names its covariates
(``[model] covariates = ["x"]``): the new data replaces them, and a plate sized by a data key gets the new rows'
count.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.errors import DataError, PpgenError
from ppgen.evaluate import inference_data
from ppgen.run_folder import POSTERIOR_FILE, SPEC_FILE

__all__ = ["FittedModel", "load", "PREDICTIONS_FILE"]

PREDICTIONS_FILE = "predictions.nc"
INTERVAL = (0.03, 0.97)  # the central 94% interval of the predictions CSV, as the summary's HDI


def load(run: str | Path) -> "FittedModel":
    """The finished Bayesian run in folder ``run``."""
    return FittedModel(run)


class FittedModel:
    """A fitted declarative model: ``spec`` (the run's BayesRunSpec), ``data``, ``inference_data`` (ArviZ results
    of posterior.nc), ``summary()``, ``predict(data)``."""

    def __init__(self, run: str | Path):
        from ppgen.spec.bayes_run import BayesRunSpec
        from ppgen.spec.load import load_spec

        self.folder = Path(run)
        if not (self.folder / SPEC_FILE).is_file():
            raise PpgenError(f"{self.folder}: no {SPEC_FILE}: not a run folder")
        if not (self.folder / POSTERIOR_FILE).is_file():
            raise PpgenError(
                f"{self.folder}: no {POSTERIOR_FILE}: predictions need a Bayesian run's draws (a generative run is"
                " sampled with `ppgen sample`)"
            )
        self.spec = load_spec(self.folder / SPEC_FILE)
        if not isinstance(self.spec, BayesRunSpec):
            raise PpgenError(f"{self.folder}: a generative run; `ppgen sample` and `ppgen evaluate` work on it")
        self._results = None

    def __repr__(self) -> str:
        return f"FittedModel({str(self.folder)!r}, model {self.spec.model.name!r})"

    @property
    def data(self) -> dict[str, np.ndarray]:
        return dict(self.spec.model.spec.data)

    @property
    def inference_data(self) -> Any:
        if self._results is None:
            self._results = inference_data.load(self.folder / POSTERIOR_FILE)
        return self._results

    def summary(self):
        """The posterior summary table (mean, sd, HDI, MCSE, ESS, R-hat), as summary.txt shows it."""
        from ppgen.evaluate import checks

        return checks.summarize(self.inference_data)[0]

    def predict(self, data: "str | Path | Mapping | Any", seed: int = 0) -> Any:
        """Posterior predictive draws [chain, draw, row] of the response (and the linear predictor ``mu`` of a
        formula model) for new rows: a data file (.csv, .json, .npz), a DataFrame or a mapping of columns. Returns
        an xarray Dataset holding them, the rows' columns [row], and in ``attrs["unseen_levels"]`` the number of
        each grouping factor's levels that the training rows did not have."""
        import xarray as xr

        rows, rows_source = _rows(data)
        model, samples, unseen = self._model_for(rows, rows_source)
        posterior = inference_data.get_group(self.inference_data, "posterior")
        chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]
        predicted = _posterior_predictive(model, samples, seed)
        names = [name for name in ("mu", *model.spec.observed) if name in predicted]
        variables = {}
        for name in names:
            value = np.asarray(predicted[name]).reshape(chains, draws, *np.shape(predicted[name])[1:])
            dims = ["chain", "draw", *[f"{name}_dim_{i}" for i in range(value.ndim - 2)]]
            if value.ndim == 3 and value.shape[2] == len(rows):
                dims[2] = "row"
            variables[name] = (dims, value)
        for name in rows.columns:
            if name not in variables:
                values = rows[name].to_numpy()
                variables[name] = ("row", values if values.dtype.kind in "biuf" else values.astype(str))
        unseen = ", ".join(f"{factor}: {count}" for factor, count in unseen.items())
        return xr.Dataset(variables, coords={"row": np.arange(len(rows))}, attrs={"unseen_levels": unseen})

    def _model_for(self, rows, rows_source: str):
        """(the model of the new rows, the posterior draws {latent: [draw, ...]} it is run with, unseen group
        levels {factor: count})."""
        from ppgen.models.bayes import bayes_model_from_tables
        from ppgen.spec.formula import FormulaModel, has_formula

        spec, tables = self.spec, self.spec.tables
        posterior = inference_data.get_group(self.inference_data, "posterior")
        latent = [name for name in spec.model.latent_names if name in posterior]
        samples = {name: posterior[name].values.reshape(-1, *posterior[name].shape[2:]) for name in latent}
        source = str(spec.source)
        if has_formula(tables):
            formula = FormulaModel(tables, spec.source.parent, source)
            new_tables = formula.tables(rows, rows_source)
            unseen = formula.unseen
            rng = np.random.default_rng(0)
            for factor, count in unseen.items():  # a new level's effects: the population's, with each draw's sds
                z = samples[f"z_{factor}"]
                samples[f"z_{factor}"] = np.concatenate([z, rng.standard_normal((len(z), count, *z.shape[2:]))], 1)
        else:
            new_tables, unseen = _covariate_tables(tables, spec.model.spec, rows, source, rows_source), {}
        model = bayes_model_from_tables(new_tables, spec.source.parent, source, backend="numpyro")
        return model, samples, unseen


def _rows(data: Any) -> tuple[Any, str]:
    """New rows as a pandas DataFrame, from a data file, a DataFrame or a mapping of columns, and the name errors in
    them go by (the file's path, or "new data"); rows with a missing value are refused."""
    import pandas as pd

    source = str(data) if isinstance(data, str | Path) else "new data"
    if isinstance(data, pd.DataFrame):
        rows = data.reset_index(drop=True)
    elif isinstance(data, str | Path) and Path(data).suffix == ".csv":
        if not Path(data).is_file():
            raise DataError(f"data file {data} does not exist")
        try:
            rows = pd.read_csv(data)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
            raise DataError(f"data file {data}: not a readable CSV file ({error})") from None
    else:
        if isinstance(data, str | Path):
            from ppgen.spec.data_files import read_data_file

            data = read_data_file(Path(data))
        if not isinstance(data, Mapping):
            raise DataError(f"new data: expected a data file, a DataFrame or a mapping of columns, not {type(data)}")
        try:
            rows = pd.DataFrame({name: np.atleast_1d(np.asarray(value)) for name, value in data.items()})
        except ValueError as error:
            raise DataError(f"{source}: columns of different lengths ({error})") from None
    for name in rows.columns:
        missing = np.flatnonzero(rows[name].isna().to_numpy())
        if len(missing):
            raise DataError(
                f"{source}: column {name!r} has no value in rows {missing[:5].tolist()} (predictions need every value"
                " the model reads; drop or fill those rows)"
            )
    return rows, source


def _covariate_tables(tables: dict, spec, rows, source: str, rows_source: str) -> dict:
    """A variables spec's tables with its covariates (``model.covariates``) replaced by the new rows' columns, its
    observed data left out, and each plate sized by a data key that counted the training rows sized to the new."""
    covariates = tables.get("model", {}).get("covariates")
    if not covariates:
        raise PpgenError(
            f"{source}: predictions need to know which data are covariates: add `covariates = [...]` (data keys) to"
            " [model], or write the model as a formula"
        )
    missing = [name for name in covariates if name not in rows.columns]
    if missing:
        raise DataError(f"{rows_source}: no column {missing[0]!r} (the covariates are {', '.join(covariates)})")
    training_rows = len(np.atleast_1d(spec.data[covariates[0]]))
    data = dict(spec.data)
    for key in spec.observed_data_keys:  # a placeholder of the new rows' shape (its first value), left out later
        observed = np.asarray(data[key])
        data[key] = np.full((len(rows), *observed.shape[1:]), observed.flat[0])
    data.update({name: rows[name].to_numpy() for name in covariates})
    for size in spec.plates.values():
        key = size.text if hasattr(size, "text") else None
        if key in data and np.ndim(data[key]) == 0 and int(data[key]) == training_rows and key not in rows.columns:
            data[key] = len(rows)
    model = {key: value for key, value in tables.get("model", {}).items() if key not in ("data_file", "covariates")}
    return {**tables, "model": model, "data": data}


def _posterior_predictive(model, samples: dict, seed: int) -> dict[str, np.ndarray]:
    """Every site of ``model`` drawn with each posterior draw of ``samples`` (observed variables sampled)."""
    import jax
    from numpyro.infer import Predictive

    from ppgen.infer.bayes_data import float64

    with float64():
        predictive = Predictive(model.numpyro_model, posterior_samples=samples, batch_ndims=1)
        draws = predictive(jax.random.PRNGKey(seed), model.jax_data(observed=False))
    return {name: np.asarray(value) for name, value in draws.items()}


def predictions_path(run: str | Path, data: str | Path | None = None) -> Path:
    """Where ``ppgen predict`` writes when no --out is given: ``RUN/predictions-<data file's stem>.nc`` (or
    PREDICTIONS_FILE for data that is no file), numbered -2, -3, ... past files already there, so that earlier
    predictions are never replaced."""
    stem = Path(PREDICTIONS_FILE).stem + (f"-{Path(data).stem}" if data is not None else "")
    path, number = Path(run) / f"{stem}.nc", 1
    while path.exists() or path.with_suffix(".csv").exists():
        number += 1
        path = Path(run) / f"{stem}-{number}.nc"
    return path


def write_predictions(predictions, path: str | Path, *, replace: bool = False) -> tuple[Path, Path]:
    """``predict``'s Dataset as NetCDF (groups ``predictions``, the draws, and ``predictions_constant_data``, the
    rows, as ArviZ reads them; a folder gets PREDICTIONS_FILE) and a CSV beside it of each row's columns and each
    predicted variable's mean, sd and central 94% interval; returns both paths. Files already there are
    replaced only with ``replace``."""
    import os

    from ppgen.files import write_text_atomic

    path = Path(path)
    path = path / PREDICTIONS_FILE if path.is_dir() else path
    if not path.parent.is_dir():
        raise DataError(f"{path}: its folder does not exist")
    existing = [file for file in (path, path.with_suffix(".csv")) if file.exists()]
    if existing and not replace:
        raise DataError(f"{existing[0]} exists: pass --force to replace it, or --out elsewhere")
    drawn = [name for name, variable in predictions.data_vars.items() if "chain" in variable.dims]
    temporary = path.with_name(path.name + ".tmp")
    predictions[drawn].to_netcdf(temporary, group="predictions", mode="w")
    predictions.drop_vars(drawn).to_netcdf(temporary, group="predictions_constant_data", mode="a")
    os.replace(temporary, path)
    table = predictions.drop_vars(drawn).to_dataframe()
    for name in drawn:
        variable = predictions[name]
        if variable.dims != ("chain", "draw", "row"):
            continue
        values = variable.values.reshape(-1, variable.shape[-1])
        low, high = np.quantile(values, INTERVAL, axis=0)
        table[f"{name}_mean"], table[f"{name}_sd"] = values.mean(0), values.std(0)
        table[f"{name}_{INTERVAL[0]:.0%}"], table[f"{name}_{INTERVAL[1]:.0%}"] = low, high
    csv = path.with_suffix(".csv")
    write_text_atomic(csv, table.to_csv())
    return path, csv
