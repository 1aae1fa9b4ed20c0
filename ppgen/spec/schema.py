"""Typed, validated run specs: what to fit (data, model) and how (inference, evaluation).

Every table rejects unknown keys, so a typo fails before any work starts. Field docs are the
reference for the TOML keys (see ``models/*.toml`` and ``inference/*.toml``).
"""

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PositiveFloat, PositiveInt, Tag, model_validator

__all__ = [
    "DataSpec",
    "VAESpec",
    "ModelSpec",
    "SVISpec",
    "EvaluationSpec",
    "RunSpec",
]

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
DEFAULT_TEST_FRACTION = 0.2
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # the range numpy and torch both accept
Activation = Literal["relu", "tanh", "elu", "gelu", "silu", "softplus", "leaky_relu"]


class _Table(BaseModel):
    """A TOML table: unknown keys are errors; values are checked, never silently coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataSpec(_Table):
    """The ``[data]`` table: which data set, how to binarize it, how to split it."""

    name: Literal["digits", "mnist", "file", "moons", "rings", "eight_gaussians", "checkerboard"] = "digits"
    path: Annotated[Path, Field(strict=False)] | None = None  # MNIST folder or array file, relative to the spec
    binarize: Literal["none", "threshold", "dynamic"] = "dynamic"
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    validation_fraction: Fraction = 0.1
    test_fraction: Fraction | None = None  # default 0.2; MNIST uses its official test set instead
    num_examples: PositiveInt = 10000  # toy sets only
    noise: PositiveFloat | None = None  # toy sets only; None picks each set's default
    seed: Seed = 0  # the split (and the one-off binarization of validation/test data)

    @model_validator(mode="before")
    @classmethod
    def _default_test_fraction(cls, table):
        """Data sets without a test split of their own hold out 20% by default; MNIST has one."""
        if isinstance(table, dict) and table.get("name") == "mnist":
            if table.get("test_fraction") is not None:
                raise ValueError(
                    "data.test_fraction does not apply to MNIST, which has its official 10,000-image test split"
                )
        elif isinstance(table, dict) and table.get("test_fraction") is None:
            table = {**table, "test_fraction": DEFAULT_TEST_FRACTION}
        return table


class VAESpec(_Table):
    """The ``[model]`` table of a variational autoencoder (Kingma & Welling 2013, arXiv:1312.6114)."""

    kind: Literal["vae"] = "vae"
    latent_dim: PositiveInt = 16
    hidden: list[PositiveInt] = [200, 200]
    activation: Activation = "tanh"
    likelihood: Literal["bernoulli", "gaussian", "continuous_bernoulli"] = "bernoulli"
    likelihood_scale: Literal["learned"] | PositiveFloat = "learned"  # Gaussian likelihood only


def _model_kind(table) -> str | None:
    """A [model] table's kind; "vae" when the table leaves it out."""
    if isinstance(table, dict):
        return table.get("kind", "vae")
    return getattr(table, "kind", None)


ModelSpec = Annotated[Union[Annotated[VAESpec, Tag("vae")]], Discriminator(_model_kind)]


class SVISpec(_Table):
    """The ``[inference]`` table for stochastic variational inference."""

    method: Literal["svi"] = "svi"
    elbo: Literal["trace", "meanfield", "iwae"] = "trace"
    num_particles: PositiveInt = 1  # K for elbo = "iwae"
    jit: bool = False
    optimizer: Literal["adam", "clipped_adam"] = "adam"
    lr: PositiveFloat = 1e-3
    clip_norm: PositiveFloat = 10.0  # clipped_adam only
    schedule: Literal["constant", "exponential", "cosine"] = "constant"
    lr_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0  # per-epoch factor, schedule = "exponential"
    batch_size: PositiveInt = 128
    epochs: PositiveInt = 100
    time_limit: PositiveFloat | None = None  # seconds of training before stopping
    patience: PositiveInt | None = None  # epochs without a better validation ELBO before stopping
    validation_particles: PositiveInt = 1
    keep_best: bool = True  # end with the parameters of the epoch with the best validation ELBO
    checkpoint_every: PositiveInt = 1000  # steps; a checkpoint is also written at the end
    log_every: PositiveInt = 50  # steps between progress updates and finite-loss checks
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _check_jit(self):
        if self.jit and self.elbo == "iwae":
            raise ValueError("inference.jit is not available with elbo = 'iwae' (Pyro has no compiled RenyiELBO)")
        return self


class EvaluationSpec(_Table):
    """The ``[evaluation]`` table: held-out bounds computed after training."""

    num_samples: PositiveInt = 1000  # K for the importance-sampled log-likelihood
    elbo_particles: PositiveInt = 1
    max_examples: PositiveInt | None = None  # evaluate the importance-sampled NLL on the first n test examples
    chunk_size: PositiveInt = 8192  # (example, sample) pairs evaluated in one vectorized call


class RunSpec(_Table):
    """A whole run: ``[data]``, ``[model]``, ``[inference]`` and ``[evaluation]``."""

    data: DataSpec = DataSpec()
    model: ModelSpec = VAESpec()
    inference: SVISpec = SVISpec()
    evaluation: EvaluationSpec = EvaluationSpec()

    @model_validator(mode="after")
    def _check_likelihood_matches_data(self):
        if self.model.likelihood == "bernoulli" and self.data.binarize == "none":
            raise ValueError(
                "model.likelihood = 'bernoulli' needs binary data: set data.binarize to 'dynamic' or "
                "'threshold', or use likelihood 'continuous_bernoulli' or 'gaussian'"
            )
        return self
