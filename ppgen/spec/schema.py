"""Typed, validated run specs: what to fit (data, model) and how (inference, evaluation).

Every table rejects unknown keys, so a typo fails before any work starts. Field docs are the
reference for the TOML keys (see ``models/*.toml`` and ``inference/*.toml``).
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Discriminator, Field, PositiveFloat, PositiveInt, Tag, model_validator

from ppgen.spec.families.autoregressive import MADESpec, NADESpec
from ppgen.spec.families.energy import EBMSpec
from ppgen.spec.families.gan import GANSpec
from ppgen.spec.families.mixture import MixtureSpec
from ppgen.spec.families.score import ScoreSpec
from ppgen.spec.tables import DEFAULT_TEST_FRACTION, Activation, Fraction, ModelTable, Seed, Table

if TYPE_CHECKING:
    from ppgen.infer.settings import SVISettings

__all__ = [
    "DataSpec",
    "VAESpec",
    "CVAESpec",
    "HVAESpec",
    "FlowSpec",
    "DDPMSpec",
    "ModelSpec",
    "GuideSpec",
    "SVISpec",
    "EvaluationSpec",
    "SamplingSpec",
    "RunSpec",
]


class DataSpec(Table):
    """The ``[data]`` table: which data set, how to binarize it, how to split it."""

    name: Literal["digits", "mnist", "binarized_mnist", "file", "moons", "rings", "eight_gaussians", "checkerboard"] = (
        "digits"
    )
    path: Annotated[Path, Field(strict=False)] | None = None  # MNIST folder or array file, relative to the spec
    binarize: Literal["none", "threshold", "dynamic"] = "dynamic"
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    validation_fraction: Fraction = 0.1
    test_fraction: Fraction | None = None  # default 0.2; MNIST uses its official test set instead
    num_examples: PositiveInt = 10000  # toy sets only
    noise: PositiveFloat | None = None  # toy sets only; None picks each set's default
    dequantize: bool = False  # digits and MNIST: uniform noise within each pixel level, for continuous densities
    seed: Seed = 0  # the split (and the one-off binarization of validation/test data)

    @model_validator(mode="before")
    @classmethod
    def _default_test_fraction(cls, table):
        """Data sets without a test split of their own hold out 20% by default; MNIST and binarized MNIST have one."""
        if isinstance(table, dict) and table.get("name") in ("mnist", "binarized_mnist"):
            if table.get("test_fraction") is not None:
                raise ValueError(
                    f"data.test_fraction does not apply to {table['name']}, which has its official 10,000-image test"
                    " split"
                )
        elif isinstance(table, dict) and table.get("test_fraction") is None:
            table = {**table, "test_fraction": DEFAULT_TEST_FRACTION}
        return table


Likelihood = Literal["bernoulli", "gaussian", "continuous_bernoulli"]


class _LatentVariableTable(ModelTable):
    """The ``[model]`` table of a family with latent variables, a guide and a ``likelihood`` key."""

    takes_guide: ClassVar[bool] = True

    def check(self, data: DataSpec) -> None:
        if self.likelihood == "bernoulli" and data.binarize == "none":
            raise ValueError(
                "model.likelihood = 'bernoulli' needs binary data: set data.binarize to 'dynamic' or "
                "'threshold', or use likelihood 'continuous_bernoulli' or 'gaussian'"
            )


class VAESpec(_LatentVariableTable):
    """The ``[model]`` table of a variational autoencoder (Kingma & Welling 2013, arXiv:1312.6114)."""

    kind: Literal["vae"] = "vae"
    latent_dim: PositiveInt = 16
    hidden: list[PositiveInt] = [200, 200]  # encoder widths; the decoder mirrors them
    activation: Activation = "tanh"
    likelihood: Likelihood = "bernoulli"
    likelihood_scale: Literal["learned"] | PositiveFloat = "learned"  # Gaussian likelihood only


class CVAESpec(_LatentVariableTable):
    """The ``[model]`` table of a conditional VAE p(x | y, z) p(z), q(z | x, y) (Sohn et al. 2015);
    the number of classes is read from the training labels."""

    kind: Literal["cvae"] = "cvae"
    latent_dim: PositiveInt = 16
    hidden: list[PositiveInt] = [200, 200]
    activation: Activation = "tanh"
    likelihood: Likelihood = "bernoulli"
    likelihood_scale: Literal["learned"] | PositiveFloat = "learned"


class HVAESpec(_LatentVariableTable):
    """The ``[model]`` table of a hierarchical VAE p(z_L) prod_l p(z_l | z_l+1) p(x | z_1)."""

    kind: Literal["hvae"] = "hvae"
    latent_dims: Annotated[list[PositiveInt], Field(min_length=2)] = [100, 50]  # z_1 (next to x) ... z_L
    hidden: list[PositiveInt] = [200, 200]  # between x and z_1
    latent_hidden: list[PositiveInt] = [100, 100]  # between z_l and z_l+1
    activation: Activation = "tanh"
    likelihood: Likelihood = "bernoulli"
    likelihood_scale: Literal["learned"] | PositiveFloat = "learned"


class FlowSpec(ModelTable):
    """The ``[model]`` table of a normalizing-flow density x = f(z), z ~ N(0, I), fitted by maximum likelihood."""

    kind: Literal["flow"] = "flow"
    family: Literal["realnvp", "maf", "nice"] = "realnvp"
    layers: PositiveInt = 4
    hidden: list[PositiveInt] = [64, 64]


class DDPMSpec(ModelTable):
    """The ``[model]`` table of a denoising diffusion model (Ho et al. 2020) as a latent chain."""

    kind: Literal["ddpm"] = "ddpm"
    num_steps: Annotated[int, Field(ge=2)] = 1000  # T; the linear schedule needs T > 1000 beta_end
    schedule: Literal["linear", "cosine"] = "linear"
    beta_start: PositiveFloat = 1e-4  # for T = 1000; scaled by 1000 / T
    beta_end: PositiveFloat = 0.02
    variance: Literal["beta", "posterior"] = "beta"  # reverse-step variance: beta_t, or the posterior's
    network: Literal["mlp", "unet"] = "mlp"
    hidden: list[PositiveInt] = [512, 512]  # mlp
    channels: PositiveInt = 32  # unet
    time_dim: Annotated[int, Field(ge=2)] = 64
    activation: Activation = "silu"
    decoder: Literal["discretized_gaussian", "bernoulli"] = "discretized_gaussian"
    levels: Annotated[int, Field(ge=2)] = 256  # pixel values of the discretized decoder: 17 for digits
    time_subsample: PositiveInt = 1  # steps drawn per example in each training step
    # conditional: the network also takes the label, dropped (replaced by a null label) with probability
    # label_dropout in training, so that one network gives both scores classifier-free guidance mixes
    conditional: bool = False
    label_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1

    samplers: ClassVar[tuple[str, ...]] = ("ancestral", "pc", "langevin")

    def check(self, data: DataSpec) -> None:
        if self.schedule == "linear" and self.beta_end * 1000 / self.num_steps >= 1:
            raise ValueError(
                f"model.num_steps = {self.num_steps} is too few for the linear schedule with beta_end ="
                f" {self.beta_end}: it scales beta_end by 1000 / T, which must stay below 1"
            )
        if (data.binarize != "none") != (self.decoder == "bernoulli"):
            raise ValueError(
                f"model.decoder = {self.decoder!r} does not fit data.binarize = {data.binarize!r}:"
                " use decoder 'bernoulli' for binarized data and 'discretized_gaussian' otherwise"
            )


def _model_kind(table) -> str | None:
    """A [model] table's kind; "vae" when the table leaves it out."""
    if isinstance(table, dict):
        return table.get("kind", "vae")
    return getattr(table, "kind", None)


ModelSpec = Annotated[
    Annotated[VAESpec, Tag("vae")]
    | Annotated[CVAESpec, Tag("cvae")]
    | Annotated[HVAESpec, Tag("hvae")]
    | Annotated[FlowSpec, Tag("flow")]
    | Annotated[DDPMSpec, Tag("ddpm")]
    | Annotated[NADESpec, Tag("nade")]
    | Annotated[MADESpec, Tag("made")]
    | Annotated[EBMSpec, Tag("ebm")]
    | Annotated[ScoreSpec, Tag("score")]
    | Annotated[MixtureSpec, Tag("mixture")]
    | Annotated[GANSpec, Tag("gan")],
    Discriminator(_model_kind),
]


class GuideSpec(Table):
    """The ``[guide]`` table: the family of the amortized posterior q(z | x) of latent-variable models."""

    family: Literal["diagonal", "iaf", "affine_coupling", "planar", "radial", "spline"] = "diagonal"
    flows: PositiveInt = 2  # flow layers on top of the diagonal Gaussian
    hidden: list[PositiveInt] = [64]  # widths of each flow layer's network
    structure: Literal["top_down", "bottom_up"] = "top_down"  # hierarchical VAE: ladder or bottom-up guide


class SVISpec(Table):
    """The ``[inference]`` table for stochastic variational inference."""

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
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: the training loss under autocast; parameters stay fp32
    # intra-op CPU threads while training; "auto": 1 for a small model, torch's count otherwise (ppgen.threads)
    threads: Literal["auto"] | PositiveInt = "auto"

    @model_validator(mode="after")
    def _check_settings(self):
        self.settings()  # the engine's own checks across keys (jit, iwae, bf16, KL warm-up)
        return self

    def settings(self) -> "SVISettings":
        """The engine's settings of this table (``ppgen.fit`` takes them)."""
        from pydantic import ValidationError

        from ppgen.infer.settings import SVISettings  # not at import: ppgen.models reads these tables

        try:
            return SVISettings(**self.model_dump())
        except ValidationError as error:  # a check across keys, whose message names them
            raise ValueError(error.errors()[0]["ctx"]["error"]) from None


class SamplingSpec(Table):
    """The ``[sampling]`` table: how ``ppgen run`` and ``ppgen sample`` draw; without ``sampler`` a run takes its
    family's first (``RunSpec._default_sampler``): ancestral, or Langevin for score and energy-based models."""

    sampler: Literal["ancestral", "pc", "langevin"] = "ancestral"
    corrector_steps: PositiveInt = 1  # pc: Langevin steps after each ancestral step
    snr: PositiveFloat = 0.16  # pc: signal-to-noise ratio that sets the corrector's step size
    langevin_steps: PositiveInt = 5  # langevin: steps per noise level
    step_size: PositiveFloat = 2e-5  # langevin: step size at the smallest noise level
    noise_levels: PositiveInt = 100  # langevin: noise levels visited from T down to 1
    label: Annotated[int, Field(ge=0)] | None = None  # conditional models: the class to draw (None: each in turn)
    guidance: Annotated[float, Field(ge=0.0)] = 0.0  # classifier-free guidance weight w (0: the conditional model)


class EvaluationSpec(Table):
    """The ``[evaluation]`` table: held-out bounds computed after training."""

    num_samples: PositiveInt = 1000  # K for the importance-sampled log-likelihood
    elbo_particles: PositiveInt = 1
    max_examples: PositiveInt | None = None  # evaluate the importance-sampled NLL on the first n test examples
    chunk_size: PositiveInt | None = None  # (example, sample) pairs per vectorized call; None: sized from free memory
    classify_samples: PositiveInt = 100  # labelled models: K per class for classification by likelihood


MODEL_TABLES = {
    table.model_fields["kind"].default: table
    for table in (
        VAESpec,
        CVAESpec,
        HVAESpec,
        FlowSpec,
        DDPMSpec,
        NADESpec,
        MADESpec,
        EBMSpec,
        ScoreSpec,
        MixtureSpec,
        GANSpec,
    )
}


class RunSpec(Table):
    """A whole run: ``[data]``, ``[model]``, ``[guide]``, ``[inference]``, ``[evaluation]`` and ``[sampling]``."""

    data: DataSpec = DataSpec()
    model: ModelSpec = VAESpec()
    guide: GuideSpec = GuideSpec()
    inference: SVISpec = SVISpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    sampling: SamplingSpec = SamplingSpec()

    @model_validator(mode="before")
    @classmethod
    def _default_sampler(cls, tree):
        """A ``[sampling]`` table without a sampler draws with the model family's first (its own default)."""
        if not isinstance(tree, dict) or not isinstance(tree.get("sampling", {}), dict):
            return tree
        kind = _model_kind(tree.get("model", {}))
        table = MODEL_TABLES.get(kind) if isinstance(kind, str) else None
        if table is None or "sampler" in tree.get("sampling", {}):
            return tree
        return {**tree, "sampling": {**tree.get("sampling", {}), "sampler": table.samplers[0]}}

    @model_validator(mode="after")
    def _check_guide_applies(self):
        if not self.model.takes_guide and self.guide != GuideSpec():
            raise ValueError(
                f"[guide] does not apply to model.kind = {self.model.kind!r}, which has no latent variables"
            )
        return self

    @model_validator(mode="after")
    def _check_sampler_applies(self):
        if (self.sampling.label is not None or self.sampling.guidance) and not getattr(
            self.model, "conditional", False
        ):
            key = "sampling.label" if self.sampling.label is not None else "sampling.guidance"
            raise ValueError(
                f"{key} applies to a label-conditional diffusion model (model.kind = 'ddpm' with model.conditional ="
                f" true), not to model.kind = {self.model.kind!r}"
                + (" without model.conditional" if self.model.kind == "ddpm" else "")
            )
        if self.sampling.sampler not in self.model.samplers:
            raise ValueError(
                f"sampling.sampler = {self.sampling.sampler!r} does not apply to model.kind = {self.model.kind!r}"
                f" (its samplers: {', '.join(map(repr, self.model.samplers))})"
            )
        return self

    @model_validator(mode="after")
    def _check_model(self):
        # Checked here, not in the [model] table, so that an error names the override of the key at fault.
        self.model.check(self.data)
        return self
