"""The weight-sharing supernet: `supernet(x, arch)` runs one path; `extract(arch)` returns a stand-alone copy.

The supernet keeps no "active subnet" state: the architecture is an argument of every call, so several
paths can run in one step (EnNAS) and every rank can run the path its own sampler chose.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from spaces.arch import Arch, check_arch
from spaces.ops import Classifier, ConvBnAct, DepthwiseSeparable, build_op, init_weights
from spaces.registry import LayerSpec, SpaceSpec
from spaces.shared import SlicedMBConv, shared_candidates


def build_stem(space: SpaceSpec, in_chans: int) -> nn.Sequential:
    """The fixed part before the first searchable layer: stem conv and, in mobile spaces, a DS block."""
    stem = space.stem
    blocks: list[nn.Module] = [
        ConvBnAct(in_chans, stem["chs"], 3, stem["stride"], stem["act"], affine=stem.get("affine", True))
    ]
    if stem.get("ds"):
        se, se_style = stem.get("ds_se", 0.0), stem.get("ds_se_style", "cream")
        blocks.append(DepthwiseSeparable(stem["chs"], stem["ds"], se=se, act=stem["act"], se_style=se_style))
    return nn.Sequential(*blocks)


def build_tail(space: SpaceSpec, num_classes: int) -> nn.Sequential:
    """The fixed part after the last searchable layer: optional 1x1 conv, head and classifier."""
    tail = space.tail
    in_chs = space.layers[-1].out_chs
    blocks: list[nn.Module] = []
    if tail.get("conv_chs"):
        blocks.append(ConvBnAct(in_chs, tail["conv_chs"], 1, act=tail["act"]))
        in_chs = tail["conv_chs"]
    blocks.append(
        Classifier(
            in_chs,
            num_classes,
            head_chs=tail.get("head_chs", 0),
            head_after_pool=tail.get("head_after_pool", False),
            act=tail["act"],
            dropout=tail.get("dropout", 0.0),
            affine=tail.get("affine", True),
            linear_bias=tail.get("linear_bias", True),
        )
    )
    return nn.Sequential(*blocks)


class ChoiceLayer(nn.Module):
    """One searchable layer: every candidate maps the same input shape to the same output shape.

    With `sharing` other than "none", some candidates are slices of tied weights (`spaces.shared`).
    """

    def __init__(self, layer: LayerSpec, sharing: str = "none"):
        super().__init__()
        shared = shared_candidates(layer.choices, layer.in_chs, layer.out_chs, layer.stride, sharing)
        self.candidates = nn.ModuleList(
            shared.get(i) or build_op(c, layer.in_chs, layer.out_chs, layer.stride) for i, c in enumerate(layer.choices)
        )

    def forward(self, x: torch.Tensor, choice: int) -> torch.Tensor:
        return self.candidates[choice](x)


class SuperNet(nn.Module):
    """All candidates of a space with shared stem and tail; a forward pass takes the path to run."""

    def __init__(self, space: SpaceSpec, num_classes: int, in_chans: int = 3, sharing: str = "none"):
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.stem = build_stem(space, in_chans)
        self.layers = nn.ModuleList(ChoiceLayer(layer, sharing) for layer in space.layers)
        self.tail = build_tail(space, num_classes)
        init_weights(self)
        for module in self.modules():  # after init_weights: with sharing "none" the RNG stream is unchanged
            if isinstance(module, SlicedMBConv):
                module.reset_shared()

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        check_arch(self.space, arch)
        h = self.stem(x)
        for layer, choice in zip(self.layers, arch):
            h = layer(h, choice)
        return self.tail(h)

    def path_modules(self, arch: Arch) -> list[nn.Module]:
        """The modules a path runs through, in order (stem, chosen candidates, tail)."""
        check_arch(self.space, arch)
        chosen = [layer.candidates[c] for layer, c in zip(self.layers, arch)]
        return [self.stem, *chosen, self.tail]

    def extract(self, arch: Arch) -> nn.Sequential:
        """An ordinary stand-alone network with copied weights, equal to the path in eval mode."""
        return nn.Sequential(
            *(m.standalone() if isinstance(m, SlicedMBConv) else copy.deepcopy(m) for m in self.path_modules(arch))
        )


def build_network(space: SpaceSpec, arch: Arch, num_classes: int, in_chans: int = 3) -> nn.Sequential:
    """A freshly initialised stand-alone network for `arch` (retraining from scratch), shaped like `extract`."""
    check_arch(space, arch)
    chosen = [
        build_op(layer.choices[c], layer.in_chs, layer.out_chs, layer.stride) for layer, c in zip(space.layers, arch)
    ]
    net = nn.Sequential(build_stem(space, in_chans), *chosen, build_tail(space, num_classes))
    init_weights(net)
    return net
