"""The label-conditional DDPM and classifier-free guidance (Ho & Salimans 2021, arXiv:2207.12598): the guided
prediction, label dropout in training only, every sampler guided, and the run and ``ppgen sample`` with labels."""

import json
import math
from pathlib import Path

import pyro
import pytest
import torch
from test_cli import PNG_MAGIC, REPO, cli
from torch import nn

from ppgen.errors import PpgenError
from ppgen.evaluate import elbo, log_likelihood
from ppgen.models import DDPM
from ppgen.models.diffusion_parts import Conditioning
from ppgen.runner import run
from ppgen.spec.load import load_spec
from ppgen.spec.schema import DDPMSpec, SamplingSpec

MODELS = REPO / "models"
Z = 4.0
CLASSES = 3
TINY = ("--set", "inference.epochs=1", "--set", "inference.device=cpu", "--quiet")
TINY_DDPM = ["model.num_steps=30", "model.hidden=[16]", "evaluation.num_samples=2", "evaluation.max_examples=4"]


def _ddpm(**options):
    pyro.set_rng_seed(0)
    # beta from 2e-4 to 2e-3 at T = 1000, scaled by 1000 / T, keeps every beta below 1 for T >= 4.
    settings = dict(data_dim=3, num_steps=4, hidden=[8], time_dim=4, levels=5, beta_start=2e-4, beta_end=2e-3)
    return DDPM(**{**settings, "num_classes": CLASSES, **options})


def _pixels(n=6, levels=5):
    return torch.randint(0, levels, (n, 3), generator=torch.Generator().manual_seed(1)).float() / (levels - 1)


class _Stub(nn.Module):
    """A network without parameters: net(x, t, label) = 0.3 x + 0.01 t + 0.1 label for a label, and -0.2 x +
    0.02 t for the null label; with ``weight`` set, it returns the guided mix itself for every label."""

    def __init__(self, null: int, weight: float | None = None):
        super().__init__()
        self.null, self.weight = null, weight

    def forward(self, x, t, label):
        t, label = t.unsqueeze(-1).float(), label.unsqueeze(-1).float()
        conditional, unconditional = 0.3 * x + 0.01 * t + 0.1 * label, -0.2 * x + 0.02 * t
        if self.weight is not None:
            return (1 + self.weight) * conditional - self.weight * unconditional
        return torch.where(label == self.null, unconditional, conditional)


class _Spy(nn.Module):
    """The network, recording the labels of every call."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.labels = net, []

    def forward(self, x, t, label):
        self.labels.append(label)
        return self.net(x, t, label)


def test_with_no_guidance_the_prediction_is_the_conditional_network_in_one_call():
    ddpm = _ddpm()
    ddpm.net = _Spy(ddpm.net)
    y, t, labels = torch.randn(5, 3), torch.tensor(3), torch.tensor([0, 1, 2, 0, 1])
    prediction = ddpm.noise_prediction(y, t, Conditioning(labels, guidance=0.0))
    assert torch.equal(prediction, ddpm.net.net(y, t, labels))
    assert len(ddpm.net.labels) == 1  # exact, and no call for the null label


@pytest.mark.parametrize("weight", [0.5, 2.0])
def test_the_guided_prediction_mixes_the_conditional_and_null_predictions(weight):
    """eps~ = (1 + w) eps(y_t, t, y) - w eps(y_t, t, null), checked on a stub network with known outputs."""
    ddpm = _ddpm()
    ddpm.net = _Stub(null=CLASSES)
    y, t, labels = torch.randn(5, 3), torch.tensor(3), torch.tensor([0, 1, 2, 0, 1])
    conditional = 0.3 * y + 0.03 + 0.1 * labels.unsqueeze(-1)
    unconditional = -0.2 * y + 0.06
    expected = (1 + weight) * conditional - weight * unconditional
    torch.testing.assert_close(ddpm.noise_prediction(y, t, Conditioning(labels, weight)), expected)
    score = ddpm.score(y, t, Conditioning(labels, weight))
    torch.testing.assert_close(score, -expected / (1 - ddpm.alpha_bars[3]).sqrt())


@pytest.mark.parametrize("decoder", ["discretized_gaussian", "bernoulli"])
@pytest.mark.parametrize("sampler", ["ancestral", "pc", "langevin"])
def test_every_sampler_and_decoder_uses_the_guided_prediction(sampler, decoder):
    """Guided sampling with a network equals unguided sampling with a network that outputs the guided mix itself:
    with the same seed every draw is the same, so every prediction the sampler makes is guided."""
    weight, samples = 2.0, []
    for net, guidance in ((_Stub(CLASSES), weight), (_Stub(CLASSES, weight=weight), 0.0)):
        ddpm = _ddpm(num_steps=6, decoder=decoder)
        ddpm.net = net
        pyro.set_rng_seed(3)
        samples.append(ddpm.sample(6, mean=False, sampler=sampler, label=1, guidance=guidance))
    torch.testing.assert_close(samples[0], samples[1])


def test_training_drops_labels_at_the_rate_asked_and_evaluation_keeps_them():
    """In training mode the fraction of null labels the network sees is Binomial(N, p) / N: within Z standard
    errors sqrt(p (1 - p) / N) of p; every label kept is the true one. In eval mode none is dropped."""
    p, n = 0.3, 4000
    ddpm = _ddpm(label_dropout=p)
    ddpm.net = _Spy(ddpm.net)
    x, y = torch.rand(n, 3), torch.arange(n) % CLASSES
    ddpm.train()
    ddpm.model(x, y)
    seen = ddpm.net.labels[0]
    assert all(torch.equal(labels, seen) for labels in ddpm.net.labels)  # one draw per call, for every site
    dropped = seen == CLASSES
    assert abs(dropped.double().mean().item() - p) < Z * math.sqrt(p * (1 - p) / n)
    assert torch.equal(seen[~dropped], y[~dropped])
    ddpm.eval()
    ddpm.net.labels.clear()
    ddpm.model(x, y)
    assert all(torch.equal(labels, y) for labels in ddpm.net.labels)


def test_the_conditional_bounds_take_labels_and_depend_on_them():
    ddpm = _ddpm().eval()
    x, y = _pixels(), torch.tensor([0, 1, 2, 0, 1, 2])
    assert elbo(ddpm.model, ddpm.guide, x, y, num_particles=2).shape == (6,)
    result = log_likelihood(ddpm.chain_model, ddpm.chain_guide, x, y, num_samples=8, chunk_size=16)
    assert result.estimate.shape == (6,) and torch.isfinite(result.estimate).all()
    torch.manual_seed(0)
    given_y = ddpm.analytic_elbo(x, y)
    torch.manual_seed(0)
    given_other = ddpm.analytic_elbo(x, (y + 1) % CLASSES)
    assert given_y.shape == (6,) and not torch.equal(given_y, given_other)  # the same draws, other labels


def test_a_conditional_model_needs_labels():
    ddpm = _ddpm()
    with pytest.raises(PpgenError, match="needs labels: call it with"):
        ddpm.model(_pixels())
    with pytest.raises(PpgenError, match="needs labels"):
        ddpm.score(torch.randn(2, 3), torch.tensor(2))
    with pytest.raises(PpgenError, match="model.conditional = true needs labelled data"):
        DDPM.from_spec(DDPMSpec(conditional=True, num_steps=30, hidden=[8]), (3,))


def test_the_label_embedding_is_the_only_new_parameter():
    """An unconditional model's parameters keep their names (its checkpoints load); a conditional one adds one
    code per class and one for the null label."""
    unconditional = set(_ddpm(num_classes=0).state_dict())
    conditional = _ddpm().state_dict()
    assert not any("label" in name for name in unconditional)
    assert set(conditional) - unconditional == {"net.label_embed.weight"}
    assert conditional["net.label_embed.weight"].shape == (CLASSES + 1, 4)


def test_the_conditional_unet_takes_labels_in_every_program():
    pyro.set_rng_seed(0)
    unet = DDPM(
        64,
        (8, 8),
        num_steps=5,
        network="unet",
        channels=8,
        time_dim=8,
        levels=17,
        time_subsample=2,
        beta_end=2e-3,
        num_classes=10,
    )
    assert unet.state_dict()["net.label_embed.weight"].shape == (11, 8)
    x, y = torch.randint(0, 17, (3, 64)).float() / 16, torch.tensor([0, 4, 9])
    assert elbo(unet.model, unet.guide, x, y, num_particles=2).shape == (3,)
    assert log_likelihood(unet.chain_model, unet.chain_guide, x, y, num_samples=3).estimate.shape == (3,)
    assert unet.sample(2, label=4, guidance=1.0).shape == (2, 64)


def test_from_spec_takes_the_classes_from_the_training_labels():
    spec = DDPMSpec(conditional=True, label_dropout=0.2, num_steps=30, hidden=[8])
    ddpm = DDPM.from_spec(spec, (3,), labels=torch.tensor([0, 4, 2]))
    assert (ddpm.num_classes, ddpm.label_dropout, ddpm.data_keys) == (5, 0.2, ("x", "y"))
    assert DDPM.from_spec(DDPMSpec(num_steps=30, hidden=[8]), (3,)).data_keys == ("x",)


def test_a_draw_without_a_label_goes_through_the_classes_in_turn():
    """A run's sample grid draws 64 with the spec's [sampling] table: with label None it shows every class."""
    ddpm = _ddpm()
    ddpm.net = _Spy(ddpm.net)
    ddpm.draw(8, SamplingSpec())
    assert ddpm.net.labels[0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    ddpm.net.labels.clear()
    ddpm.draw(4, SamplingSpec(label=2, guidance=1.0))
    assert {tuple(labels.tolist()) for labels in ddpm.net.labels} == {(2, 2, 2, 2), (CLASSES,) * 4}


def test_labels_and_guidance_are_refused_where_they_do_not_apply():
    with pytest.raises(PpgenError, match=r"sampling.label = 3: the model's classes are 0..2"):
        _ddpm().sample(2, label=3)
    with pytest.raises(PpgenError, match=r"need a label-conditional diffusion model \(model.conditional = true\)"):
        _ddpm(num_classes=0).draw(2, SamplingSpec(guidance=1.0))
    with pytest.raises(PpgenError, match="which a model trained with model.label_dropout = 0 never learned"):
        _ddpm(label_dropout=0.0).sample(2, guidance=1.0)


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("guided") / "run"
    budget = ["inference.epochs=1", "inference.device=cpu", *TINY_DDPM]
    run(load_spec(MODELS / "ddpm-guided.toml", overrides=budget), out, progress=False)
    return out


@pytest.fixture(scope="module")
def unconditional_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddpm") / "run"
    sizes = [part for setting in TINY_DDPM for part in ("--set", setting)]
    result = cli("run", MODELS / "ddpm.toml", "--out", out, *TINY, *sizes)
    assert result.code == 0, result.err
    return out


def test_a_conditional_run_trains_evaluates_and_samples_a_label_with_guidance(guided_run):
    metrics = json.loads((guided_run / "metrics.json").read_text())
    test = metrics["test"]
    assert math.isfinite(test["elbo"]) and math.isfinite(test["nll"]) and test["nll_num_examples"] == 4
    assert (guided_run / "samples.png").read_bytes().startswith(PNG_MAGIC)
    result = cli("sample", guided_run, "--label", 3, "--guidance", 2.0, "-n", 8)
    assert result.code == 0, result.err
    assert (guided_run / "samples-n8-seed0-ancestral-label3-guidance2.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("sample", "{guided}", "--label", "10"), "--label 10: {guided}'s data has labels 0..9"),
        (
            ("sample", "{ddpm}", "--guidance", "2.0"),
            "--label and --guidance need a label-conditional diffusion model (model.kind = 'ddpm' with"
            " model.conditional = true); {ddpm} holds an unconditional 'ddpm'",
        ),
        (
            ("run", str(MODELS / "ddpm-guided.toml"), "--set", "data.name=moons", "--out", "{tmp}/moons"),
            "model.conditional = true needs labelled data: this data set has no labels",
        ),
    ],
    ids=["label beyond the classes", "guidance without labels", "conditional without labels"],
)
def test_mistakes_are_one_line_errors(guided_run, unconditional_run, tmp_path, argv, message):
    names = {"guided": guided_run, "ddpm": unconditional_run, "tmp": tmp_path}
    result = cli(*(part.format(**names) for part in argv))
    assert result.code == 2
    assert result.err == f"ppgen: error: {message.format(**names)}\n"
