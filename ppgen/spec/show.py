"""``ppgen show SPEC``: the model a spec describes, as ppgen reads it. For a declarative model, its data (names,
shapes, scalars' values), plates and variables, a formula expanded into the variables it means; for a generative
model, the resolved spec with every default written out."""

from pathlib import Path

import numpy as np
import tomli_w

__all__ = ["show_spec"]


def show_spec(path: str | Path, overrides: tuple[str, ...] = ()) -> str:
    """The text ``ppgen show`` prints; raises SpecError or DataError as ``ppgen run`` would."""
    from ppgen.models.reparam import noncentered_names
    from ppgen.spec.bayes_run import BayesRunSpec
    from ppgen.spec.formula import expand_formula, has_formula
    from ppgen.spec.load import dump_spec, load_spec

    spec = load_spec(path, overrides=overrides)
    if not isinstance(spec, BayesRunSpec):
        return dump_spec(spec)
    tables = spec.tables
    if has_formula(tables):
        tables = expand_formula(tables, spec.source.parent, str(spec.source))
    lines = [f"# model {spec.model.name!r} from {spec.source}", "# data:"]
    for name, value in spec.model.spec.data.items():
        array = np.asarray(value)
        shape = f"= {array.item()!r}" if array.ndim == 0 else f"{array.dtype} {list(array.shape)}"
        lines.append(f"#   {name} {shape}")
    noncentred = noncentered_names(spec.model.spec)
    if noncentred:
        lines.append(f"# NUTS samples non-centred (centered = true keeps one as written): {', '.join(noncentred)}")
    for table in ("plates", "variables"):  # one line a variable, in the model's order, as a user writes them
        lines += ["", f"[{table}]", *(f"{key} = {_inline(value)}" for key, value in tables.get(table, {}).items())]
    return "\n".join(lines) + "\n"


def _inline(value) -> str:
    """A TOML value on one line (a table as an inline table)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_inline(item)}" for key, item in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(item) for item in value) + "]"
    return tomli_w.dumps({"v": value}).strip()[len("v = ") :]
