"""Sample-based figures (ppgen.evaluate.sample_metrics) and their feature space (ppgen.evaluate.features).

Power figures in the comments were simulated with the metrics' defaults: 100 seeded replicates (seeds 1000..1099)
of n = 200 draws of N(0.5 * 1, I) against n = 200 of N(0, I), at level 0.05; the same replicates with equal
distributions rejected at rates 0.02 (MMD, 2-D), 0.04 (MMD, 8-D), 0.02 (C2ST, both) and 0 (KID rule, both).
The fixed-seed checks use seed 1: seed 0's draws are an unusual pair (their means differ by a chi-square of 24
on 8 degrees of freedom, p = 0.002), which the MMD test rightly flags at p = 0.01."""

import torch
from scipy import linalg, stats

from ppgen.data import Split, Splits
from ppgen.evaluate.features import Features, classifier_features, data_features
from ppgen.evaluate.sample_metrics import (
    classifier_two_sample_test,
    frechet_distance,
    gaussian_frechet_distance,
    kernel_inception_distance,
    mmd_test,
    precision_recall,
    sample_evaluation,
)

ALPHA = 0.05
REPLICATES = 50
# Rejections in REPLICATES tests at level ALPHA of equal distributions: at most Binomial(50, 0.05)'s 99.9%
# quantile (8), so a valid test fails this check with probability < 0.001. (The lower tail allows 0.)
MOST_REJECTIONS = int(stats.binom.ppf(0.999, REPLICATES, ALPHA))


def normal_pair(d: int, shift: float, seed: int, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws of N(shift * 1, I_d) and n of N(0, I_d)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator) + shift, torch.randn(n, d, generator=generator)


def test_mmd_detects_a_mean_shift():
    # Simulated power at ALPHA: 1.00 in 2-D and in 8-D (100 of 100 replicates rejected).
    for d in (2, 8):
        result = mmd_test(*normal_pair(d, 0.5, seed=1))
        assert result["mmd2"] > 0 and result["mmd2_p_value"] <= ALPHA


def test_mmd_accepts_equal_distributions_at_its_level():
    assert mmd_test(*normal_pair(8, 0.0, seed=1))["mmd2_p_value"] > ALPHA
    rejections = sum(
        mmd_test(*normal_pair(2, 0.0, seed=seed, n=50), permutations=99, seed=seed)["mmd2_p_value"] <= ALPHA
        for seed in range(REPLICATES)
    )
    assert rejections <= MOST_REJECTIONS


def test_mmd_is_the_unbiased_estimate_with_the_median_bandwidth():
    x, y = normal_pair(3, 0.3, seed=1, n=7)
    x, y = x.double(), y[:5].double()
    pooled = torch.cat([x, y])
    sigma = torch.pdist(pooled).median().item()
    k = lambda a, b: torch.exp(-torch.cdist(a, b).square() / (2 * sigma**2))  # noqa: E731
    off_diagonal = lambda m: (m.sum() - m.diagonal().sum()) / (len(m) * (len(m) - 1))  # noqa: E731
    expected = off_diagonal(k(x, x)) + off_diagonal(k(y, y)) - 2 * k(x, y).mean()  # Gretton et al. 2012, Eq. 3
    result = mmd_test(x, y, permutations=10)
    assert result["mmd2_bandwidth"] == sigma
    assert abs(result["mmd2"] - expected.item()) < 1e-12  # the same sums in float64


def test_classifier_test_detects_a_mean_shift():
    # Simulated power at ALPHA: 1.00 in 8-D (Bayes accuracy Phi(0.5 * sqrt(8) / 2) = 0.76) and 0.85 in 2-D
    # (Bayes accuracy 0.64); this checks the 8-D case.
    result = classifier_two_sample_test(*normal_pair(8, 0.5, seed=1))
    assert result["c2st_accuracy"] > 0.6 and result["c2st_p_value"] <= ALPHA
    assert result["c2st_num_test"] == 200


def test_classifier_test_accepts_equal_distributions_at_its_level():
    assert classifier_two_sample_test(*normal_pair(8, 0.0, seed=1))["c2st_p_value"] > ALPHA
    rejections = sum(
        classifier_two_sample_test(*normal_pair(2, 0.0, seed=seed, n=40), steps=50, seed=seed)["c2st_p_value"] <= ALPHA
        for seed in range(REPLICATES)
    )
    assert rejections <= MOST_REJECTIONS


def test_classifier_test_interval_is_clopper_pearson():
    result = classifier_two_sample_test(*normal_pair(2, 1.0, seed=3, n=60), seed=3)
    n = result["c2st_num_test"]
    correct = round(result["c2st_accuracy"] * n)
    low, high = result["c2st_interval"]
    # Clopper & Pearson 1934: the Beta quantiles of the exact binomial interval.
    assert abs(low - stats.beta.ppf(0.025, correct, n - correct + 1)) < 1e-9
    assert abs(high - stats.beta.ppf(0.975, correct + 1, n - correct)) < 1e-9
    assert abs(result["c2st_p_value"] - stats.binom.sf(correct - 1, n, 0.5)) < 1e-12


def test_frechet_distance_closed_form():
    # Diagonal covariances commute: the distance is |m1 - m2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    m1, m2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 1.0])
    expected = (m1 - m2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    assert abs(gaussian_frechet_distance(m1, a.diag(), m2, b.diag()) - expected.item()) < 1e-12
    # Non-commuting covariances: against scipy's matrix square root.
    generator = torch.Generator().manual_seed(0)
    c1, c2 = (w @ w.T + torch.eye(4, dtype=torch.float64) for w in torch.randn(2, 4, 4, generator=generator).double())
    expected = c1.trace() + c2.trace() - 2 * linalg.sqrtm((c1 @ c2).numpy()).real.trace()
    assert abs(gaussian_frechet_distance(torch.zeros(4), c1, torch.zeros(4), c2) - expected.item()) < 1e-9


def with_moments(z: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """z [N, D] turned into samples whose sample mean and unbiased covariance are exactly mean and cov."""
    z = z.double() - z.double().mean(0)
    whitened = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T
    return mean + whitened @ torch.linalg.cholesky(cov).T


def test_frechet_distance_of_samples_is_that_of_their_moments():
    generator = torch.Generator().manual_seed(1)
    mean1, mean2 = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, -1.0, 0.5])
    cov1 = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]], dtype=torch.float64)
    cov2 = torch.tensor([[2.0, 0.0, 0.4], [0.0, 1.0, 0.0], [0.4, 0.0, 0.5]], dtype=torch.float64)
    x = with_moments(torch.randn(100, 3, generator=generator), mean1, cov1)
    y = with_moments(torch.randn(80, 3, generator=generator), mean2, cov2)
    result = frechet_distance(x, y, bootstraps=20)
    assert abs(result["fid_like"] - gaussian_frechet_distance(mean1, cov1, mean2, cov2)) < 1e-9
    assert result["fid_like_stderr"] > 0
    assert abs(frechet_distance(x, x)["fid_like"]) < 1e-9  # identical sets: 0 up to rounding of the eigenvalues


def test_frechet_distance_detects_a_mean_shift():
    # The population distance is 0.25 d; simulated power of "shifted pair > a pair of equal distributions":
    # 1.00 in 2-D and 8-D.
    shifted, equal = frechet_distance(*normal_pair(8, 0.5, seed=1)), frechet_distance(*normal_pair(8, 0.0, seed=2))
    assert shifted["fid_like"] > equal["fid_like"]
    # |0.5 * 1 + e|^2 with e ~ N(0, 0.01 I) (the difference of two means of 200) has sd 2 * 0.5 * sqrt(8 * 0.01)
    # = 0.28 and mean 2.08; the covariance term adds a bias O(d^2 / n) of about 0.1: 4 sds of slack.
    assert abs(shifted["fid_like"] - 0.25 * 8) < 4 * 0.28 + 0.2


def test_kid_is_unbiased():
    # Mean over independent replicates of equal distributions is 0 within 3 standard errors of that mean.
    estimates = torch.tensor(
        [kernel_inception_distance(*normal_pair(4, 0.0, seed=seed, n=60), subsets=5)["kid_like"] for seed in range(40)]
    )
    assert abs(estimates.mean()) < 3 * estimates.std() / len(estimates) ** 0.5


def test_kid_on_whole_sets_is_the_unbiased_polynomial_mmd():
    x, y = (t.double() for t in normal_pair(3, 0.2, seed=2, n=9))
    k = lambda a, b: (a @ b.T / 3 + 1) ** 3  # noqa: E731  Bińkowski et al. 2018's kernel
    off_diagonal = lambda m: (m.sum() - m.diagonal().sum()) / (len(m) * (len(m) - 1))  # noqa: E731
    expected = off_diagonal(k(x, x)) + off_diagonal(k(y, y)) - 2 * k(x, y).mean()
    result = kernel_inception_distance(x, y, subsets=3, subset_size=9)
    assert abs(result["kid_like"] - expected.item()) < 1e-12 and result["kid_like_stderr"] < 1e-12


def test_kid_detects_a_mean_shift():
    # Simulated power of "KID-like > 2 x its stderr": 0.98 in 2-D, 1.00 in 8-D (0 of 100 for equal distributions).
    result = kernel_inception_distance(*normal_pair(8, 0.5, seed=1))
    assert result["kid_like"] > 2 * result["kid_like_stderr"]
    assert result["kid_subset_size"] == 100 and result["kid_subsets"] == 100


def two_modes(n: int, seed: int, modes: tuple[float, ...] = (-5.0, 5.0)) -> torch.Tensor:
    """n points of an equal mixture of N((m, 0), I) over the modes m (far apart), alternating."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[modes[i % len(modes)], 0.0] for i in range(n)])
    return centres + torch.randn(n, 2, generator=generator)


def test_precision_recall_of_identical_sets_is_one():
    x = two_modes(100, seed=0)
    assert precision_recall(x, x.clone()) == {
        "precision": 1.0, "precision_stderr": 0.0, "recall": 1.0, "recall_stderr": 0.0, "k": 3
    }  # fmt: skip


def test_precision_recall_see_a_dropped_mode():
    reference = two_modes(200, seed=0)
    full, dropped = (
        precision_recall(two_modes(200, seed=1), reference),
        precision_recall(two_modes(200, seed=1, modes=(5.0,)), reference),
    )
    # One mode of two, 5 sds from the other: half the reference lies outside the samples' manifold, so the
    # recall is about 1/2 (binomial stderr 0.035 on 200 points; 4 of them allowed), while each sample still
    # lies in the data's manifold about as often as with both modes.
    assert abs(dropped["recall"] - 0.5 * full["recall"]) < 4 * 0.035
    assert full["recall"] - dropped["recall"] > 4 * (full["recall_stderr"] + dropped["recall_stderr"])
    assert dropped["precision"] > full["precision"] - 4 * (full["precision_stderr"] + dropped["precision_stderr"])


def test_sample_evaluation_gives_every_figure_and_the_sizes():
    x, y = normal_pair(3, 0.0, seed=0, n=30)
    features = Features(None, "test features")
    figures = sample_evaluation(x, y[:20], features=features, kid_subsets=4, permutations=19, bootstraps=5)
    assert figures["num_samples"] == 30 and figures["num_reference"] == 20 and figures["features"] == "test features"
    for key in ("mmd2_p_value", "c2st_p_value", "fid_like_stderr", "kid_like_stderr", "precision", "recall"):
        assert figures[key] is not None
    assert figures["mmd2_permutations"] == 19 and figures["kid_subset_size"] == 10 and figures["c2st_num_test"] == 20
    assert sample_evaluation(x, y[:20], kid_subsets=4, permutations=19)["features"] == "the examples themselves"


def labelled(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n 6-D examples of 3 classes, centred on different points."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    return torch.randn(n, 6, generator=generator) + 3 * torch.eye(6)[labels], labels


def test_feature_classifier_is_cached_and_reused(tmp_path, monkeypatch):
    train, validation = labelled(150, seed=0), labelled(60, seed=1)
    first = classifier_features(train, validation, tmp_path, steps=60)
    assert first.cache == "trained" and first.validation_accuracy > 0.9  # classes 3 sds apart
    assert len(list(tmp_path.glob("*.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier was trained again")

    monkeypatch.setattr("ppgen.evaluate.features.train_feature_classifier", no_training)
    second = classifier_features(train, validation, tmp_path, steps=60)
    assert second.cache == "loaded"
    assert torch.equal(first(validation[0]), second(validation[0]))
    assert "FID-like, not comparable with Inception FID" in second.description


def test_a_corrupt_feature_cache_is_rebuilt(tmp_path):
    train = labelled(150, seed=0)
    first = classifier_features(train, None, tmp_path, steps=60)
    (path,) = tmp_path.glob("*.pt")
    path.write_bytes(b"not a torch file")
    rebuilt = classifier_features(train, None, tmp_path, steps=60)
    assert rebuilt.cache == "rebuilt"
    assert torch.equal(first(train[0]), rebuilt(train[0]))  # seeded training: the same network again
    assert classifier_features(train, None, tmp_path, steps=60).cache == "loaded"  # and the file is whole again


def test_unlabelled_data_are_their_own_features(tmp_path):
    x = torch.randn(30, 2)
    splits = Splits(Split(x[:10]), Split(x[10:20]), Split(x[20:]), event_shape=(2,), binarize="none")
    features = data_features(splits, tmp_path)
    assert features.network is None and torch.equal(features(x), x)
    assert features.description.startswith("the raw data") and "not Inception FID" in features.description
    assert not list(tmp_path.iterdir())
