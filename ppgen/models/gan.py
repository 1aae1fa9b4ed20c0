"""A generative adversarial network (Goodfellow et al. 2014, arXiv:1406.2661), the zoo's likelihood-free baseline: a
generator x = G(z), z ~ N(0, I), played against a critic, with the non-saturating loss or the Wasserstein loss with
gradient penalty (WGAN-GP, Gulrajani et al. 2017, arXiv:1704.00028). It defines no density: evaluation reports none,
and the model is compared by its samples.

ppgen's trainer steps every parameter with one optimizer on the gradient of one loss, so the game is written as one
per-example loss whose gradient with respect to each player's parameters is that player's own loss's (simultaneous
gradient descent): the critic's loss on detached fakes, plus the generator's loss through a copy of the critic whose
parameters are detached. Example i of a batch is paired with fake i.
"""

import math
from collections.abc import Callable, Sequence

import torch
from pyro.nn import PyroModule
from torch import nn
from torch.func import functional_call
from torch.nn.functional import softplus

from ppgen.errors import SpecError
from ppgen.infer import distributed
from ppgen.models.family import LossFamily
from ppgen.nets import ACTIVATIONS, mlp

__all__ = ["GAN", "critic_loss", "generator_loss", "gradient_penalty", "frozen"]

Critic = Callable[[torch.Tensor], torch.Tensor]  # x [B, D] -> scores [B]


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """[B] (||grad_x critic(x_hat)|| - 1)^2 at x_hat = real + u (fake - real), u ~ U(0, 1) per example, for real and
    fake [B, D] (Gulrajani et al. 2017, arXiv:1704.00028, eq. 3). Differentiable in the critic's parameters where
    gradients are enabled; computed (without that graph) under ``torch.no_grad`` too."""
    differentiable = torch.is_grad_enabled()
    mix = torch.rand(len(real), *[1] * (real.dim() - 1), dtype=real.dtype, device=real.device)
    with torch.enable_grad():
        between = torch.lerp(real.detach(), fake.detach(), mix).requires_grad_(True)
        (slope,) = torch.autograd.grad(critic(between).sum(), between, create_graph=differentiable)
    return (slope.flatten(1).norm(dim=1) - 1) ** 2


def critic_loss(critic: Critic, real: torch.Tensor, fake: torch.Tensor, loss: str, gp_weight: float) -> torch.Tensor:
    """[B] the critic's loss on real and fake [B, D]: non-saturating, -log D(real) - log(1 - D(fake)) with
    D = sigmoid(critic); wgan_gp, critic(fake) - critic(real) + gp_weight * gradient penalty."""
    if loss == "non_saturating":
        return softplus(-critic(real)) + softplus(critic(fake))
    return critic(fake) - critic(real) + gp_weight * gradient_penalty(critic, real, fake)


def generator_loss(critic: Critic, fake: torch.Tensor, loss: str) -> torch.Tensor:
    """[B] the generator's loss on fake [B, D]: non-saturating, -log D(fake); wgan_gp, -critic(fake)."""
    return softplus(-critic(fake)) if loss == "non_saturating" else -critic(fake)


def frozen(critic: nn.Module) -> Critic:
    """The critic with its parameters detached: gradients pass through it to its input only."""
    detached = {name: p.detach() for name, p in critic.named_parameters()}
    return lambda x: functional_call(critic, detached, (x,))


def conv_generator(latent_dim: int, side: int, channels: int, activation: str) -> nn.Sequential:
    """z [B, Z] -> [B, side^2] images: a linear map to 2C maps of side / 4, then twice a nearest-neighbour upsampling
    by 2 and a 3x3 convolution (Radford et al. 2015, arXiv:1511.06434, without batch normalization; upsampling in place
    of their transposed convolutions, whose checkerboard artifacts (Odena et al. 2016, Distill) collapsed training on
    8x8 digits)."""
    base = side // 4
    return nn.Sequential(
        nn.Linear(latent_dim, 2 * channels * base * base),
        ACTIVATIONS[activation](),
        nn.Unflatten(1, (2 * channels, base, base)),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(2 * channels, channels, 3, padding=1),
        ACTIVATIONS[activation](),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(channels, 1, 3, padding=1),
        nn.Flatten(1),
    )


def conv_critic(side: int, channels: int, activation: str) -> nn.Sequential:
    """[B, side^2] images -> scores [B, 1]: two strided convolutions that each halve the side, then a linear map
    (no normalization, which the gradient penalty's per-example gradients forbid)."""
    base = side // 4
    return nn.Sequential(
        nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, channels, 4, stride=2, padding=1),
        ACTIVATIONS[activation](),
        nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
        ACTIVATIONS[activation](),
        nn.Flatten(1),
        nn.Linear(2 * channels * base * base, 1),
    )


class GAN(LossFamily, PyroModule):
    """A generator and a critic, trained as one loss (see the module's docstring); no likelihood.

    Args:
        event_shape: one example's shape: a vector (D,) gets a linear output, an image (H, W) a sigmoid one in [0, 1].
        latent_dim: Z.
        network: "mlp" (``generator_hidden``, ``critic_hidden``) or "dcgan" (``channels``; square images whose side
            is a multiple of 4, e.g. 8x8 digits and 28x28 MNIST).
        activation: a name in ``ppgen.nets.ACTIVATIONS``.
        loss: "non_saturating" or "wgan_gp" (with ``gp_weight``).
        n_critic: critic updates per generator update. In training, the generator's part enters the loss of one
            call in n_critic, counted by the ``loss_calls`` buffer (saved with the parameters, so a resumed run
            continues the cycle; the trainer's calls while it starts count too, shifting the phase). On the other
            calls the generator is outside the loss's graph: its gradients are None, and Adam leaves it, and its
            moments, unchanged (torch's Adam skips parameters without gradients). The training loss then alternates
            between the critic's part alone and the whole game's.
    """

    kind = "gan"
    objective = "adversarial_loss"
    validates = False

    def __init__(
        self,
        event_shape: Sequence[int],
        latent_dim: int = 16,
        network: str = "mlp",
        generator_hidden: Sequence[int] = (128, 128),
        critic_hidden: Sequence[int] = (128, 128),
        channels: int = 32,
        activation: str = "leaky_relu",
        loss: str = "non_saturating",
        gp_weight: float = 10.0,
        n_critic: int = 1,
    ):
        super().__init__()
        data_dim = math.prod(event_shape)
        self.latent_dim, self.adversarial_loss, self.gp_weight, self.n_critic = latent_dim, loss, gp_weight, n_critic
        if network == "dcgan":
            side = event_shape[-1]
            if len(event_shape) != 2 or event_shape[0] != side or side % 4:
                raise SpecError(
                    f"model.network = 'dcgan' needs square images whose side is a multiple of 4; the data's examples"
                    f" have shape {tuple(event_shape)}: use network 'mlp'"
                )
            generator = conv_generator(latent_dim, side, channels, activation)
            self.critic = nn.Sequential(conv_critic(side, channels, activation), nn.Flatten(0))  # [B, 1] -> [B]
        else:
            generator = mlp(latent_dim, generator_hidden, data_dim, activation)
            self.critic = nn.Sequential(mlp(data_dim, critic_hidden, 1, activation), nn.Flatten(0))
        self.generator = nn.Sequential(generator, nn.Sigmoid()) if len(event_shape) > 1 else generator
        self.register_buffer("loss_calls", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "GAN":
        if spec.n_critic > 1 and distributed.is_distributed():  # DDP's static graph needs the same unused parameters
            raise SpecError(
                f"model.n_critic = {spec.n_critic} needs one process: under torchrun every step must use the same"
                " parameters, and the critic's turns leave the generator out (use n_critic = 1)"
            )
        return cls(tuple(event_shape), **spec.model_dump(exclude={"kind"}))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """[B] for x [B, D]: the critic's loss on (x_i, G(z_i)) with G(z_i) detached, plus (on the generator's turns)
        the generator's loss on G(z_i) through the frozen critic."""
        fake = self.generator(torch.randn(len(x), self.latent_dim, dtype=x.dtype, device=x.device))
        critic_part = critic_loss(self.critic, x, fake.detach(), self.adversarial_loss, self.gp_weight)
        if not self._generators_turn():
            return critic_part
        return critic_part + generator_loss(frozen(self.critic), fake, self.adversarial_loss)

    def _generators_turn(self) -> bool:
        """Whether this call's loss includes the generator's part: always outside training (evaluation reports the
        whole game's loss); in training, one call in ``n_critic``."""
        if self.n_critic == 1 or not (self.training and torch.is_grad_enabled()):
            return True
        self.loss_calls += 1
        return int(self.loss_calls) % self.n_critic == 0

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """[num_samples, D] generator outputs G(z), z ~ N(0, I)."""
        device = self.loss_calls.device
        return self.generator(torch.randn(num_samples, self.latent_dim, device=device))
