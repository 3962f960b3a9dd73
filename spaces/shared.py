"""Weights shared across a layer's MBConv candidates, as slices of the widest one (`supernet.sharing`).

Why: with one set of weights per candidate (SPOS, `"none"`), every operator gets the same number of updates,
so an e6 block, with six times an e1 block's parameters, is the least trained relative to what it can reach.
On the proxy the stand-alone ground truth rewards expansion and the supernets' scores barely do
(`results/proxy/calibration.md` §7). Slimmable networks and OFA share instead:
- `"expand"`: the candidates of one kernel size that have an expansion conv (e3, e6 in s1) use the first
  `in x e` hidden channels of tied weights at the widest expansion (expansion, depthwise and projection weights),
  so every step on either trains the narrow part of both;
- `"expand+kernel"`: also across kernel sizes; a k x k depthwise filter is the centre of the widest
  kernel's (OFA's elastic kernel, without its kernel transform matrices).
Each candidate keeps its own BatchNorms (switchable BN, as slimmable networks do): the statistics of
different widths differ, and BN is recalibrated per path before any score anyway. An e1 candidate has no
expansion conv (its depthwise conv runs on the input channels), so it keeps its own weights.
`standalone()` copies a candidate's slices into an ordinary `MBConv`, so `SuperNet.extract` still returns the
network `build_network` builds, with the path's weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spaces.ops import MBConv, activation

SHARING = ("none", "expand", "expand+kernel")


def shared_weights(in_chs: int, out_chs: int, kernel: int, mid: int) -> tuple[nn.Parameter, ...]:
    """The conv weights of a group's widest candidate: expansion 1x1, depthwise k x k, projection 1x1.

    Plain Parameters registered in every member (tied weights, which `torch.func.functional_call` and the
    optimisers handle), not one module registered under several names: `functional_call` (Cream's
    simulated step) does not restore a module that appears at several paths.
    """
    shapes = ((mid, in_chs, 1, 1), (mid, 1, kernel, kernel), (out_chs, mid, 1, 1))
    weights = tuple(nn.Parameter(torch.empty(shape)) for shape in shapes)
    he_fan_out(weights)  # drawn at construction too, as nn.Conv2d does: the RNG stream is a function of the space
    return weights


def he_fan_out(weights: tuple[nn.Parameter, ...]) -> None:
    """He fan-out, as `init_weights` gives an `nn.Conv2d` of the widest member's shape."""
    for weight in weights:
        nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


class SlicedMBConv(nn.Module):
    """An MBConv (no SE) whose conv weights are the first channels and central taps of shared weights.

    `owner` marks the one member of a group that initialises the shared weights (`reset_shared`).
    """

    def __init__(
        self,
        weights: tuple[nn.Parameter, ...],
        in_chs: int,
        out_chs: int,
        stride: int,
        kernel: int,
        expand: int,
        act: str,
        owner: bool,
    ):
        super().__init__()
        self.expand_weight, self.dw_weight, self.project_weight = weights
        self.in_chs, self.out_chs, self.stride, self.kernel, self.expand_ratio = in_chs, out_chs, stride, kernel, expand
        self.act_name, self.owner = act, owner
        mid = in_chs * expand
        self.expand_bn, self.expand_act = nn.BatchNorm2d(mid), activation(act)
        self.dw_bn, self.dw_act = nn.BatchNorm2d(mid), activation(act)
        self.project_bn = nn.BatchNorm2d(out_chs)
        self.residual = stride == 1 and in_chs == out_chs

    def reset_shared(self) -> None:
        """Re-draw the shared weights after `init_weights` (owner only, so once per group)."""
        if self.owner:
            he_fan_out((self.expand_weight, self.dw_weight, self.project_weight))

    def weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This candidate's slices of the shared weights: expansion, depthwise, projection."""
        mid, k = self.in_chs * self.expand_ratio, self.kernel
        off = (self.dw_weight.shape[-1] - k) // 2
        return (
            self.expand_weight[:mid],
            self.dw_weight[:mid, :, off : off + k, off : off + k],
            self.project_weight[:, :mid],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_expand, w_dw, w_project = self.weights()
        h = self.expand_act(self.expand_bn(F.conv2d(x, w_expand)))
        h = F.conv2d(h, w_dw, stride=self.stride, padding=self.kernel // 2, groups=w_dw.shape[0])
        y = self.project_bn(F.conv2d(self.dw_act(self.dw_bn(h)), w_project))
        return x + y if self.residual else y

    def standalone(self) -> MBConv:
        """An ordinary MBConv holding copies of this candidate's weights and BN state (equal in eval mode)."""
        net = MBConv(self.in_chs, self.out_chs, self.stride, self.kernel, self.expand_ratio, act=self.act_name)
        convs = (net.expand[0], net.dw[0], net.project[0])
        bns = ((net.expand[1], self.expand_bn), (net.dw[1], self.dw_bn), (net.project[1], self.project_bn))
        with torch.no_grad():
            for conv, weight in zip(convs, self.weights(), strict=True):
                conv.weight.copy_(weight)
        for target, source in bns:
            target.load_state_dict(source.state_dict())
        return net.to(self.expand_weight.device)


def shared_candidates(choices: tuple[dict, ...], in_chs: int, out_chs: int, stride: int, sharing: str) -> dict:
    """{choice index: SlicedMBConv} for the candidates `sharing` ties together; the others are built as usual."""
    if sharing not in SHARING:
        raise ValueError(f"supernet.sharing must be one of {', '.join(SHARING)}, got {sharing!r}")
    if sharing == "none":
        return {}
    groups: dict[object, list[int]] = {}
    for i, spec in enumerate(choices):
        if spec["op"] == "mbconv" and spec["expand"] > 1 and not spec.get("se"):
            groups.setdefault(spec["kernel"] if sharing == "expand" else "all", []).append(i)
    built = {}
    for members in groups.values():
        specs = [choices[i] for i in members]
        acts = {s.get("act", "swish") for s in specs}
        kernel = max(s["kernel"] for s in specs)
        if len(acts) > 1 or any((kernel - s["kernel"]) % 2 for s in specs):
            raise ValueError(
                f"candidates {[s['name'] for s in specs]} cannot share weights (activation or kernel centre)"
            )
        (act,) = acts
        weights = shared_weights(in_chs, out_chs, kernel, in_chs * max(s["expand"] for s in specs))
        for n, (i, s) in enumerate(zip(members, specs, strict=True)):
            built[i] = SlicedMBConv(weights, in_chs, out_chs, stride, s["kernel"], s["expand"], act, n == 0)
    return built
