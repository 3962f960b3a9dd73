"""Operator diversity ζ (Eq. 4) on a toy supernet stand-in with known answers; §4.3 subnet diversity."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from ennas.core.probe import subnet_diversity
from ennas.method.diversity import estimate_diversity, load_diversity, save_diversity

C = 4  # channels of the toy stand-in


class _Choice(nn.Module):
    """The ChoiceLayer interface: a list of same-shape candidates."""

    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self.candidates = nn.ModuleList(ops)


class _Negate(nn.Module):
    """Minus a wrapped op: cosine −1 with it, ζ = 2."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.op(x)


class _Half(nn.Module):
    """ReLU, then keep one half of the channels: the two halves have disjoint support, cosine 0, ζ = 1."""

    def __init__(self, first: bool) -> None:
        super().__init__()
        mask = torch.zeros(1, C, 1, 1)
        mask[:, : C // 2] = 1.0
        self.register_buffer("mask", mask if first else 1.0 - mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * self.mask


class _ToySuperNet(nn.Module):
    """Stand-in with the SuperNet attributes (stem, layers, tail); BN in the stem shows state changes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(1, C, 3, padding=1), nn.BatchNorm2d(C), nn.ReLU())
        conv = nn.Conv2d(C, C, 3, padding=1)
        self.layers = nn.ModuleList(
            [
                _Choice([conv, copy.deepcopy(conv), _Negate(copy.deepcopy(conv))]),
                _Choice([_Half(True), _Half(False), nn.Identity(), nn.Identity()]),
                _Choice([nn.Sequential(nn.Conv2d(C, C, 1), nn.BatchNorm2d(C)), nn.Identity()]),
            ]
        )
        self.tail = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, 10))

    def forward(self, x: torch.Tensor, arch: tuple[int, ...]) -> torch.Tensor:
        h = self.stem(x)
        for layer, c in zip(self.layers, arch, strict=True):
            h = layer.candidates[c](h)
        return self.tail(h)


def _images(n: int = 37) -> torch.Tensor:
    """A fixed batch of tiny one-channel images."""
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_known_diversities():
    zetas = estimate_diversity(_ToySuperNet(), _images(), batch_size=16)
    assert [z.shape for z in zetas] == [(3, 3), (4, 4), (2, 2)]
    # Equal-weight copies are identical (ζ = 0), the negation is opposite (ζ = 2).
    np.testing.assert_allclose(zetas[0], [[0, 0, 2], [0, 0, 2], [2, 2, 0]], atol=1e-5)
    # Disjoint channel halves are orthogonal (ζ = 1); two Identity candidates coincide (ζ = 0).
    assert zetas[1][0, 1] == pytest.approx(1.0, abs=1e-6)
    assert zetas[1][2, 3] == pytest.approx(0.0, abs=1e-6)
    for z in zetas:
        np.testing.assert_array_equal(z, z.T)
        np.testing.assert_array_equal(np.diag(z), 0.0)
        assert ((z >= 0) & (z <= 2)).all()
    assert 0.0 < zetas[2][0, 1] < 2.0


def test_estimation_leaves_the_model_untouched():
    net = _ToySuperNet()
    net.train()
    net.layers[2].eval()  # a deliberately frozen part must stay frozen
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [m.training for m in net.modules()]
    estimate_diversity(net, _images(), batch_size=8)
    assert [m.training for m in net.modules()] == flags
    after = net.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert all(p.grad is None for p in net.parameters())


def test_batching_and_seed():
    net, images = _ToySuperNet(), _images()
    whole = estimate_diversity(net, images, batch_size=256, seed=3)
    chunked = estimate_diversity(net, images, batch_size=5, seed=3)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)  # routes are per image, so batching changes nothing
    again = estimate_diversity(net, images, batch_size=5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(chunked, again, strict=True))
    other = estimate_diversity(net, images, seed=4)
    assert not np.allclose(other[2], whole[2])  # another routing reaches layer 2 with other inputs


def test_subnet_diversity_on_hand_made_logits():
    z = torch.zeros(3, 2, 2)
    z[1, 0] = torch.tensor([3.0, 4.0])  # ‖z1 − z0‖: 5 and 0, mean 2.5
    z[2, 1] = torch.tensor([6.0, 8.0])  # ‖z2 − z0‖: 0 and 10, mean 5; ‖z2 − z1‖: 5 and 10, mean 7.5
    assert subnet_diversity(z) == pytest.approx(5.0)
    assert subnet_diversity(z.numpy()) == pytest.approx(5.0)
    assert subnet_diversity(z[:1]) == 0.0
    with pytest.raises(ValueError):
        subnet_diversity(z[0])


def test_save_and_load_round_trip(tmp_path):
    zetas = [np.array([[0.0, 0.5], [0.5, 0.0]]), np.zeros((1, 1)), np.eye(3)[::-1] * 0.25]
    save_diversity(zetas, tmp_path / "zeta.json")
    loaded = load_diversity(tmp_path / "zeta.json")
    assert all(np.array_equal(a, b) for a, b in zip(zetas, loaded, strict=True))


class _Constant(nn.Module):
    """Ignores its input: lets a test see which operator each sample was routed through."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


def test_inputs_are_spread_uniformly_and_merged():
    net = _ToySuperNet()
    net.layers = nn.ModuleList([_Choice([_Constant(1.0), _Constant(-1.0)]), _Choice([nn.Identity(), nn.ReLU()])])
    # Identity vs ReLU: cosine 1 on the samples that came through +1, 0 (a zero vector) on those through −1;
    # 37 images over 2 operators is 19 through operator 0, 18 through operator 1.
    zetas = estimate_diversity(net, _images(37), batch_size=10)
    assert zetas[1][0, 1] == pytest.approx(1.0 - 19 / 37, abs=1e-9)
