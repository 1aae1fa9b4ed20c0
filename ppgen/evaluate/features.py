"""The feature space of ppgen's sample-based figures: a small classifier trained on a data set's labels.

The FID-like and KID-like distances and precision/recall (``ppgen.evaluate.sample_metrics``) compare samples
with data in features where distances mean something, as FID uses the Inception-v3 network's (Heusel et al.
2017, arXiv:1706.08500). ppgen has no such network for its data sets, so it trains an MLP on the training
split's labels (digits, MNIST: 10 classes) and takes the activations of its last hidden layer. Figures in
these features are "FID-like": they rank models on the same data set and features, and are NOT comparable
with Inception FID or with figures in another run's features. Unlabelled data (the 2-D toy sets, a file
without labels) are compared in the raw data instead, and the figures say so.

The trained weights are cached in ``<cache_dir>/<sha256>.pt``, keyed by a fingerprint of the training
examples, labels and training settings; a second evaluation loads them instead of training again, and a
corrupt cache file is rebuilt (trained again and rewritten) rather than trusted.
"""

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ppgen.data import Splits
from ppgen.files import atomic_open

__all__ = ["Features", "FeatureClassifier", "raw_features", "classifier_features", "data_features"]

FEATURES_FORMAT = 1
HIDDEN = (128, 64)  # the classifier's hidden widths; the last one's activations are the features
STEPS, BATCH_SIZE, LEARNING_RATE = 500, 128, 1e-3  # Adam on minibatches drawn with replacement


class FeatureClassifier(torch.nn.Module):
    """An MLP classifier of examples [N, D] into ``classes``; ``features`` [N, HIDDEN[-1]] are the ReLU
    activations of its last hidden layer."""

    def __init__(self, input_dim: int, classes: int):
        super().__init__()
        widths = [input_dim, *HIDDEN]
        self.body = torch.nn.Sequential(
            *(layer for a, b in zip(widths, widths[1:]) for layer in (torch.nn.Linear(a, b), torch.nn.ReLU()))
        )
        self.head = torch.nn.Linear(HIDDEN[-1], classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """[N, classes] logits."""
        return self.head(self.body(x))


@dataclass(frozen=True, eq=False)
class Features:
    """A map from examples [N, D] to features [N, F], and what it is.

    Args:
        network: the trained classifier, or None for the raw examples.
        description: one line for reports (what the features are, and that they are not Inception's).
        cache: how the network was obtained: "loaded" from the cache, "trained", "rebuilt" (the cached file
            was corrupt), or None for raw features.
        validation_accuracy: the classifier's accuracy on the validation split, or None.
    """

    network: FeatureClassifier | None
    description: str
    cache: str | None = None
    validation_accuracy: float | None = None

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        if self.network is None:
            return x
        return self.network.features(x.float().cpu())


def raw_features(reason: str) -> Features:
    """The identity map: the examples are their own features (``reason`` says why)."""
    return Features(None, f"the raw data ({reason}): FID-like figures here are not Inception FID")


def classifier_features(
    train: tuple[Tensor, Tensor],
    validation: tuple[Tensor, Tensor] | None,
    cache_dir: str | Path,
    *,
    steps: int = STEPS,
    seed: int = 0,
) -> Features:
    """Features of a classifier of ``train`` = (x [N, D], labels [N]), loaded from ``cache_dir`` when trained
    before on the same examples and settings, else trained (``steps`` Adam steps, seeded) and cached."""
    x, labels = train[0].float().cpu(), train[1].long().cpu()
    path = Path(cache_dir) / f"{_fingerprint(x, labels, steps, seed)}.pt"
    network, cache = _load(path, x.shape[1], int(labels.max()) + 1), "loaded"
    if network is None:
        cache = "rebuilt" if path.exists() else "trained"
        network = train_feature_classifier(x, labels, steps=steps, seed=seed)
        with atomic_open(path) as file:
            torch.save({"format": FEATURES_FORMAT, "state_dict": network.state_dict()}, file)
    accuracy = None
    if validation is not None:
        with torch.no_grad():
            predictions = network(validation[0].float().cpu()).argmax(-1)
        accuracy = (predictions == validation[1].cpu()).double().mean().item()
    accuracy_text = "" if accuracy is None else f", validation accuracy {accuracy:.3f}"
    description = (
        f"ppgen's {HIDDEN[-1]}-unit MLP classifier features (trained on the training split's labels{accuracy_text});"
        " FID-like, not comparable with Inception FID"
    )
    return Features(network.eval(), description, cache, accuracy)


def data_features(splits: Splits, cache_dir: str | Path) -> Features:
    """The features for a data set: a classifier's (``classifier_features``) on its training split as
    evaluation sees it (binarized or dequantized once) when it has labels, else the raw data."""
    if splits.train.y is None:
        return raw_features("the data have no labels to train a feature classifier on")
    validation = (splits.validation.x, splits.validation.y) if splits.validation.y is not None else None
    return classifier_features((splits.fixed_train(), splits.train.y), validation, cache_dir)


def train_feature_classifier(x: Tensor, labels: Tensor, *, steps: int = STEPS, seed: int = 0) -> FeatureClassifier:
    """An MLP trained on examples x [N, D] and labels [N] by ``steps`` minibatch Adam steps (cross-entropy);
    seeded, and leaving the global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = FeatureClassifier(x.shape[1], int(labels.max()) + 1)
        optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
        for _ in range(steps):
            batch = torch.randint(len(x), (min(BATCH_SIZE, len(x)),))
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(network(x[batch]), labels[batch]).backward()
            optimizer.step()
    return network


def _fingerprint(x: Tensor, labels: Tensor, steps: int, seed: int) -> str:
    """sha256 of the training examples, labels, network and training settings."""
    digest = hashlib.sha256()
    settings = (FEATURES_FORMAT, HIDDEN, steps, BATCH_SIZE, LEARNING_RATE, seed, tuple(x.shape))
    digest.update(repr(settings).encode())
    for tensor in (x, labels):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _load(path: Path, input_dim: int, classes: int) -> FeatureClassifier | None:
    """The classifier cached at ``path``, or None when there is none or the file is corrupt."""
    if not path.is_file():
        return None
    network = FeatureClassifier(input_dim, classes)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(saved["state_dict"])
    except (RuntimeError, EOFError, pickle.UnpicklingError, KeyError, TypeError):  # a torn or foreign file
        return None
    return network
