"""Diversity headroom: the LP bounds against vertex enumeration, the reference samplers' order, the committed
runs' figures (issue 23), reading run folders, REPORT.md lines and Fig. 2's headroom panels."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from benchmark import figures
from benchmark.headroom import headroom_lines, headroom_table, run_headroom
from benchmark.results import load
from ennas.method.headroom import (
    KEYS,
    LOG_KEYS,
    extreme_diversity,
    extreme_law,
    headroom,
    headroom_record,
    set_counts,
    set_diversity,
)

REPO = Path(__file__).resolve().parent.parent


def random_zeta(t: int, seed: int) -> np.ndarray:
    """A symmetric ζ with a zero diagonal and entries in [0, 1]: not a metric, so repeats can pay off."""
    a = np.random.default_rng(seed).random((t, t))
    z = np.triu(a, 1)
    return z + z.T


def vertex_optimum(zeta: np.ndarray, m: int, repeats: bool) -> tuple[float, float]:
    """(min, max) of E[D] over the LP's basic feasible solutions, found by trying every basis: an LP's optimum
    is attained at a vertex, and every vertex is one basis's solution, so this is the optimum by enumeration."""
    t = zeta.shape[0]
    counts = set_counts(t, m, repeats)
    d = set_diversity(zeta, counts)
    a = np.vstack([counts.T, np.ones(len(counts))])
    b = np.append(np.full(t, m / t), 1.0)
    rank = np.linalg.matrix_rank(a)
    values = []
    for basis in itertools.combinations(range(len(counts)), rank):
        cols = a[:, basis]
        if np.linalg.matrix_rank(cols) < rank:
            continue
        x, *_ = np.linalg.lstsq(cols, b, rcond=None)
        if np.allclose(cols @ x, b, atol=1e-10) and x.min() > -1e-10:
            values.append(d[list(basis)] @ x)
    return min(values), max(values)


@pytest.mark.parametrize(
    ("t", "m", "repeats"), [(4, 2, False), (4, 2, True), (5, 2, False), (4, 3, True), (3, 4, False)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_lp_optimum_matches_vertex_enumeration(t, m, repeats, seed):
    zeta = random_zeta(t, seed)
    low, high = vertex_optimum(zeta, m, repeats)
    assert extreme_diversity(zeta, m, maximise=True, repeats=repeats) == pytest.approx(high, abs=1e-9)
    assert extreme_diversity(zeta, m, maximise=False, repeats=repeats) == pytest.approx(low, abs=1e-9)


def test_repeats_can_raise_the_maximum_and_the_minimum_with_repeats_is_zero():
    zeta = np.zeros((3, 3))
    zeta[0, 1] = zeta[1, 0] = 1.0
    # Repeat-free: each pair w.p. 1/3 (the only law with inclusion 2/3 each). With repeats: {0,1} w.p. 2/3, {2,2} 1/3.
    assert extreme_diversity(zeta, 2, maximise=True, repeats=False) == pytest.approx(1 / 3)
    assert extreme_diversity(zeta, 2, maximise=True, repeats=True) == pytest.approx(2 / 3)
    counts, p = extreme_law(random_zeta(5, 3), 3, maximise=False, repeats=True)
    assert p @ set_diversity(random_zeta(5, 3), counts) == pytest.approx(0.0, abs=1e-12)
    assert p[counts.max(axis=1) == 3].sum() == pytest.approx(1.0)  # all mass on "one operator m times"


@pytest.mark.parametrize(("t", "m", "repeats"), [(6, 3, True), (6, 3, False), (4, 6, False), (10, 4, True)])
@pytest.mark.parametrize("maximise", [True, False])
def test_optimal_law_has_uniform_marginals(t, m, repeats, maximise):
    counts, p = extreme_law(random_zeta(t, 7), m, maximise=maximise, repeats=repeats)
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(counts.T @ p / m, np.full(t, 1 / t), atol=1e-9)
    if not repeats:  # balanced sets: every operator floor(m/T) or ceil(m/T) times
        assert counts.min() >= m // t and counts.max() <= -(-m // t)


@pytest.mark.parametrize(("t", "m"), [(5, 2), (7, 4), (10, 4), (4, 4), (3, 5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_samplers_sit_in_order(t, m, seed):
    zetas = [random_zeta(t, seed), random_zeta(t, seed + 10)]
    h = headroom(zetas, m, beta=2.0)
    tol = 1e-9
    assert (h["independent"] <= h["no_repeats"] + tol).all()
    assert (h["min_no_repeats"] <= h["no_repeats"] + tol).all()
    assert (h["no_repeats"] <= h["sampler"] + tol).all()  # E[D] grows with β at fixed marginals
    repeat_free_max = [extreme_diversity(z, m, maximise=True, repeats=False) for z in zetas]
    assert (h["sampler"] <= np.array(repeat_free_max) + tol).all()  # the sampler is a repeat-free law
    assert (np.array(repeat_free_max) <= h["max"] + tol).all()
    assert all(
        extreme_diversity(z, m, maximise=False, repeats=True) <= i + tol for z, i in zip(zetas, h["independent"])
    )
    np.testing.assert_array_equal(headroom(zetas, m, beta=None)["sampler"], h["independent"])
    np.testing.assert_array_equal(headroom(zetas, m, beta=0.0)["sampler"], h["no_repeats"])


def test_one_subnet_or_one_operator_has_no_pairs():
    h = headroom([random_zeta(4, 0), np.zeros((1, 1))], 1, beta=2.0)
    assert all(np.array_equal(v, np.zeros(2)) for v in h.values())
    assert headroom([np.zeros((1, 1))], 3, beta=2.0)["max"][0] == 0.0


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ("results/proxy/ennas-s1-seed0", {"max": 0.175, "sampler": 0.168, "no_repeats": 0.165, "independent": 0.147}),
        (
            "results/proxy/sharing-none/ennas-s1-seed0",
            {"max": 0.325, "sampler": 0.321, "no_repeats": 0.320, "independent": 0.286},
        ),
    ],
)
def test_committed_runs_reproduce_the_issue_figures(run, expected):
    rows = run_headroom(REPO / run)
    last = rows[rows["epoch"] == rows["epoch"].max()].iloc[0]
    assert last["epoch"] == 5
    assert {k: round(last[k], 3) for k in expected} == expected
    # The sampler and independent values are the ones the run itself logged (same ζ, same definitions).
    logged = [json.loads(line) for line in (REPO / run / "train_log.jsonl").read_text().splitlines()]
    logged = {r["epoch"]: r for r in logged if r["stage"] == "supernet"}
    for row in rows.itertuples():
        assert row.sampler == pytest.approx(logged[row.epoch]["set_zeta"], abs=1e-12)
        assert row.independent == pytest.approx(logged[row.epoch]["uniform_set_zeta"], abs=1e-12)


def make_run(root: Path, label: str, method: str, beta: float, zetas: list, logged: dict | None = None) -> Path:
    """A complete run folder of one epoch: config.json, diversity_epoch0.json, train_log.jsonl, final.json."""
    folder = root / f"{label}-s1-seed0"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"method": method, "ennas": {"m": 3, "beta": beta}}))
    if method == "ennas":
        (folder / "diversity_epoch0.json").write_text(json.dumps([z.tolist() for z in zetas]))
    record = {"stage": "supernet", "epoch": 0, "diversity": 1.0, **(logged or {})}
    (folder / "train_log.jsonl").write_text(json.dumps(record) + "\n")
    (folder / "final.json").write_text(json.dumps({"method": method, "top1": 80.0}))
    return folder


def test_reader_prefers_logged_values_and_computes_the_rest(tmp_path):
    zetas = [random_zeta(5, 0), random_zeta(4, 1)]
    make_run(tmp_path, "ennas", "ennas", 2.0, zetas)
    sentinel = {LOG_KEYS[k]: 0.1 * (i + 1) for i, k in enumerate(KEYS)}
    make_run(tmp_path, "ennas-beta0", "ennas", 0.0, zetas, logged=sentinel)
    make_run(tmp_path, "ennas-wo-ds", "ennas-wo-ds", 2.0, zetas)
    computed = run_headroom(tmp_path / "ennas-s1-seed0").iloc[0]
    assert {LOG_KEYS[k]: computed[k] for k in KEYS} == pytest.approx(headroom_record(zetas, 3, 2.0))
    assert run_headroom(tmp_path / "ennas-beta0-s1-seed0").iloc[0][list(KEYS)].tolist() == list(sentinel.values())
    assert run_headroom(tmp_path / "ennas-wo-ds-s1-seed0").empty
    table = headroom_table(load(tmp_path))
    assert list(table["label"]) == ["ennas", "ennas-beta0"]
    reach = (computed["sampler"] - computed["independent"]) / (computed["max"] - computed["independent"])
    assert table["reach_independent"].iloc[0] == pytest.approx(reach)
    lines = headroom_lines(load(tmp_path))
    assert any(line.startswith("- **s1 / ennas-wo-ds**: draws independent sets") for line in lines)
    assert any(f"Reach from independent {reach:.2f}" in line for line in lines if "s1 / ennas**" in line)


def test_report_lines_for_the_committed_runs():
    lines = headroom_lines(load(REPO / "results/proxy"))
    ennas = next(line for line in lines if line.startswith("- **s1 / ennas** "))
    table = headroom_table(load(REPO / "results/proxy"))
    last = table[(table["label"] == "ennas") & (table["epoch"] == 5)]
    assert len(last) == 3 and f"max {last['max'].mean():.3f}" in ennas
    per_seed = ", ".join(f"{v:.2f}" for v in last["reach_independent"])
    assert f"Reach from independent {last['reach_independent'].mean():.2f} ({per_seed})" in ennas
    assert math.isclose(table[table["label"] == "ennas-beta0"]["reach_no_repeats"].abs().max(), 0.0, abs_tol=1e-12)


def test_fig2_draws_headroom_panels_only_where_zeta_exists(tmp_path):
    zetas = [random_zeta(5, 0), random_zeta(4, 1)]
    make_run(tmp_path / "a", "ennas", "ennas", 2.0, zetas)
    make_run(tmp_path / "a", "ennas-wo-ds", "ennas-wo-ds", 2.0, zetas)
    assert figures.fig2(load(tmp_path / "a"), tmp_path / "with.png") is None
    make_run(tmp_path / "b", "ennas-wo-ds", "ennas-wo-ds", 2.0, zetas)
    assert figures.fig2(load(tmp_path / "b"), tmp_path / "without.png") is None
    wide, narrow = imread(tmp_path / "with.png"), imread(tmp_path / "without.png")
    assert wide.shape[1] > 1.8 * narrow.shape[1]  # a headroom panel beside the logit panel for ennas only
