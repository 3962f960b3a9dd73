"""The diversity sampler keeps every operator at marginal 1/T and draws sets more diverse than random."""

import itertools
import pickle

import numpy as np
import pytest

from ennas.method.sampler import DiversitySampler, sample_uniform_set, uniform_set_diversity

try:
    from scipy.stats import chi2 as _chi2
except ImportError:  # the statistic is compared with hard-coded critical values instead
    _chi2 = None

# χ² critical values at p = 0.001 for the degrees of freedom used below (T − 1).
_CRITICAL_001 = {6: 22.458, 7: 24.322, 13: 34.528}


def _outlier_zeta() -> np.ndarray:
    """Five near-identical ops, one far op, one outlier: the literal Eq. 5 would over-train the outlier."""
    z = np.full((7, 7), 0.05)
    z[5, :] = z[:, 5] = 0.8
    z[6, :] = z[:, 6] = 1.9
    z[5, 6] = z[6, 5] = 1.2
    np.fill_diagonal(z, 0.0)
    return z


def _pairs_zeta() -> np.ndarray:
    """Eight ops in four near-identical pairs: a diverse set of four takes one from each pair."""
    label = np.arange(8) // 2
    z = np.where(label[:, None] == label[None], 0.05, 1.0)
    np.fill_diagonal(z, 0.0)
    return z


def _random_zeta(t: int, seed: int) -> np.ndarray:
    """ζ of random unit features: 1 − cosine, as estimate_diversity produces."""
    f = np.random.default_rng(seed).normal(size=(t, 4))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return 1.0 - f @ f.T


def _circle_zeta(t: int) -> np.ndarray:
    """Operators evenly spaced on a circle: every op alike, so the fitted biases are all equal."""
    angle = 2 * np.pi * np.arange(t) / t
    return 1.0 - np.cos(angle[:, None] - angle[None])


def _chi_square_ok(counts: np.ndarray) -> bool:
    """Is a table of counts consistent with uniform at p = 0.001?"""
    expected = counts.sum() / len(counts)
    stat = float(((counts - expected) ** 2 / expected).sum())
    critical = _chi2.ppf(0.999, len(counts) - 1) if _chi2 is not None else _CRITICAL_001[len(counts) - 1]
    return stat < critical


def _set_diversity(archs: list[tuple[int, ...]], zetas: list[np.ndarray]) -> np.ndarray:
    """Per layer, the mean pairwise ζ of the operators the m subnets got."""
    picks = np.array(archs)
    pairs = list(itertools.combinations(range(len(archs)), 2))
    return np.array([np.mean([z[picks[i, l], picks[j, l]] for i, j in pairs]) for l, z in enumerate(zetas)])


def test_sampled_marginals_are_uniform_per_position_and_overall():
    zetas = [_outlier_zeta(), _random_zeta(14, 0)]
    sampler = DiversitySampler(zetas, m=4)
    rng = np.random.default_rng(123)
    draws = np.array([sampler.sample(rng) for _ in range(20_000)])  # (draws, m, layers)
    for l, z in enumerate(zetas):
        t = len(z)
        for position in range(4):
            assert _chi_square_ok(np.bincount(draws[:, position, l], minlength=t)), (l, position)
        assert _chi_square_ok(np.bincount(draws[:, :, l].ravel(), minlength=t)), l


@pytest.mark.parametrize("t, m", [(7, 4), (14, 4), (14, 2), (8, 7), (5, 5), (3, 4), (3, 7), (1, 4), (6, 1)])
def test_exact_marginals_are_one_over_t(t, m):
    sampler = DiversitySampler([_random_zeta(t, t), _outlier_zeta()], m=m)
    for marginal, z in zip(sampler.marginals(), sampler.zetas, strict=True):
        assert marginal.shape == (m, len(z))
        np.testing.assert_allclose(marginal, 1.0 / len(z), atol=1e-9)


def test_sampled_sets_are_more_diverse_than_uniform_random_ones():
    zetas = [_pairs_zeta(), _random_zeta(14, 1), _outlier_zeta()]
    sampler = DiversitySampler(zetas, m=4)
    rng = np.random.default_rng(7)
    ours = np.mean([_set_diversity(sampler.sample(rng), zetas) for _ in range(5000)], axis=0)
    rand = np.mean([_set_diversity(sample_uniform_set([8, 14, 7], 4, rng), zetas) for _ in range(5000)], axis=0)
    np.testing.assert_allclose(rand, uniform_set_diversity(zetas), atol=0.02)
    np.testing.assert_allclose(ours, sampler.expected_diversity(), atol=0.02)
    assert (ours > rand + 0.08).all(), (ours, rand)
    assert ours[0] > 1.25 * rand[0]  # on four near-identical pairs: one op from each pair, nearly always
    # Also more diverse than the β = 0 member of the family (uniform sampling without replacement).
    assert (sampler.expected_diversity() > DiversitySampler(zetas, 4, beta=0.0).expected_diversity()).all()


def test_conditional_favours_the_operator_with_highest_g():
    zeta = _circle_zeta(6)
    p = DiversitySampler([zeta], m=2).conditional(0, [0])
    assert p[0] == 0.0 and np.argmax(p) == 3  # the antipode: g(o, {0}) = ζ(o, 0) is largest there
    assert p[2] == pytest.approx(p[4]) and p[1] == pytest.approx(p[5])
    assert p[3] > p[2] > p[1]  # the same order as ζ(0, ·)

    label = np.arange(6) // 3  # two clusters of three near-identical ops
    clusters = np.where(label[:, None] == label[None], 0.2, 1.0)
    np.fill_diagonal(clusters, 0.0)
    sampler = DiversitySampler([clusters], m=3)
    after_one = sampler.conditional(0, [0])
    assert after_one[3] > after_one[1]
    after_two = sampler.conditional(0, [0, 1])
    assert set(np.flatnonzero(np.isclose(after_two, after_two.max()))) == {3, 4, 5}
    assert after_two[2] < 0.2 * after_two[3]


def test_beta_zero_and_zero_zeta_are_uniform_without_replacement():
    for sampler in (
        DiversitySampler([_outlier_zeta()], 4, beta=0.0),
        DiversitySampler([np.zeros((7, 7))], 4),
    ):
        np.testing.assert_allclose(sampler.conditional(0, []), 1 / 7)
        np.testing.assert_allclose(sampler.conditional(0, [2, 5]), [0.2, 0.2, 0, 0.2, 0.2, 0, 0.2])


def test_beta_is_scale_free():
    zeta = _random_zeta(9, 3)
    a, b = DiversitySampler([zeta], 3), DiversitySampler([0.1 * zeta], 3)
    np.testing.assert_allclose(a.tables[0].probs, b.tables[0].probs, rtol=1e-9)


def test_m_at_least_t_shows_every_operator():
    sampler = DiversitySampler([_random_zeta(3, 0), np.zeros((1, 1)), _random_zeta(4, 1)], m=7)
    rng = np.random.default_rng(0)
    for _ in range(200):
        archs = np.array(sampler.sample(rng))
        assert archs.shape == (7, 3)
        assert np.bincount(archs[:, 0], minlength=3).min() >= 2  # m = 2·3 + 1
        assert (archs[:, 1] == 0).all()
        assert np.bincount(archs[:, 2], minlength=4).min() >= 1


def test_same_seed_same_architectures():
    sampler = DiversitySampler([_random_zeta(14, s) for s in range(5)], m=4)
    runs = [[sampler.sample(np.random.default_rng(seed)) for _ in range(3)] for seed in (5, 5, 6)]
    assert runs[0] == runs[1] != runs[2]
    assert all(isinstance(c, int) for arch in runs[0][0] for c in arch)
    clone = pickle.loads(pickle.dumps(sampler))
    assert clone.sample(np.random.default_rng(5)) == runs[0][0]


def test_sample_uniform_set_is_independent_and_uniform():
    rng = np.random.default_rng(0)
    archs = [sample_uniform_set([3, 14, 1], 4, rng) for _ in range(5000)]
    picks = np.array(archs)  # (draws, m, layers)
    assert picks.shape == (5000, 4, 3) and (picks[..., 2] == 0).all()
    assert _chi_square_ok(np.bincount(picks[..., 1].ravel(), minlength=14))
    assert (picks[:, 0, 1] == picks[:, 1, 1]).mean() == pytest.approx(1 / 14, abs=0.02)  # repeats allowed
    assert sample_uniform_set([3, 14], 4, np.random.default_rng(1)) == sample_uniform_set(
        [3, 14], 4, np.random.default_rng(1)
    )


def test_invalid_arguments_fail_clearly():
    with pytest.raises(ValueError, match="m must be"):
        DiversitySampler([np.zeros((3, 3))], 0)
    with pytest.raises(ValueError, match="square"):
        DiversitySampler([np.zeros((3, 2))], 2)


def test_chi_square_detects_the_literal_eq5_rule():
    """Power check: p(o | A) ∝ g(o, A) taken literally over-draws the outlier, and the test above sees it."""
    zeta, rng = _outlier_zeta(), np.random.default_rng(0)
    counts = np.zeros(7)
    for _ in range(5000):
        drawn = [int(rng.integers(7))]
        for _ in range(3):
            g = zeta[:, drawn].mean(axis=1)
            g[drawn] = 0.0
            drawn.append(int(rng.choice(7, p=g / g.sum())))
        counts[drawn[1]] += 1
    assert not _chi_square_ok(counts)


def test_bias_fit_converges_on_a_zeta_measured_in_a_proxy_run():
    """Regression: a real epoch-1 ζ (s1 proxy, layer 6) on which an accept-any-smaller-gradient line search wandered."""
    zeta = np.array(
        [
            [0.0, 1.1033, 0.9382, 1.1348, 1.1367, 1.0554, 1.0133, 0.9446, 1.225],
            [1.1033, 0.0, 0.8507, 1.1411, 1.0117, 0.8888, 0.9671, 0.9048, 0.7888],
            [0.9382, 0.8507, 0.0, 1.1578, 1.0918, 0.9735, 0.956, 0.9084, 0.8877],
            [1.1348, 1.1411, 1.1578, 0.0, 0.7519, 0.8033, 0.9438, 1.0011, 1.1731],
            [1.1367, 1.0117, 1.0918, 0.7519, 0.0, 0.9927, 0.9338, 1.0004, 1.0257],
            [1.0554, 0.8888, 0.9735, 0.8033, 0.9927, 0.0, 1.0475, 0.8066, 0.9241],
            [1.0133, 0.9671, 0.956, 0.9438, 0.9338, 1.0475, 0.0, 0.8777, 1.0373],
            [0.9446, 0.9048, 0.9084, 1.0011, 1.0004, 0.8066, 0.8777, 0.0, 0.8194],
            [1.225, 0.7888, 0.8877, 1.1731, 1.0257, 0.9241, 1.0373, 0.8194, 0.0],
        ]
    )
    sampler = DiversitySampler([zeta], 4)
    np.testing.assert_allclose(sampler.marginals()[0], 1 / 9, atol=1e-9)
    assert sampler.expected_diversity()[0] > uniform_set_diversity([zeta])[0]
