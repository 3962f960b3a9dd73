"""The shared probe (ennas.core.probe): out-of-sample ensemble teachers, single-path teachers, standard errors,
and the run context's fit / score split of the probe images."""

import numpy as np
import pytest
import torch
from helpers import preset_config
from torch import nn

from ennas.core.context import RunContext
from ennas.core.probe import ProbeImages, ProbeSet, crossed_se, measure_sets, probe_labels, total_se

pytestmark = pytest.mark.usefixtures("one_thread")


class SignNet(nn.Module):
    """Path (0,) returns x, path (1,) returns -x: on images [1, 0] labelled 0 the first is always right."""

    def forward(self, x: torch.Tensor, arch: tuple) -> torch.Tensor:
        return x if arch[0] == 0 else -x


def batches(label: int, n: int) -> list:
    """One batch of n images [1, 0] with label `label`."""
    return [(torch.tensor([[1.0, 0.0]]).repeat(n, 1), torch.full((n,), label))]


def test_ensemble_weights_are_fitted_on_the_fit_images_and_scored_on_the_others():
    """Fit labels are all 1 (where the -x path is right), score labels all 0: an in-sample fit would pick the
    -x path and score 100 %; fitted out of sample, the ensemble picks it and scores 0 % on the score images."""
    seen = {}

    def fit_weights(logits, labels):
        seen["labels"], seen["shape"] = labels.clone(), tuple(logits.shape)
        right = (logits.argmax(2) == labels).double().mean(1)
        return torch.nn.functional.one_hot(right.argmax(), len(logits)).double()

    images = ProbeImages(fit=batches(1, 6), score=batches(0, 10))
    out = measure_sets(SignNet(), [ProbeSet(((0,), (1,)))], images, fit_weights)
    assert seen["labels"].eq(1).all() and seen["shape"] == (2, 6, 2)
    assert out["teacher_acc"] == 0.0 and out["student_acc"] == 50.0 and out["gap"] == -50.0
    assert out["probe_images"] == 10 and out["probe_sets"] == 1
    assert out["diversity"] == pytest.approx(2.0)  # ‖x − (−x)‖ = 2 for x = [1, 0]


def test_single_path_teacher_is_measured_on_the_score_images_like_its_student():
    images = ProbeImages(fit=batches(1, 4), score=batches(0, 8))
    out = measure_sets(SignNet(), [ProbeSet(((1,),), teacher=(0,)), ProbeSet(((0,),), teacher=(0,))], images)
    assert out["teacher_acc"] == 100.0 and out["student_acc"] == 50.0 and out["gap"] == 50.0
    assert out["diversity"] == 0.0  # one student per set


def test_crossed_standard_error_has_the_set_and_image_parts():
    rng = np.random.default_rng(0)
    table = rng.integers(0, 2, size=(7, 40)).astype(float)
    mean, set_se, image_se = crossed_se(torch.tensor(table))
    assert mean == pytest.approx(100 * table.mean())
    assert set_se == pytest.approx(100 * np.sqrt(table.mean(1).var(ddof=1) / 7))
    assert image_se == pytest.approx(100 * np.sqrt(table.mean(0).var(ddof=1) / 40))
    assert total_se(3.0, 4.0) == 5.0
    _, one_set, _ = crossed_se(torch.tensor(table[:1]))
    assert one_set == 0.0  # a single set has no set-to-set spread to estimate


def test_probe_images_split_into_fit_and_score_parts_of_the_search_split(tmp_path):
    cfg = preset_config("smoke", {"distill": {"probe_images": 100}}, method="ennas", space="s1")
    ctx = RunContext(cfg, tmp_path, torch.device("cpu"))
    probe = ctx.probe_images
    fit, score = probe_labels(probe.fit), probe_labels(probe.score)
    assert len(fit) == 50 and len(score) == 50
    search_labels = torch.tensor([ctx.data.search[i][1] for i in range(100)])
    assert torch.equal(torch.cat([fit, score]), search_labels)
    first = next(iter(probe.score))[0][0]  # the score part starts after the fit part, normalised on the device
    assert torch.equal(first, ctx.data.to_device(ctx.data.search[50][0], "cpu"))
    cfg = preset_config("smoke", {"distill": {"probe_images": 100, "probe_fit_images": 20}}, method="ennas")
    probe = RunContext(cfg, tmp_path, torch.device("cpu")).probe_images
    assert len(probe_labels(probe.fit)) == 20 and len(probe_labels(probe.score)) == 80
