"""Time per SVI step: ppgen's trainer against a hand-written PyTorch VAE loop, in one process.

Both train the same network (an MLP VAE with a diagonal Gaussian encoder and a Bernoulli decoder) on
batches of 128 with Adam, drawing each epoch's batches from a random permutation. Two variants:
  analytic KL  ppgen elbo = "meanfield" (TraceMeanField_ELBO)  vs  closed-form KL by hand
  sampled KL   ppgen elbo = "trace" (Trace_ELBO)               vs  log p(z) - log q(z) at the sample by hand
The hand-written loop runs twice: with torch's default Adam (what most loops use) and with the fused
Adam kernel that ppgen uses. Runs alternate between the systems and the median of the repeats is
reported, with the ratios ppgen / hand-written (target: <= 1.1 on the CPU and on a GPU; use --repeats 15 on a
busy machine, where medians of 5 move by about 0.1).

With --device cuda the data, networks and optimizer live on the GPU and each timing runs between two
CUDA events recorded on the stream and read after synchronizing, so it covers the kernels queued, not
only their launch; on the CPU the same code reads the wall clock.

    python bench/svi_step.py [--steps 300] [--repeats 5] [--device cpu|cuda] [--threads 2]
"""

import argparse
import statistics

import torch
from timing import device_seconds  # bench/timing.py, next to this script
from torch.nn.functional import binary_cross_entropy_with_logits, softplus

from ppgen.device import resolve_device
from ppgen.infer import fit
from ppgen.models import VAE
from ppgen.nets import MIN_SCALE

NETWORKS = {
    "784-200-200-50 tanh (models/vae-mnist.toml)": dict(hidden=[200, 200], latent_dim=50, activation="tanh"),
    "784-400-20 relu (BASELINES.md)": dict(hidden=[400], latent_dim=20, activation="relu"),
}
DATA_DIM, BATCH = 784, 128


def hand_written_seconds(vae: VAE, x: torch.Tensor, steps: int, analytic_kl: bool, fused: bool) -> float:
    """A plain PyTorch loop over the same networks, written as one would without Pyro."""
    encoder, decoder = torch.nn.Sequential(*vae.encoder.trunk, vae.encoder.head), vae.decoder.net
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3, fused=fused)
    batches_per_epoch = len(x) // BATCH

    def train() -> None:
        for step in range(steps):
            if step % batches_per_epoch == 0:
                order = torch.randperm(len(x), device=x.device)
            batch = x[order[(step % batches_per_epoch) * BATCH : (step % batches_per_epoch + 1) * BATCH]]
            loc, raw_scale = encoder(batch).chunk(2, dim=-1)
            scale = softplus(raw_scale) + MIN_SCALE
            z = loc + scale * torch.randn_like(loc)
            log_likelihood = -binary_cross_entropy_with_logits(decoder(z), batch, reduction="none").sum(-1)
            if analytic_kl:
                kl = 0.5 * (loc.square() + scale.square() - 1).sum(-1) - scale.log().sum(-1)
            else:
                noise = (z - loc) / scale
                kl = (-0.5 * noise.square() - scale.log()).sum(-1) - (-0.5 * z.square()).sum(-1)
            loss = -(log_likelihood - kl).sum() * (len(x) / BATCH)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return device_seconds(train, x.device)[1]


def ppgen_seconds(vae: VAE, x: torch.Tensor, steps: int, analytic_kl: bool, jit: bool) -> float:
    epochs = steps // (len(x) // BATCH)
    options = dict(elbo="meanfield" if analytic_kl else "trace", jit=jit, progress=False, device=x.device.type)
    options["threads"] = torch.get_num_threads()  # the hand-written loop's count, not ppgen's choice
    result, seconds = device_seconds(
        lambda: fit(vae.model, vae.guide, x, epochs=epochs, batch_size=BATCH, **options), x.device
    )
    assert result.steps == steps
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    steps_per_epoch = 100
    x = torch.bernoulli(torch.full((BATCH * steps_per_epoch, DATA_DIM), 0.13, device=device))
    steps = max(1, args.steps // steps_per_epoch) * steps_per_epoch
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"SVI step time, batch {BATCH}, {steps} steps per timing, median of {args.repeats};"
        f" {name}; torch {torch.__version__}"
    )
    systems = ("hand", "hand fused", "ppgen", "ppgen jit")
    print(
        f"{'network':<46} {'variant':<12}"
        + "".join(f"{s + ' ms':>14}" for s in systems)
        + f"{'ratio':>7}{'ratio fused':>12}{'jit/fused':>10}"
    )
    for network, options in NETWORKS.items():
        for analytic_kl in (True, False):
            times = {system: [] for system in systems}
            for repeat in range(args.repeats + 1):  # the first round warms up every system
                for system in systems:
                    torch.manual_seed(repeat)
                    vae = VAE(DATA_DIM, **options).to(device)
                    if system.startswith("ppgen"):
                        seconds = ppgen_seconds(vae, x, steps, analytic_kl, jit=system == "ppgen jit")
                    else:
                        seconds = hand_written_seconds(vae, x, steps, analytic_kl, fused=system == "hand fused")
                    if repeat:
                        times[system].append(seconds / steps * 1e3)
            hand, fused, ours, jit = (statistics.median(times[s]) for s in systems)
            variant = "analytic KL" if analytic_kl else "sampled KL"
            print(
                f"{network:<46} {variant:<12}{hand:>14.2f}{fused:>14.2f}{ours:>14.2f}{jit:>14.2f}"
                f"{ours / hand:>7.2f}{ours / fused:>12.2f}{jit / fused:>10.2f}"
            )


if __name__ == "__main__":
    main()
