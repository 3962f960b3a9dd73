"""Candidate operators and fixed blocks: small modules with explicit arguments, never a config object."""

from __future__ import annotations

import torch
from timm.layers import SEModule, make_divisible
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU, "relu6": nn.ReLU6}


def activation(name: str) -> nn.Module:
    """One activation module by name, so op specs stay plain strings."""
    try:
        return ACTIVATIONS[name](inplace=True)
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


def conv_bn(
    in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1, affine: bool = True
) -> list[nn.Module]:
    """A bias-free convolution with 'same' padding followed by BatchNorm (the unit every op is built of)."""
    return [
        nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_chs, affine=affine),
    ]


class ConvBnAct(nn.Sequential):
    """Conv + BN + activation: stems, fixed 1x1 projections and heads."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int, stride: int = 1, act: str = "swish", affine: bool = True
    ):
        super().__init__(*conv_bn(in_chs, out_chs, kernel, stride, affine=affine), activation(act))


SE_STYLES = ("cream", "effnet")


def squeeze_excite(chs: int, in_chs: int, se: float, style: str, act: str) -> nn.Module:
    """SE on `chs` channels of a block whose input has `in_chs`; Identity without SE.

    Two conventions, as the official code builds them: `"cream"` (Cream's childnet, MobileNetV3-like) reduces
    to `se` x chs rounded to a multiple of 8, with a ReLU inside and a hard-sigmoid gate; `"effnet"` (DNA's
    GenEfficientNet) reduces to int(se x in_chs), the block input's width, with the block's activation and
    a sigmoid gate.
    """
    if not se:
        return nn.Identity()
    if style == "cream":
        return SEModule(chs, rd_channels=make_divisible(chs * se, 8, round_limit=0.0), gate_layer="hard_sigmoid")
    if style == "effnet":
        return SEModule(chs, rd_channels=max(1, int(in_chs * se)), act_layer=ACTIVATIONS[act], gate_layer="sigmoid")
    raise ValueError(f"unknown SE style {style!r}; known: {', '.join(SE_STYLES)}")


class DepthwiseSeparable(nn.Module):
    """Fixed depthwise-separable block after the stem (MobileNetV2/Cream layout), residual when shapes allow."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int = 3, se: float = 0.0, act: str = "swish", se_style: str = "cream"
    ):
        super().__init__()
        self.dw = nn.Sequential(*conv_bn(in_chs, in_chs, kernel, groups=in_chs), activation(act))
        self.se = squeeze_excite(in_chs, in_chs, se, se_style, act)
        self.pw = nn.Sequential(*conv_bn(in_chs, out_chs, 1))
        self.residual = in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.se(self.dw(x)))
        return x + y if self.residual else y


class MBConv(nn.Module):
    """Inverted bottleneck (MobileNetV2): 1x1 expand, depthwise k x k, optional SE, 1x1 project.

    With expansion 1 there is no expansion conv (as in MobileNetV2). The SE follows `se_style`
    (`squeeze_excite`): Cream's by default, DNA's EfficientNet convention with `"effnet"`.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        kernel: int,
        expand: int,
        se: float = 0.0,
        act: str = "swish",
        se_style: str = "cream",
    ):
        super().__init__()
        mid = in_chs * expand
        expand_layers = [*conv_bn(in_chs, mid, 1), activation(act)] if expand != 1 else []
        self.expand = nn.Sequential(*expand_layers)
        self.dw = nn.Sequential(*conv_bn(mid, mid, kernel, stride, groups=mid), activation(act))
        self.se = squeeze_excite(mid, in_chs, se, se_style, act)
        self.project = nn.Sequential(*conv_bn(mid, out_chs, 1))
        self.residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


def channel_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SPOS's channel shuffle: even channels pass through, odd channels feed the main branch."""
    return x[:, 0::2], x[:, 1::2]


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (SPOS choices 0-2, `xception=False`) or its Xception variant (choice 3).

    A unit keeping stride 1 and its channel count splits its input (half passes through, half feeds the
    main branch); otherwise the whole input feeds both the main branch and a projection branch
    (depthwise k x k with the stride, then 1x1 in -> in). The main branch makes out - in' channels.
    Mid width is out/2, as in the official SPOS code.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        kernel: int = 3,
        xception: bool = False,
        affine: bool = True,
    ):
        super().__init__()
        self.split = stride == 1 and in_chs == out_chs
        branch_in = in_chs // 2 if self.split else in_chs
        branch_out = out_chs - branch_in
        if branch_out <= 0:
            raise ValueError(f"shuffle unit {in_chs}->{out_chs} leaves no channels for its main branch")
        mid = out_chs // 2

        def dw(chs: int, s: int) -> list[nn.Module]:
            return conv_bn(chs, chs, kernel, s, groups=chs, affine=affine)

        def pw(i: int, o: int) -> list[nn.Module]:
            return [*conv_bn(i, o, 1, affine=affine), nn.ReLU(inplace=True)]

        if xception:
            main = [*dw(branch_in, stride), *pw(branch_in, mid), *dw(mid, 1), *pw(mid, mid), *dw(mid, 1)]
            main += pw(mid, branch_out)
        else:
            main = [*pw(branch_in, mid), *dw(mid, stride), *pw(mid, branch_out)]
        self.main = nn.Sequential(*main)
        self.proj = None if self.split else nn.Sequential(*dw(in_chs, stride), *pw(in_chs, in_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            passed, x = channel_split(x)
        else:
            passed = self.proj(x)
        return torch.cat((passed, self.main(x)), 1)


class Classifier(nn.Module):
    """Global average pool, optional 1x1 head conv, dropout and linear: the network's tail after features."""

    def __init__(
        self,
        in_chs: int,
        num_classes: int,
        head_chs: int = 0,
        head_after_pool: bool = False,
        act: str = "swish",
        dropout: float = 0.0,
        affine: bool = True,
        linear_bias: bool = True,
    ):
        super().__init__()
        head: list[nn.Module] = []
        if head_chs and head_after_pool:  # Cream/EfficientNet-lite: 1x1 conv with bias on the pooled vector
            head = [nn.Conv2d(in_chs, head_chs, 1, bias=True), activation(act)]
        elif head_chs:
            head = [*conv_bn(in_chs, head_chs, 1, affine=affine), activation(act)]
        self.head_after_pool = head_after_pool
        self.head = nn.Sequential(*head)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_chs or in_chs, num_classes, bias=linear_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.head_after_pool:
            x = self.head(x)
        x = x.mean((2, 3), keepdim=True)
        if self.head_after_pool:
            x = self.head(x)
        return self.fc(self.dropout(x.flatten(1)))


def build_op(spec: dict, in_chs: int, out_chs: int, stride: int) -> nn.Module:
    """Build one candidate operator from its plain spec (`{"op": "mbconv", "kernel": 3, ...}`)."""
    kind, kwargs = spec["op"], {k: v for k, v in spec.items() if k not in ("op", "name")}
    if kind == "mbconv":
        return MBConv(in_chs, out_chs, stride, **kwargs)
    if kind == "shuffle":
        return ShuffleUnit(in_chs, out_chs, stride, **kwargs)
    if kind == "xception":
        return ShuffleUnit(in_chs, out_chs, stride, kernel=3, xception=True, **kwargs)
    if kind == "identity":
        if stride != 1 or in_chs != out_chs:
            raise ValueError(f"identity cannot change shape ({in_chs}->{out_chs}, stride {stride})")
        return nn.Identity()
    raise ValueError(f"unknown operator {kind!r}")


def init_weights(model: nn.Module) -> None:
    """Standard initialisation (He fan-out for convs, small normal for linear, BN 1/0), seeded by torch's RNG."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
