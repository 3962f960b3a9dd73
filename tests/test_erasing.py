"""Random erasing for DNA's teacher: the rectangles' sizes, the chosen share, determinism and the option's check."""

import pytest
import torch
from helpers import preset_config

from ennas.core.config import ConfigError
from ennas.core.erasing import erase, step_generator


def erased_boxes(prob: float, seed: int = 0, n: int = 2000, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Which images changed, and the changed share of each image's pixels, for a constant batch."""
    x = torch.full((n, 1, size, size), 5.0)  # noise N(0, 1) never draws 5.0 exactly
    out = erase(x, prob, step_generator(seed, 0, 0))
    changed = (out != x).flatten(1)
    return changed.any(1), changed.float().mean(1)


def test_each_image_is_erased_with_the_given_probability_in_one_box_of_two_to_forty_percent():
    chosen, share = erased_boxes(0.5)
    assert 0.45 < chosen.float().mean() < 0.55
    assert share[chosen].min() >= 0.015 and share[chosen].max() <= 0.45  # 2-40 % of the area, up to rounding
    assert 0.15 < share[chosen].mean() < 0.26  # the uniform area's mean, 21 %, clipped at the edges
    assert not erased_boxes(0.0)[0].any() and erased_boxes(1.0)[0].all()


def test_the_erased_pixels_form_one_rectangle():
    x = torch.zeros(50, 3, 20, 24)
    out = erase(x, 1.0, step_generator(1, 2, 3))
    for image in (out != 0).any(1):  # the same box in every channel
        rows, cols = image.any(1).nonzero().flatten(), image.any(0).nonzero().flatten()
        assert image.sum() == len(rows) * len(cols)  # full rectangle
        assert rows.diff().eq(1).all() and cols.diff().eq(1).all()


def test_a_step_erases_alike_from_its_seed_and_position_only():
    x = torch.randn(8, 1, 28, 28)
    first = erase(x, 0.5, step_generator(7, 3, 11))
    assert torch.equal(first, erase(x, 0.5, step_generator(7, 3, 11)))
    assert not torch.equal(first, erase(x, 0.5, step_generator(7, 3, 12)))
    assert not torch.equal(first, erase(x, 0.5, step_generator(7, 3, 11, rank=1)))


def test_a_teacher_erasing_outside_zero_to_one_is_refused():
    with pytest.raises(ConfigError, match="teacher_erasing"):
        preset_config("smoke", {"dna": {"teacher_erasing": 1.5}}, method="dna")


def test_plain_training_erases_the_batch_the_network_sees_only_when_asked():
    from torch import nn

    from ennas.core.loop import Step
    from ennas.core.retrain import PlainTraining

    seen = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    step = Step(x=torch.randn(16, 1, 28, 28), y=torch.zeros(16, dtype=torch.long), paths=[], epoch=0, index=0, lr=0.1)
    PlainTraining(0.1, None).batch_loss(net, step)
    PlainTraining(0.1, None, erasing=1.0, seed=3).batch_loss(net, step)
    PlainTraining(0.1, None, erasing=1.0, seed=3).batch_loss(net, step)
    assert torch.equal(seen[0], step.x) and not torch.equal(seen[1], step.x) and torch.equal(seen[1], seen[2])
