"""Weight sharing across MBConv candidates (spaces.shared): slices of tied weights, extractable, opt-in."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from baselines.cream.board import path_parameters
from ennas.core.config import ConfigError, RunConfig, validate
from spaces.registry import get_space
from spaces.shared import SlicedMBConv
from spaces.supernet import SuperNet, build_network

SPACE = get_space("s1", "proxy")
NAMES = SPACE.layers[1].choice_names  # a residual layer: k3e1 .. k7e6, id


def _index(name: str) -> int:
    return NAMES.index(name)


def _supernet(sharing: str) -> SuperNet:
    torch.manual_seed(0)
    return SuperNet(SPACE, 10, 1, sharing)


@pytest.mark.parametrize("sharing", ["expand", "expand+kernel"])
def test_extract_equals_the_shared_path_in_eval_mode(sharing):
    net = _supernet(sharing)
    arch = (_index("k5e3"), _index("k7e6"), _index("k3e6"), _index("k3e1"), 2, _index("k5e6"), 0, _index("k7e3"))
    x = torch.randn(8, 1, 28, 28)
    net.train()
    net(x, arch)  # BN statistics away from their initial values
    net.eval()
    standalone = net.extract(arch).eval()
    torch.testing.assert_close(standalone(x), net(x, arch), rtol=0, atol=1e-5)
    # the copy is an ordinary network of the architecture's shape, as retraining builds it
    fresh = build_network(SPACE, arch, 10, 1)
    assert [tuple(p.shape) for p in standalone.parameters()] == [tuple(p.shape) for p in fresh.parameters()]


def test_expand_ties_e3_to_the_first_channels_of_e6_of_the_same_kernel_only():
    layer = _supernet("expand").layers[1]
    k3e3, k3e6, k5e6, k3e1 = (layer.candidates[_index(n)] for n in ("k3e3", "k3e6", "k5e6", "k3e1"))
    assert isinstance(k3e3, SlicedMBConv) and k3e3.expand_weight is k3e6.expand_weight
    assert k3e6.expand_weight is not k5e6.expand_weight
    assert not isinstance(k3e1, SlicedMBConv)  # e1 has no expansion conv to slice
    x = torch.randn(4, k3e3.in_chs, 7, 7)
    k3e3(x).square().sum().backward()
    mid = k3e3.in_chs * 3
    grad = k3e6.expand_weight.grad
    assert grad[:mid].abs().sum() > 0 and grad[mid:].abs().sum() == 0  # e3's step trains e6's first channels only


def test_expand_kernel_uses_the_centre_of_the_widest_kernel():
    layer = _supernet("expand+kernel").layers[1]
    k3e3, k7e6 = layer.candidates[_index("k3e3")], layer.candidates[_index("k7e6")]
    assert k3e3.dw_weight is k7e6.dw_weight and k7e6.dw_weight.shape[-1] == 7
    _, w_dw, _ = k3e3.weights()
    torch.testing.assert_close(w_dw, k7e6.dw_weight[: k3e3.in_chs * 3, :, 2:5, 2:5])


def test_sharing_cuts_the_parameters_and_none_keeps_separate_weights():
    counts = {s: sum(p.numel() for p in _supernet(s).parameters()) for s in ("none", "expand", "expand+kernel")}
    assert counts["none"] > counts["expand"] > counts["expand+kernel"]
    assert not any(isinstance(m, SlicedMBConv) for m in _supernet("none").modules())


def test_a_simulated_step_through_shared_weights_leaves_the_supernet_intact():
    # Cream's meta update runs the path with simulated weights (torch.func.functional_call); every shared
    # weight must be a Parameter again afterwards, or the next step backpropagates into a freed graph.
    net = _supernet("expand+kernel")
    arch = (5, 4, 4, 4, 5, 5, 5, 5)
    params = path_parameters(net, arch)
    functional_call(net, {n: p * 1.0 for n, p in params.items()}, (torch.randn(2, 1, 28, 28), arch))
    assert all(isinstance(p, nn.Parameter) for m in net.modules() for p in m._parameters.values() if p is not None)


def test_an_unknown_sharing_is_a_one_line_config_error():
    cfg = RunConfig()
    bad = type(cfg)(**{**cfg.__dict__, "supernet": type(cfg.supernet)(**{**cfg.supernet.__dict__, "sharing": "all"})})
    with pytest.raises(ConfigError, match="supernet.sharing must be one of none, expand, expand\\+kernel"):
        validate(bad)
