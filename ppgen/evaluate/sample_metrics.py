"""Sample-based comparison of a model with data: figures that need only draws, so that a model without a
likelihood (a GAN) can be compared with one that has one.

Every metric is a pure function of two sample tensors, ``samples`` [N, D] (from the model) and ``reference``
[M, D] (held-out data), computed in float64 on the inputs' device; seeds drive private generators and leave
the global random state alone. Memory is O((N + M)^2) for the kernel and distance matrices.

- ``mmd_test``: unbiased MMD^2 with a Gaussian kernel and a permutation p-value (Gretton et al. 2012, JMLR 13).
- ``classifier_two_sample_test``: a classifier's held-out accuracy at telling samples from data, with an exact
  binomial p-value and Clopper-Pearson interval (Lopez-Paz & Oquab 2017, arXiv:1610.06545).
- ``frechet_distance``: the Fréchet distance of Gaussians fitted to two feature sets. In ppgen's features (a
  small classifier ppgen trains, ``ppgen.evaluate.features``) it is "FID-like": NOT comparable with the FID of
  Heusel et al. (2017, arXiv:1706.08500), which uses Inception-v3 features of natural images.
- ``kernel_inception_distance``: unbiased polynomial-kernel MMD^2 over subsets (Bińkowski et al. 2018,
  arXiv:1801.01401); likewise "KID-like" in ppgen's features.
- ``precision_recall``: k-NN manifold precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991).
- ``sample_evaluation``: all of them at once, as one dict of figures with their errors and sizes.
"""

from collections.abc import Callable, Sequence

import torch
from scipy import stats
from torch import Tensor

__all__ = [
    "gaussian_bandwidth",
    "mmd_test",
    "classifier_two_sample_test",
    "gaussian_frechet_distance",
    "frechet_distance",
    "kernel_inception_distance",
    "precision_recall",
    "sample_evaluation",
]

PERMUTATIONS = 200  # MMD permutation test: the smallest attainable p-value is 1 / (1 + permutations)
C2ST_HIDDEN = (32,)  # the two-sample classifier's hidden widths (() is logistic regression)
C2ST_STEPS = 300  # full-batch Adam steps of the two-sample classifier
KID_SUBSETS, KID_MAX_SUBSET = 100, 1000  # Bińkowski et al.'s defaults
BOOTSTRAPS = 50  # resamples for the standard error of the Fréchet distance
NEIGHBOURS = 3  # k of the k-NN manifolds (Kynkäänniemi et al. 2019 use k = 3)


def gaussian_bandwidth(pooled: Tensor) -> float:
    """The median heuristic (Gretton et al. 2012, Sec. 8): the median Euclidean distance between distinct
    points of the pooled sample [N + M, D], the sigma of the kernel exp(-|a - b|^2 / (2 sigma^2))."""
    distances = torch.pdist(pooled.double())
    return max(distances.median().item(), torch.finfo(torch.float64).tiny) if len(distances) else 1.0


def mmd_test(
    samples: Tensor,
    reference: Tensor,
    *,
    permutations: int = PERMUTATIONS,
    bandwidth: float | None = None,
    seed: int = 0,
) -> dict:
    """Unbiased MMD^2 (Gretton et al. 2012, Eq. 3) with a Gaussian kernel, and a permutation test of equal
    distributions.

    Args:
        samples: [N, D], N >= 2. reference: [M, D], M >= 2.
        permutations: random relabellings of the pooled sample; p = (1 + #{MMD^2_perm >= MMD^2}) / (1 + P),
            a valid p-value for any P.
        bandwidth: the kernel's sigma; None: the median heuristic on the pooled sample (``gaussian_bandwidth``).
        seed: seed of the permutations.

    Returns:
        {"mmd2", "mmd2_p_value", "mmd2_bandwidth", "mmd2_permutations"}.
    """
    x, y = _pair(samples, reference, minimum=2)
    pooled = torch.cat([x, y])
    sigma = gaussian_bandwidth(pooled) if bandwidth is None else bandwidth
    kernel = torch.exp(-torch.cdist(pooled, pooled).square() / (2 * sigma**2))
    kernel.fill_diagonal_(0.0)  # the unbiased estimate leaves out the i == j terms
    generator = torch.Generator(device="cpu").manual_seed(seed)
    orders = [torch.arange(len(pooled))] + [
        torch.randperm(len(pooled), generator=generator) for _ in range(permutations)
    ]
    in_x = torch.zeros(len(orders), len(pooled), dtype=torch.float64)  # row p: 1 where permutation p puts X
    in_x.scatter_(1, torch.stack(orders)[:, : len(x)], 1.0)
    in_x = in_x.to(kernel.device)
    statistics = _unbiased_mmd2_of_labels(kernel, in_x, len(x), len(y))  # [1 + permutations]
    observed = statistics[0]
    exceed = (statistics[1:] >= observed).sum().item()
    return {
        "mmd2": observed.item(),
        "mmd2_p_value": (1 + exceed) / (1 + permutations),
        "mmd2_bandwidth": sigma,
        "mmd2_permutations": permutations,
    }


def classifier_two_sample_test(
    samples: Tensor,
    reference: Tensor,
    *,
    hidden: Sequence[int] = C2ST_HIDDEN,
    steps: int = C2ST_STEPS,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017, arXiv:1610.06545): a small MLP (logistic regression
    when ``hidden`` is empty) learns to tell samples from reference on a random half of the pooled examples,
    and its accuracy on the other half is tested against chance.

    Both sets are cut to n = min(N, M) examples, so that chance accuracy is exactly 1/2; the inputs are
    standardized with the training half's moments. Under equal distributions the number of correct test
    predictions is Binomial(n_test, 1/2) (as in the paper, up to the fixed class totals of the split): the
    p-value is its exact one-sided tail, and the interval is Clopper-Pearson's.

    Args:
        samples: [N, D]. reference: [M, D]; min(N, M) >= 2.
        hidden: widths of the classifier's hidden layers (ReLU).
        steps: full-batch Adam steps (learning rate 1e-2, weight decay 1e-3).
        confidence: level of the accuracy's interval.
        seed: seed of the subsets, the split and the classifier's initial weights.

    Returns:
        {"c2st_accuracy", "c2st_p_value", "c2st_interval" [low, high], "c2st_num_test"}.
    """
    x, y = _pair(samples, reference, minimum=2)
    n = min(len(x), len(y))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    x = x[torch.randperm(len(x), generator=generator)[:n].to(x.device)]
    y = y[torch.randperm(len(y), generator=generator)[:n].to(y.device)]
    inputs = torch.cat([x, y])
    labels = torch.cat([torch.ones(n), torch.zeros(n)]).to(inputs)
    order = torch.randperm(2 * n, generator=generator).to(inputs.device)
    train, test = order[:n], order[n:]
    mean, std = inputs[train].mean(0), inputs[train].std(0).clamp_min(1e-8)
    inputs = (inputs - mean) / std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = _mlp(inputs.shape[1], hidden, 1).to(inputs)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        logits = classifier(inputs[train]).squeeze(-1)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[train]).backward()
        optimizer.step()
    with torch.no_grad():
        correct = int(((classifier(inputs[test]).squeeze(-1) > 0).to(labels) == labels[test]).sum().item())
    result = stats.binomtest(correct, len(test), 0.5, alternative="greater")
    interval = stats.binomtest(correct, len(test)).proportion_ci(confidence, method="exact")
    return {
        "c2st_accuracy": correct / len(test),
        "c2st_p_value": float(result.pvalue),
        "c2st_interval": [float(interval.low), float(interval.high)],
        "c2st_num_test": len(test),
    }


def gaussian_frechet_distance(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> float:
    """The squared Fréchet (2-Wasserstein) distance of N(mean1, cov1) and N(mean2, cov2) (Dowson & Landau
    1982): |mean1 - mean2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^{1/2}), for means [F] and covariances [F, F].

    tr((cov1 cov2)^{1/2}) is computed as the sum of the square roots of the eigenvalues of the symmetric
    cov1^{1/2} cov2 cov1^{1/2}, which has the same spectrum."""
    mean1, cov1, mean2, cov2 = (t.double() for t in (mean1, cov1, mean2, cov2))
    eigenvalues, vectors = torch.linalg.eigh(cov1)
    root1 = (vectors * eigenvalues.clamp_min(0).sqrt()) @ vectors.T
    middle = root1 @ cov2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    distance = (mean1 - mean2).square().sum() + cov1.trace() + cov2.trace() - 2 * trace_root
    return distance.item()


def frechet_distance(samples: Tensor, reference: Tensor, *, bootstraps: int = 0, seed: int = 0) -> dict:
    """The Fréchet distance of Gaussians fitted (sample mean, unbiased covariance) to two feature sets
    [N, F] and [M, F], and its bootstrap standard error over ``bootstraps`` resamples of both sets (0: none).

    The estimate is biased upwards by O(F / N) (Chong & Forsyth 2020, arXiv:1911.07023): compare figures only
    at equal sizes. In ppgen's features it is "FID-like", not Inception FID (see the module's docstring).

    Returns:
        {"fid_like", "fid_like_stderr"} (stderr None without bootstraps).
    """
    x, y = _pair(samples, reference, minimum=2)
    distance = _fitted_frechet(x, y)
    stderr = None
    if bootstraps:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        draws = [
            _fitted_frechet(
                x[torch.randint(len(x), (len(x),), generator=generator).to(x.device)],
                y[torch.randint(len(y), (len(y),), generator=generator).to(y.device)],
            )
            for _ in range(bootstraps)
        ]
        stderr = torch.tensor(draws, dtype=torch.float64).std().item()
    return {"fid_like": distance, "fid_like_stderr": stderr}


def kernel_inception_distance(
    samples: Tensor, reference: Tensor, *, subsets: int = KID_SUBSETS, subset_size: int | None = None, seed: int = 0
) -> dict:
    """Kernel distance (Bińkowski et al. 2018, arXiv:1801.01401, Sec. 4): the unbiased MMD^2 with the kernel
    k(a, b) = (a . b / F + 1)^3, averaged over ``subsets`` random subsets of ``subset_size`` examples of each
    set (drawn without replacement); unbiased, so about 0 for equal distributions at any size.

    Args:
        samples: [N, F]. reference: [M, F].
        subsets: number of subsets.
        subset_size: examples per subset; None: min(1000, N // 2, M // 2), so that the subsets differ.
        seed: seed of the subsets.

    Returns:
        {"kid_like", "kid_like_stderr", "kid_subsets", "kid_subset_size"}: the mean over subsets and, as the
        paper reports it, the standard deviation of the subsets' estimates: the error of one estimate on
        ``subset_size`` examples, a conservative error of the mean.
    """
    x, y = _pair(samples, reference, minimum=4)
    size = subset_size or min(KID_MAX_SUBSET, len(x) // 2, len(y) // 2)
    if not 2 <= size <= min(len(x), len(y)):
        raise ValueError(f"subset_size {size} must be from 2 to min(N, M) = {min(len(x), len(y))}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    estimates = []
    for _ in range(subsets):
        a = x[torch.randperm(len(x), generator=generator)[:size].to(x.device)]
        b = y[torch.randperm(len(y), generator=generator)[:size].to(y.device)]
        kernel = (torch.cat([a, b]) @ torch.cat([a, b]).T / x.shape[1] + 1) ** 3
        kernel.fill_diagonal_(0.0)
        in_a = torch.cat([torch.ones(size), torch.zeros(size)]).to(kernel)[None]
        estimates.append(_unbiased_mmd2_of_labels(kernel, in_a, size, size)[0])
    estimates = torch.stack(estimates)
    return {
        "kid_like": estimates.mean().item(),
        "kid_like_stderr": estimates.std().item() if subsets > 1 else None,
        "kid_subsets": subsets,
        "kid_subset_size": size,
    }


def precision_recall(samples: Tensor, reference: Tensor, *, k: int = NEIGHBOURS) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991): each set's manifold is the
    union of balls around its points reaching their k-th nearest neighbour in the set. Precision: the share
    of samples inside the reference manifold (are samples realistic?); recall: the share of reference points
    inside the samples' manifold (is the data covered?). Identical sets give exactly 1 and 1.

    Args:
        samples: [N, F]. reference: [M, F]; N, M > k.

    Returns:
        {"precision", "precision_stderr", "recall", "recall_stderr", "k"}: each stderr is the binomial
        sqrt(p (1 - p) / n), given the other set's manifold.
    """
    x, y = _pair(samples, reference, minimum=k + 1)
    precision, recall = _coverage(x, y, k), _coverage(y, x, k)
    return {
        "precision": precision,
        "precision_stderr": (precision * (1 - precision) / len(x)) ** 0.5,
        "recall": recall,
        "recall_stderr": (recall * (1 - recall) / len(y)) ** 0.5,
        "k": k,
    }


def sample_evaluation(
    samples: Tensor,
    reference: Tensor,
    *,
    features: Callable[[Tensor], Tensor] | None = None,
    seed: int = 0,
    permutations: int = PERMUTATIONS,
    k: int = NEIGHBOURS,
    kid_subsets: int = KID_SUBSETS,
    bootstraps: int = BOOTSTRAPS,
) -> dict:
    """Every sample-based figure of model samples [N, D] against reference data [M, D] (N, M >= 4 and > k).

    MMD^2 and the classifier two-sample test see the examples themselves; the FID-like and KID-like distances
    and precision/recall see ``features`` of them ([N, F]: e.g. ``ppgen.evaluate.features.Features``; None:
    the examples themselves). ``features.description`` (if any) says what the features are.

    Returns:
        {"num_samples", "num_reference", "features", "mmd2", "mmd2_p_value", ..., "c2st_accuracy", ...,
        "fid_like", ..., "kid_like", ..., "precision", ..., "recall", ...}: see each metric's function.
    """
    x, y = _pair(samples, reference, minimum=max(4, k + 1))
    figures = {"num_samples": len(x), "num_reference": len(y)}
    figures["features"] = getattr(features, "description", "the examples themselves" if features is None else "")
    figures.update(mmd_test(x, y, permutations=permutations, seed=seed))
    figures.update(classifier_two_sample_test(x, y, seed=seed))
    fx, fy = (x, y) if features is None else (features(x).double(), features(y).double())
    figures.update(frechet_distance(fx, fy, bootstraps=bootstraps, seed=seed))
    figures.update(kernel_inception_distance(fx, fy, subsets=kid_subsets, seed=seed))
    figures.update(precision_recall(fx, fy, k=k))
    return figures


def _pair(samples: Tensor, reference: Tensor, minimum: int) -> tuple[Tensor, Tensor]:
    """Both sets as float64 matrices on the samples' device, after checking their shapes."""
    if samples.dim() != 2 or reference.dim() != 2 or samples.shape[1] != reference.shape[1]:
        shapes = f"{list(samples.shape)} and {list(reference.shape)}"
        raise ValueError(f"expected samples [N, D] and reference [M, D], got {shapes}")
    if min(len(samples), len(reference)) < minimum:
        sizes = f"{len(samples)} and {len(reference)}"
        raise ValueError(f"need at least {minimum} samples and reference examples, got {sizes}")
    return samples.detach().double(), reference.detach().double().to(samples.device)


def _unbiased_mmd2_of_labels(kernel: Tensor, in_x: Tensor, n: int, m: int) -> Tensor:
    """Unbiased MMD^2 for each labelling of the pooled sample: ``kernel`` [n + m, n + m] with a zero diagonal,
    ``in_x`` [P, n + m] one where a labelling puts a point in X (n of them), zero in Y; returns [P]."""
    in_y = 1 - in_x
    kx = in_x @ kernel  # [P, n + m]
    xx = (kx * in_x).sum(1) / (n * (n - 1))
    xy = (kx * in_y).sum(1) / (n * m)
    yy = ((in_y @ kernel) * in_y).sum(1) / (m * (m - 1))
    return xx + yy - 2 * xy


def _fitted_frechet(x: Tensor, y: Tensor) -> float:
    """The Fréchet distance of the Gaussians with the sample means and (unbiased) covariances of x and y."""
    cov_x, cov_y = (torch.atleast_2d(torch.cov(t.T)) for t in (x, y))
    return gaussian_frechet_distance(x.mean(0), cov_x, y.mean(0), cov_y)


def _coverage(points: Tensor, manifold: Tensor, k: int, chunk: int = 1024) -> float:
    """The share of ``points`` [P, F] within the k-NN radius of some point of ``manifold`` [Q, F]."""
    radii = torch.cat([torch.cdist(part, manifold).kthvalue(k + 1, dim=1).values for part in manifold.split(chunk)])
    inside = torch.cat([(torch.cdist(part, manifold) <= radii).any(1) for part in points.split(chunk)])
    return inside.double().mean().item()


def _mlp(inputs: int, hidden: Sequence[int], outputs: int) -> torch.nn.Sequential:
    widths = [inputs, *hidden]
    layers = [layer for a, b in zip(widths, widths[1:]) for layer in (torch.nn.Linear(a, b), torch.nn.ReLU())]
    return torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], outputs))
