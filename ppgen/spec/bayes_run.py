"""A declarative Bayesian run spec: the compiled model, how to fit and check it, and the tables that reproduce it.

``ppgen.spec.load.load_spec`` returns a ``BayesRunSpec`` for a spec of ``kind = "bayes"`` (one with
``[variables]``), and a ``RunSpec`` for a generative model.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from ppgen.errors import SpecError
from ppgen.models.bayes import BayesModel, bayes_model_from_tables
from ppgen.spec.bayes_inference import BayesInferenceSpec
from ppgen.spec.memory import format_bytes, format_count, memory_budget
from ppgen.suggest import suggest

__all__ = ["BayesRunSpec", "MODEL_TABLES", "INFERENCE_TABLES", "bayes_run_spec", "dump_bayes_spec"]

MODEL_TABLES = ("model", "data", "plates", "variables")
INFERENCE_TABLES = ("inference", "guide", "evaluation")  # what an inference spec file may replace


@dataclass(frozen=True)
class BayesRunSpec:
    """What ``ppgen run`` needs for a declarative model.

    Attributes:
        model: the compiled model with its data.
        settings: the validated ``[inference]``, ``[guide]`` and ``[evaluation]`` tables.
        tables: the model's own tables as read (``[model]``, ``[data]``, ``[plates]``, ``[variables]``).
        source: the spec file, against which a relative ``model.data_file`` is resolved.
    """

    model: BayesModel
    settings: BayesInferenceSpec
    tables: dict
    source: Path


def bayes_run_spec(tree: dict, sources: dict[str, str], path: str | Path) -> BayesRunSpec:
    """Check the merged tables of a Bayesian spec file (inference file and overrides applied) and compile them."""
    from ppgen.spec.load import validate_tree

    path = Path(path)
    unknown = [table for table in tree if table not in MODEL_TABLES + INFERENCE_TABLES]
    if unknown:
        raise SpecError(
            f"{sources.get(unknown[0], path)}: [{unknown[0]}] is not a table of a declarative model spec"
            f"{suggest(unknown[0], MODEL_TABLES + INFERENCE_TABLES)}"
        )
    tables = {table: tree[table] for table in MODEL_TABLES if table in tree}
    settings = validate_tree(
        BayesInferenceSpec, {t: tree[t] for t in INFERENCE_TABLES if t in tree}, sources, str(path)
    )
    backend = getattr(settings.inference, "backend", "pyro")
    if backend == "numpyro":  # JAX grants devices only before its first computation, the model's check run
        from ppgen.infer.numpyro_sampler import request_cpu_devices

        request_cpu_devices(getattr(settings.inference, "num_chains", 1))
    model = bayes_model_from_tables(tables, base_dir=path.parent, source=str(path), backend=backend)
    _check_draws_fit(model, settings, sources.get("inference", str(path)))
    return BayesRunSpec(model=model, settings=settings, tables=tables, source=path)


def _check_draws_fit(model: BayesModel, settings: BayesInferenceSpec, source: str) -> None:
    """SpecError before inference when the draws alone would not fit the memory budget: each draw holds the latent
    and deterministic values, and a predictive draw and a log-likelihood per observed number."""
    inference, sizes = settings.inference, model.value_sizes
    draws = inference.num_samples * getattr(inference, "num_chains", 1)
    per_draw = sum(sizes.get(name, 0) for name in (*model.latent_names, *model.deterministic_names))
    per_draw += 2 * sum(sizes[name] for name in model.observed)
    budget, needed = memory_budget(), 8 * draws * per_draw
    if budget is not None and needed > budget:
        raise SpecError(
            f"{source}: {format_count(draws)} draws of model {model.name!r} would take {format_bytes(needed)} of memory"
            f" ({format_count(per_draw)} numbers each: the parameters, and a predictive draw and a log-likelihood per"
            f" observation), more than the {format_bytes(budget)} a run may plan for (half of the memory available);"
            " draw fewer (inference.num_samples, inference.num_chains)"
        )


def dump_bayes_spec(spec: BayesRunSpec, folder: str | Path) -> str:
    """The spec as TOML text that re-runs from ``folder``: every setting written out (defaults included), and a
    ``model.data_file`` copied into ``folder`` and named relative to it, so the folder is self-contained."""
    folder = Path(folder)
    tables = {name: dict(table) if isinstance(table, dict) else table for name, table in spec.tables.items()}
    tables["model"] = {**tables.get("model", {}), "name": spec.model.name}  # not the folder's spec.toml's stem
    data_file = tables.get("model", {}).get("data_file")
    if isinstance(data_file, str):
        original = (spec.source.parent / Path(data_file).expanduser()).resolve()
        copy = folder / f"data{original.suffix}"
        if original != copy.resolve():
            shutil.copyfile(original, copy)
        tables["model"]["data_file"] = copy.name
    settings = spec.settings.model_dump(mode="json", exclude_none=True)
    if spec.settings.guide == type(spec.settings.guide)():  # the default, which only SVI reads
        del settings["guide"]
    return tomli_w.dumps({**_plain(tables), **settings})


def _plain(tree):
    """A TOML-writable copy of parsed tables (numpy arrays as lists)."""
    if isinstance(tree, dict):
        return {key: _plain(value) for key, value in tree.items()}
    if hasattr(tree, "tolist"):
        return tree.tolist()
    return tree
