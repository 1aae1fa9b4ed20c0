"""bf16 autocast training (``inference.precision = "bf16"``): fp32 densities, fp32 state, and fp32's results."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ppgen.data import load_data
from ppgen.errors import SpecError
from ppgen.evaluate import elbo
from ppgen.flows import DENSITY_FLOWS, GUIDE_FLOWS, ConditionalFlow, DensityFlow
from ppgen.infer import fit
from ppgen.infer.checkpoint import load_checkpoint
from ppgen.models import VAE

Z = 4.0
SEEDS = (0, 1, 2, 3)  # fp32 runs that differ only in their seed: the yardstick for bf16's difference


@pytest.fixture(scope="module")
def digits():
    splits = load_data(name="digits", binarize="dynamic")
    return splits.train.x, splits.validation.x, splits.batch_transform()


def _train(digits, precision: str, seed: int = 0, checkpoint=None) -> tuple[VAE, object]:
    train, _, transform = digits
    pyro.set_rng_seed(0)  # the same initial parameters for every run
    vae = VAE(data_dim=64, latent_dim=4, hidden=[32])
    result = fit(vae.model, vae.guide, train, batch_transform=transform, epochs=3, batch_size=64, lr=3e-3,
                 seed=seed, precision=precision, device="cpu", log_every=10, progress=False,
                 checkpoint=checkpoint)  # fmt: skip
    return vae, result


def _validation_elbo(vae: VAE, digits) -> torch.Tensor:
    """Per-example validation ELBO in fp32, with the same random draws for every model."""
    pyro.set_rng_seed(123)
    with torch.no_grad():
        return elbo(vae.model, vae.guide, digits[1], num_particles=4)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "continuous_bernoulli"])
def test_under_autocast_the_heads_give_pyro_fp32_distributions(likelihood):
    pyro.set_rng_seed(0)
    vae = VAE(data_dim=10, latent_dim=3, hidden=[8], likelihood=likelihood)
    x = torch.rand(5, 10).round()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert vae.encoder.trunk(x).dtype == torch.bfloat16  # the networks do run in bf16
        guide = poutine.trace(vae.guide).get_trace(x)
        model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
        for trace in map(prune_subsample_sites, (guide, model)):
            trace.compute_log_prob()
            for name, site in trace.nodes.items():
                if site["type"] == "sample":
                    assert site["fn"].mean.dtype == site["log_prob"].dtype == torch.float32, name


@pytest.mark.parametrize("family", GUIDE_FLOWS + DENSITY_FLOWS)
def test_under_autocast_flow_networks_hand_fp32_parameters_to_their_transforms(family):
    """The log-Jacobian sums over dimensions: it must see fp32 shifts and scales, not bf16 ones."""
    torch.manual_seed(0)
    if family in GUIDE_FLOWS:
        flow, context = ConditionalFlow(family, 4, 3, 2, [8]), torch.randn(5, 3)
        distribution = lambda: dist.TransformedDistribution(  # noqa: E731
            dist.Normal(torch.zeros(5, 4), 1.0).to_event(1), flow.transforms(context)
        )
    else:
        flow = DensityFlow(family, 4, 2, [8])
        distribution = flow.distribution
    linear, outputs = [], []
    for layer in flow.layers:
        for network in layer.children():
            layers = [m for m in network.modules() if isinstance(m, torch.nn.Linear)]
            if layers:  # a network (not an activation module the transform keeps)
                network.register_forward_hook(lambda module, inputs, output: outputs.append(output))
                layers[0].register_forward_hook(lambda module, inputs, output: linear.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = distribution()
        x = q.sample() if family in GUIDE_FLOWS else torch.randn(5, 4)
        log_prob = q.log_prob(x)
    assert linear and set(linear) == {torch.bfloat16}  # the networks ran in bf16 ...
    tensors = [t for out in outputs for t in ((out,) if isinstance(out, torch.Tensor) else out)]
    assert tensors and all(t.dtype == torch.float32 for t in tensors)  # ... and handed on fp32
    assert log_prob.dtype == torch.float32


def test_bf16_is_refused_with_jit():
    with pytest.raises(SpecError, match="inference.precision = 'bf16' is not available with jit"):
        fit(lambda x: None, lambda x: None, torch.zeros(4, 2), precision="bf16", jit=True)


@pytest.mark.slow
def test_a_bf16_run_trains_keeps_fp32_state_and_ends_where_fp32_runs_do(digits, tmp_path):
    vae, result = _train(digits, "bf16", checkpoint=tmp_path / "bf16.pt")
    assert all(math.isfinite(value) for _, value in result.train_elbo)
    state = load_checkpoint(tmp_path / "bf16.pt")
    tensors = [*state["parameters"]["modules"][0].values(), *state["optimizer"]["state"].values()]
    assert all(t.dtype == torch.float32 for t in tensors if isinstance(t, torch.Tensor))
    moments = [value for entry in state["optimizer"]["state"].values() for key, value in entry.items() if key != "step"]
    assert moments and all(m.dtype == torch.float32 for m in moments)
    pyro.set_rng_seed(0)
    untrained = VAE(data_dim=64, latent_dim=4, hidden=[32])  # the initial parameters of every run
    before, after = _validation_elbo(untrained, digits), _validation_elbo(vae, digits)
    # Improvement beyond Monte-Carlo noise: Z standard errors of the difference of two means.
    stderr = math.sqrt(before.var().item() / len(before) + after.var().item() / len(after))
    assert after.mean() - before.mean() > Z * stderr

    # bf16 rounds each matrix product to 8 significant bits, a perturbation of the gradient far smaller than
    # drawing other random numbers. So the bf16 run (seed 0) must end within Z standard deviations of the
    # seed-to-seed spread of fp32 runs' validation ELBO (common random numbers in the evaluation, so the
    # spread is that of training).
    fp32 = torch.tensor([_validation_elbo(_train(digits, "fp32", seed)[0], digits).mean().item() for seed in SEEDS])
    assert abs(after.mean().item() - fp32[0].item()) < Z * fp32.std().item()
