"""Minibatching a plate of a declarative Bayesian model: which values the minibatch indexes, and when it cannot.

A subsampled plate draws B of its N indices afresh on every run of the model (``pyro.plate(name, N,
subsample_size=B)``), and Pyro and NumPyro scale the log densities of its sites by N / B, so the log joint and its
gradient are unbiased estimates of the full-data ones (Welling & Teh 2011, ICML, "Bayesian learning via stochastic
gradient Langevin dynamics").

The rule for the data: an expression of a variable in the plate sees the minibatch's rows of every array that
comes from the data alone (a data key, or a ``value`` of the data computed outside the plate, like a design
matrix) and has N rows, i.e. its first axis has the plate's size; its ``observed`` data likewise. Values computed
outside the plate are computed from all the data, so a statistic of the whole data set belongs there
(``x_mean = { value = "mean(x)" }``); inside the plate ``mean(x)`` would be the minibatch's. Values of the
parameters are never indexed (a coefficient vector may have N entries by chance): a per-element value of the
parameters, such as a linear predictor, must be computed inside the plate.

Supported: plates that hold only observed and computed variables (a likelihood over data points), outermost
wherever they appear (the data's first axis is then the plate's), whose values nothing outside the plate reads.
A local latent variable in the subsampled plate is rejected: SGLD's chain state cannot follow a minibatch (SVI
could, with a guide that subsamples alike, but that is not offered here).
"""

from dataclasses import dataclass

from ppgen.errors import SpecError
from ppgen.spec.bayes import BayesSpec, Variable
from ppgen.suggest import CLAUSE, suggest

__all__ = ["SubsamplePlan", "subsample_plan", "likelihood_plate"]


@dataclass(frozen=True)
class SubsamplePlan:
    """How one plate is minibatched.

    plate: the plate's name. batch_size: B, the indices drawn per run (at most the plate's size N).
    reads: variable in the plate -> the names its expressions read that come from the data alone; each is
        indexed by the minibatch along its first axis when that axis has N entries.
    observed: the variables in the plate whose observed value (data, or a value of the data computed outside the
        plate) is indexed likewise.
    """

    plate: str
    batch_size: int
    reads: dict[str, tuple[str, ...]]
    observed: frozenset[str]


def _expression_names(variable: Variable) -> list[str]:
    expressions = [variable.value] if variable.value is not None else list(variable.dist.params.values())
    return list(dict.fromkeys(name for expression in expressions for name in expression.names))


def subsample_plan(spec: BayesSpec, plate: str, batch_size: int) -> SubsamplePlan:
    """Check that ``plate`` can be minibatched with ``batch_size`` indices per run, and say what to index.

    Raises:
        SpecError naming the plate: unknown, a time plate, empty, holding a latent variable, nested inside another
        plate, or read from outside; or a batch size that is not a positive integer.
    """
    if plate not in spec.plates:
        raise SpecError(f"cannot subsample plate {plate!r}: it is not in [plates]{suggest(plate, spec.plates, CLAUSE)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SpecError(f"plates.{plate}: the minibatch size must be a positive integer, not {batch_size!r}")
    if plate in spec.time_plates:
        raise SpecError(
            f"plates.{plate}: cannot subsample a time plate: each step depends on the one before (use nuts or svi)"
        )
    inside = {name: v for name, v in spec.variables.items() if plate in v.plates}
    if not inside:
        raise SpecError(f"plates.{plate}: cannot subsample it: no variable lives in it")
    where = f"plates.{plate}: cannot subsample it"
    for name, variable in inside.items():
        if name in spec.latent_names:
            raise SpecError(
                f"{where}: latent variable {name!r} lives in it, and minibatch SGLD needs every variable in the"
                " subsampled plate observed or computed (a local latent cannot follow the minibatch)"
            )
        if variable.plates[0] != plate:
            raise SpecError(
                f"{where}: variables.{name} lists it inside plate {variable.plates[0]!r}; only a plate that is"
                " outermost wherever it appears can be subsampled (the rows of its data are their first axis)"
            )
    for name, variable in spec.variables.items():
        if name in inside:
            continue
        read = next((d for d in variable.depends if d in inside), None)
        if read is not None:
            raise SpecError(
                f"{where}: variables.{name}, outside the plate, reads {read!r} from inside it and would see only the"
                " minibatch"
            )
    data_alone = set(spec.transformed_data_names)

    def from_data(name: str) -> bool:
        """Whether a name read in the plate is data, or a value of the data computed outside the plate."""
        if name in spec.variables:
            return name in data_alone and name not in inside
        return name in spec.data

    reads = {name: tuple(n for n in _expression_names(v) if from_data(n)) for name, v in inside.items()}
    observed = frozenset(
        name
        for name, v in inside.items()
        if v.observed is not None and (v.observed in spec.data or from_data(v.observed))
    )
    return SubsamplePlan(plate, batch_size, reads, observed)


def likelihood_plate(spec: BayesSpec) -> str:
    """The plate to minibatch by default: the outermost plate of the likelihood terms, when they share one.

    Raises:
        SpecError when no likelihood term lies in a plate, or when they lie in several.
    """
    observed = [spec.variables[name] for name in spec.observed]
    plates = list(dict.fromkeys(variable.plates[0] for variable in observed if variable.plates))
    if len(plates) == 1:
        return plates[0]
    if not plates:
        raise SpecError(f"{spec.source}: no observed variable lies in a plate, so there is no data plate to subsample")
    raise SpecError(
        f"{spec.source}: the observed variables lie in plates {', '.join(map(repr, plates))}: name the one to"
        " subsample (inference.plate)"
    )
