"""Costs as the claims mean them: EnNAS's ζ estimate is method cost, probes are not, DNA's teacher stands apart;
the probes' schedule; the probe s.e. model that sizes them."""

import math

import numpy as np
import pytest
import torch

from benchmark.perf_costs import predicted_teacher_se
from benchmark.results import load
from ennas.core.io import read_json, read_jsonl
from ennas.core.probe import crossed_se, probed_epoch


def test_probed_epochs_are_every_kth_and_the_last():
    assert [e for e in range(6) if probed_epoch(3, e, 6)] == [0, 3, 5]
    assert [e for e in range(6) if probed_epoch(1, e, 6)] == list(range(6))
    assert [e for e in range(4) if probed_epoch(10, e, 4)] == [0, 3]


def _suite(tmp_path, run, label):
    """A report folder holding one run folder named as the harness names it."""
    import shutil

    shutil.copytree(run, tmp_path / f"{label}-s1-seed0")
    return load(tmp_path).runs.iloc[0]


def test_zeta_estimate_is_counted_in_ennas_cost_and_probes_are_not(smoke_run, tmp_path):
    records = [r for r in read_jsonl(smoke_run("ennas") / "train_log.jsonl") if r["stage"] == "supernet"]
    assert all(r["epoch_start_device_s"] > 0 for r in records)  # the ζ estimate and sampler build, logged apart
    assert all(r["device_s"] >= r["epoch_start_device_s"] + r["probe_device_s"] for r in records)
    row = _suite(tmp_path, smoke_run("ennas"), "ennas")
    zeta = sum(r["epoch_start_device_s"] for r in records)
    probes = sum(r["probe_device_s"] for r in records)
    assert row["epoch_start_device_s"] == pytest.approx(zeta)
    assert row["supernet_train_s"] == pytest.approx(row["supernet_device_s"] - probes)
    assert row["supernet_train_s"] > zeta  # ζ stays inside the method's cost


def test_dna_teacher_training_is_outside_its_search_cost(smoke_run, tmp_path):
    log = read_jsonl(smoke_run("dna") / "train_log.jsonl")
    teacher = sum(r["device_s"] for r in log if r["stage"] == "teacher")
    assert teacher > 0
    row = _suite(tmp_path, smoke_run("dna"), "dna")
    assert row["teacher_device_s"] == pytest.approx(teacher)
    final = read_json(smoke_run("dna") / "final.json")
    probes = sum(
        r.get("probe_device_s", 0.0) for r in log if r["stage"] not in ("teacher",) and "retrain" not in r["stage"]
    )
    assert row["supernet_train_s"] == pytest.approx(final["supernet_device_s"] - teacher - probes)


def test_predicted_teacher_se_matches_simulated_crossed_probes():
    """Fit the model on one simulated probe table, then predict the s.e. of another design and compare it with
    the spread of that design's means over fresh sets and images."""
    rng = np.random.default_rng(0)

    def table(sets: int, images: int) -> torch.Tensor:
        difficulty = rng.normal(1.0, 1.5, images)  # between-image spread dominates, as in the probes
        set_effect = rng.normal(0.0, 0.1, sets)
        p = 1 / (1 + np.exp(-(difficulty[None, :] + set_effect[:, None])))
        return torch.from_numpy((rng.random((sets, images)) < p).astype(np.float64))

    ref_table = table(12, 20000)
    mean, set_se, image_se = crossed_se(ref_table)
    ref = {"teacher_acc": mean, "se": math.hypot(set_se, image_se), "image_se": image_se, "sets": 12, "images": 20000}
    for sets, images in ((3, 3500), (12, 2500), (2, 1000)):
        scaled = dict(ref, images=20000)
        predicted = predicted_teacher_se(sets, images, scaled)
        means = [100 * float(table(sets, images).mean()) for _ in range(400)]
        assert predicted == pytest.approx(float(np.std(means, ddof=1)), rel=0.15), (sets, images)


def test_predicted_teacher_se_reproduces_the_reference_epoch():
    assert predicted_teacher_se(12, 2500) == pytest.approx(0.89, abs=1e-9)
    assert predicted_teacher_se(3, 3500) < 0.89 < predicted_teacher_se(3, 2500)


def test_probe_settings_do_not_change_training(smoke_run, tmp_path):
    """Fewer, other probes measure differently but train the same: the same final.json and losses."""
    from conftest import SMOKE_ARGS

    from benchmark.run import main as run_main

    out = tmp_path / "run"
    probes = ["--set", "distill.probe_sets=1", "--set", "distill.probe_images=64", "--set", "distill.probe_every=5"]
    assert run_main(["--method", "ennas", *SMOKE_ARGS, *probes, "--run-dir", str(out)]) == 0
    base, other = read_json(smoke_run("ennas") / "final.json"), read_json(out / "final.json")
    keys = ("arch", "top1", "top5", "flops", "search_score")
    assert {k: other[k] for k in keys} == {k: base[k] for k in keys}
    losses = [[r["loss"] for r in read_jsonl(f / "train_log.jsonl")] for f in (smoke_run("ennas"), out)]
    assert losses[0] == losses[1]
    probed = [
        r["epoch"] for r in read_jsonl(out / "train_log.jsonl") if r["stage"] == "supernet" and "teacher_acc" in r
    ]
    assert probed == [0, 1]  # every 5th epoch from 0, and the last
