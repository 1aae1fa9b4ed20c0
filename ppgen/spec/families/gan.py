"""The ``[model]`` table of a generative adversarial network, the likelihood-free baseline (Goodfellow et al. 2014)."""

from typing import Literal

from pydantic import PositiveFloat, PositiveInt

from ppgen.spec.tables import Activation, ModelTable

__all__ = ["GANSpec"]

IMAGE_DATA = ("digits", "mnist", "file")  # data a convolutional network may take (a file's shape is checked later)


class GANSpec(ModelTable):
    """The ``[model]`` table of a GAN, the likelihood-free baseline: a generator x = G(z), z ~ N(0, I), and a critic,
    trained by the non-saturating loss (Goodfellow et al. 2014, arXiv:1406.2661) or the Wasserstein loss with gradient
    penalty (Gulrajani et al. 2017, arXiv:1704.00028)."""

    kind: Literal["gan"] = "gan"
    latent_dim: PositiveInt = 16
    network: Literal["mlp", "dcgan"] = "mlp"  # dcgan: convolutions, for square images (side a multiple of 4)
    generator_hidden: list[PositiveInt] = [128, 128]  # mlp
    critic_hidden: list[PositiveInt] = [128, 128]  # mlp
    channels: PositiveInt = 32  # dcgan: the critic's first convolution's channels, doubled in its second
    activation: Activation = "leaky_relu"
    loss: Literal["non_saturating", "wgan_gp"] = "non_saturating"
    gp_weight: PositiveFloat = 10.0  # wgan_gp: the gradient penalty's weight (lambda)
    n_critic: PositiveInt = 1  # critic updates per generator update

    def check(self, data) -> None:
        if self.network == "dcgan" and data.name not in IMAGE_DATA:
            raise ValueError(
                f"model.network = 'dcgan' needs image data (data.name = 'digits', 'mnist' or an image 'file');"
                f" data.name = {data.name!r} has vectors: use network 'mlp'"
            )
