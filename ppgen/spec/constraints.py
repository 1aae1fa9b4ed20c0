"""The constrained parameter types of the model language (``constraint = "..."`` on a variable) and the site names a
constrained variable adds; ``ppgen.models.constraints`` implements them on each backend."""

from ppgen.errors import SpecError
from ppgen.suggest import suggest

__all__ = ["CONSTRAINTS", "check_constraint", "raw_site_name", "density_site_name"]

CONSTRAINTS: dict[str, str] = {
    "ordered": "a vector in increasing order, x[0] < x[1] < ... (shape = [K])",
    "positive_ordered": "a vector of positive values in increasing order (shape = [K])",
    "simplex": "a vector of positive values that sum to 1 (shape = [K], K >= 2)",
    "cholesky_corr": "the lower Cholesky factor of a K x K correlation matrix (shape = [K, K], K >= 2)",
    "sum_to_zero": "a vector whose values sum to 0 (shape = [K], K >= 2)",
}


def raw_site_name(name: str) -> str:
    """The latent site of a variable whose bounds depend on parameters (its value is the deterministic ``name``)."""
    return f"{name}__raw"


def density_site_name(name: str) -> str:
    """The factor site that adds a constrained variable's density (and any Jacobian of its bounds)."""
    return f"{name}__density"


def check_constraint(name: str, constraint: str | None, bounded: bool) -> None:
    """SpecError unless ``constraint`` is one of ``CONSTRAINTS`` (or None) and not combined with bounds.

    Args:
        name: the variable's name, for the message.
        constraint: the ``constraint`` key's value.
        bounded: whether the variable has ``lower`` or ``upper``.
    """
    if constraint is None:
        return
    known = ", ".join(CONSTRAINTS)
    if not isinstance(constraint, str):
        raise SpecError(f"variables.{name}.constraint: expected one of {known}, not {constraint!r}")
    if constraint not in CONSTRAINTS:
        hint = suggest(constraint, CONSTRAINTS)
        raise SpecError(f"variables.{name}.constraint: unknown constraint {constraint!r}{hint}; known: {known}")
    if bounded:
        raise SpecError(
            f"variables.{name}.constraint: {constraint!r} cannot be combined with lower/upper bounds"
            + ("; use 'positive_ordered'" if constraint == "ordered" else "")
        )
