"""SVI settings: a frozen, validated dataclass, independent of the TOML layer.

The spec layer's ``[inference]`` table (``ppgen.spec.schema.SVISpec``) has the same fields and defaults and
converts with ``spec.inference.settings()``.
"""

import dataclasses
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from ppgen.errors import SpecError

__all__ = ["SVISettings", "svi_settings"]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class SVISettings:
    """How ``svi_init``/``svi_step`` and ``fit`` train: objective, optimizer, schedule, budget, stopping."""

    method: Literal["svi"] = "svi"
    elbo: Literal["auto", "trace", "meanfield", "iwae"] = "auto"  # auto: ppgen.infer.elbos.chosen_elbo
    num_particles: PositiveInt = 1  # K for elbo = "iwae"
    jit: bool = False
    optimizer: Literal["adam", "clipped_adam"] = "adam"
    lr: PositiveFloat = 1e-3
    clip_norm: PositiveFloat = 10.0  # clipped_adam only
    schedule: Literal["constant", "exponential", "cosine"] = "constant"
    lr_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0  # per-epoch factor, schedule = "exponential"
    batch_size: PositiveInt = 128  # examples per step, in all processes together under torchrun
    epochs: PositiveInt = 100
    kl_warmup: Annotated[int, Field(ge=0)] = 0  # epochs over which the KL part's weight rises from 0 to 1
    time_limit: PositiveFloat | None = None  # seconds of training before stopping (torchrun: checked at log steps)
    patience: PositiveInt | None = None  # epochs without a better validation ELBO before stopping
    validation_particles: PositiveInt = 1
    keep_best: bool = True  # end with the parameters of the epoch with the best validation ELBO
    checkpoint_every: PositiveInt = 1000  # steps; a checkpoint is also written at the end
    log_every: PositiveInt = 50  # steps between progress updates and finite-loss checks
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0  # the range numpy and torch both accept
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: the training loss under autocast; parameters stay fp32
    # intra-op CPU threads while training; "auto": 1 for a small model, torch's count otherwise (ppgen.threads)
    threads: Literal["auto"] | PositiveInt = "auto"

    @model_validator(mode="after")
    def _check_jit(self):
        if self.jit and self.precision == "bf16":
            raise ValueError("inference.precision = 'bf16' is not available with jit (use jit = false)")
        if self.jit and self.elbo == "iwae":
            raise ValueError("inference.jit is not available with elbo = 'iwae' (Pyro has no compiled RenyiELBO)")
        if self.kl_warmup and (self.jit or self.elbo == "iwae"):
            raise ValueError(
                "inference.kl_warmup needs elbo 'trace' or 'meanfield' without jit (a compiled loss fixes the"
                " weight; the importance-weighted bound has no separate KL part)"
            )
        return self


def svi_settings(settings: SVISettings | None = None, **options) -> SVISettings:
    """``settings`` (default ``SVISettings()``) with the fields named in ``options`` replaced.

    Raises:
        SpecError: in one line, naming the first unknown option or invalid value.
        TypeError: ``settings`` is not an ``SVISettings`` (e.g. the spec layer's table, which converts with
            ``SVISettings(**table.model_dump())``).
    """
    base = settings or SVISettings()
    if not isinstance(base, SVISettings):
        raise TypeError(f"settings: an SVISettings, not {type(base).__name__} (convert with SVISettings(**fields))")
    names = {f.name for f in dataclasses.fields(SVISettings)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise SpecError(f"fit: unknown option {unknown[0]!r}")
    try:
        return dataclasses.replace(base, **options)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        # A check across fields (a model validator) has no key of its own, and its message names the keys.
        message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
        raise SpecError(f"fit: {key}: {message}" if key else f"fit: {message}") from None
