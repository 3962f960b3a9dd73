"""The registry of search spaces: each space is plain data (layers with their candidate specs) at two scales.

`s1`, `s2`, `s3` follow docs/design.md §4 (the paper's spaces); `spos`, `cream` and the `dna` spaces rebuild the
reference spaces of those papers' official code, wide enough to hold their published networks
(`spaces.published`). `imagenet` scale is the published layout at 224 px; `proxy` keeps the same candidate
sets on a narrower, shallower layout for 28 px Fashion-MNIST on 2 CPU cores.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

SCALES = ("imagenet", "proxy")


@dataclass(frozen=True)
class LayerSpec:
    """One searchable layer: its shape and the specs of its candidate operators (indexed by choice)."""

    in_chs: int
    out_chs: int
    stride: int
    choices: tuple[dict, ...]

    @property
    def choice_names(self) -> tuple[str, ...]:
        """Short readable names of the candidates, in choice order."""
        return tuple(c["name"] for c in self.choices)


@dataclass(frozen=True)
class SpaceSpec:
    """A whole search space: fixed stem and tail around a list of searchable layers."""

    name: str
    scale: str
    resolution: int
    stem: dict
    layers: tuple[LayerSpec, ...]
    tail: dict
    notes: str = field(default="", compare=False)

    @property
    def num_choices(self) -> tuple[int, ...]:
        """Candidate count of every searchable layer."""
        return tuple(len(layer.choices) for layer in self.layers)

    @property
    def num_architectures(self) -> int:
        """How many distinct architectures the space holds."""
        total = 1
        for n in self.num_choices:
            total *= n
        return total


def mbconv(kernel: int, expand: int, se: float = 0.0, act: str = "swish", se_style: str | None = None) -> dict:
    """Spec of an MBConv candidate; `se_style` only where it is not Cream's default (`spaces.ops.squeeze_excite`)."""
    spec = {
        "op": "mbconv",
        "name": f"k{kernel}e{expand}",
        "kernel": kernel,
        "expand": expand,
        "se": se,
        "act": act,
    }
    return spec if se_style is None else spec | {"se_style": se_style}


def shuffle(kernel: int, affine: bool = True) -> dict:
    """Spec of a ShuffleNetV2 candidate with a k x k depthwise conv."""
    return {"op": "shuffle", "name": f"shuf{kernel}", "kernel": kernel, "affine": affine}


def xception(affine: bool = True) -> dict:
    """Spec of SPOS's Xception-style candidate."""
    return {"op": "xception", "name": "xcep", "affine": affine}


IDENTITY = {"op": "identity", "name": "id"}
S1_OPS = tuple(mbconv(k, e) for k in (3, 5, 7) for e in (1, 3, 6))
S2_OPS = S1_OPS + tuple(shuffle(k) for k in (3, 5, 7)) + (xception(),)
CREAM_OPS = tuple(mbconv(k, e, se=0.25) for k in (3, 5, 7) for e in (4, 6))
SPOS_OPS = tuple(shuffle(k, affine=False) for k in (3, 5, 7)) + (xception(affine=False),)
# DNA's six operations in the official order (searching/dna/student_supernet.py: MB6 3x3 ... MB3 7x7)
DNA_OPS = tuple(mbconv(k, e, se=0.25, se_style="effnet") for e in (6, 3) for k in (3, 5, 7))

# (out channels, stride of the stage's first layer) per stage
# The proxy (calibrated, results/proxy/calibration.md): stem at stride 2 (14x14), its DS block widens to 24,
# then two stages of 4 layers at 7x7 and 4x4. Only the first layer of each stage changes shape; the other
# 6 of 8 are residual and offer Identity, so weight sharing couples weakly and a step is cheap.
MOBILE_STAGES = {
    "imagenet": ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2)),
    "proxy": ((40, 2), (64, 2)),
}
MOBILE_STEM = {"imagenet": {"chs": 16, "stride": 2, "ds": 16}, "proxy": {"chs": 16, "stride": 2, "ds": 24}}
MOBILE_TAIL = {"imagenet": (320, 1280), "proxy": (96, 192)}
RESOLUTION = {"imagenet": 224, "proxy": 28}


def stage_layers(
    stem_chs: int, stages: tuple[tuple[int, int], ...], depths: tuple[int, ...], ops: tuple, identity: bool
) -> tuple[LayerSpec, ...]:
    """Searchable layers of a stage layout; Identity joins only where a layer keeps stride 1 and width."""
    layers, in_chs = [], stem_chs
    for (out_chs, stride), depth in zip(stages, depths, strict=True):
        for i in range(depth):
            s = stride if i == 0 else 1
            keeps_shape = s == 1 and in_chs == out_chs
            choices = ops + ((IDENTITY,) if identity and keeps_shape else ())
            layers.append(LayerSpec(in_chs, out_chs, s, choices))
            in_chs = out_chs
    return tuple(layers)


def mobile_space(
    name: str, scale: str, depth: int, ops: tuple, identity: bool, cream: bool = False, notes: str = ""
) -> SpaceSpec:
    """A MobileNetV2/Cream-like space: stem, fixed depthwise-separable, searchable stages, 1x1, head."""
    stem = dict(MOBILE_STEM[scale], act="swish", ds_se=0.25 if cream else 0.0)
    stages = MOBILE_STAGES[scale]
    layers = stage_layers(stem["ds"], stages, (depth,) * len(stages), ops, identity)
    conv_chs, head_chs = MOBILE_TAIL[scale]
    tail = {"conv_chs": conv_chs, "head_chs": head_chs, "head_after_pool": cream, "act": "swish"}
    return SpaceSpec(name, scale, RESOLUTION[scale], stem, layers, tail, notes)


CREAM_NOTES = (
    "Cream's childnet (microsoft/Cream Cream/lib/models/structures/childnet.py): stem 16, DS block with SE, "
    "stages 24/40/80/96/192 of 1-4 layers (the official supernet template, whose FLOPs range fixes each stage's "
    "depth; its 80-wide stage can reach 5, left out here), 1x1 conv 320, pool, 1x1 conv 1280 with bias, linear. "
    "Every layer after a stage's first offers `id` (index 6, after the six ops, so older architecture strings "
    "keep their meaning): a skipped layer is a shallower stage, which is how Cream-287 (depths 1/2/3/4/3) is "
    "expressed. Uniform sampling skips each such layer with probability 1/7; the official supernet never skips."
)


# DNA (changlin31/DNA): stem 32 + DS 16, stages 24/40/80/c4/c5/320, head 1x1 1280 before the pool.
# The searching code's supernet has c4/c5 = 112/192 and 2/4/4/4/4/1 layers (block_layers_num may change them);
# the published DNA-a and DNA-b (retraining/model.py) have 96/160 and 96/192 stages, which no searching
# code has, so each width pair is a space of its own. Depths are the most any published network uses.
DNA_WIDTHS = {"dna": (112, 192), "dna_w96_192": (96, 192), "dna_w96_160": (96, 160)}
DNA_DEPTHS = (3, 4, 4, 4, 5, 1)


def dna_space(name: str, scale: str) -> SpaceSpec:
    """DNA's space (MBConv e6/e3 x k3/5/7 with EfficientNet SE, Swish) at one pair of stage widths."""
    c4, c5 = DNA_WIDTHS[name]
    notes = (
        f"DNA's EfficientNet-B0 layout with stages 24/40/80/{c4}/{c5}/320 of up to {'/'.join(map(str, DNA_DEPTHS))} "
        "layers; every layer after a stage's first offers `id` (a shallower stage). "
        + ("The searching code's widths (DNA-c, DNA-d)." if name == "dna" else "The widths of a published network.")
    )
    if scale == "proxy":  # the proxy has no stage at these widths: every dna space shares the proxy layout
        stem = dict(MOBILE_STEM[scale], act="swish", ds_se=0.25, ds_se_style="effnet")
        layers = stage_layers(stem["ds"], MOBILE_STAGES[scale], (4, 4), DNA_OPS, identity=True)
        conv_chs, head_chs = MOBILE_TAIL[scale]
        tail = {"conv_chs": conv_chs, "head_chs": head_chs, "act": "swish"}
        return SpaceSpec(name, scale, RESOLUTION[scale], stem, layers, tail, notes)
    stem = {"chs": 32, "stride": 2, "ds": 16, "act": "swish", "ds_se": 0.25, "ds_se_style": "effnet"}
    stages = ((24, 2), (40, 2), (80, 2), (c4, 1), (c5, 2), (320, 1))
    layers = stage_layers(stem["ds"], stages, DNA_DEPTHS, DNA_OPS, identity=True)
    tail = {"conv_chs": 0, "head_chs": 1280, "act": "swish"}
    return SpaceSpec(name, scale, RESOLUTION[scale], stem, layers, tail, notes)


def spos_space(scale: str) -> SpaceSpec:
    """SPOS's ShuffleNetV2 space as its official code builds it (non-affine BN, ReLU, head 1024)."""
    if scale == "imagenet":
        stem_chs, stride, stages, depths, head = (
            16,
            2,
            ((64, 2), (160, 2), (320, 2), (640, 2)),
            (4, 4, 8, 4),
            1024,
        )
    else:
        stem_chs, stride, stages, depths, head = (
            8,
            1,
            ((16, 2), (40, 2), (80, 2), (160, 2)),
            (2, 2, 4, 2),
            256,
        )
    stem = {"chs": stem_chs, "stride": stride, "act": "relu", "ds": 0, "affine": False}
    tail = {
        "conv_chs": 0,
        "head_chs": head,
        "act": "relu",
        "dropout": 0.1,
        "affine": False,
        "linear_bias": False,
    }
    layers = stage_layers(stem_chs, stages, depths, SPOS_OPS, identity=False)
    return SpaceSpec("spos", scale, RESOLUTION[scale], stem, layers, tail)


def _builders() -> dict:
    depth = {"imagenet": (4, 6), "proxy": (4, 6)}
    return {
        "s1": lambda sc: mobile_space("s1", sc, depth[sc][0], S1_OPS, identity=True),
        "s2": lambda sc: mobile_space("s2", sc, depth[sc][0], S2_OPS, identity=True),
        "s3": lambda sc: mobile_space("s3", sc, depth[sc][1], S2_OPS, identity=True),
        "spos": spos_space,
        "cream": lambda sc: mobile_space("cream", sc, depth[sc][0], CREAM_OPS, True, cream=True, notes=CREAM_NOTES),
        **{name: functools.partial(dna_space, name) for name in DNA_WIDTHS},
    }


SPACES = _builders()


def list_spaces() -> list[str]:
    """Names of every registered space."""
    return sorted(SPACES)


def get_space(name: str, scale: str = "imagenet") -> SpaceSpec:
    """Look up a space by name and scale; unknown names fail with the list of known ones."""
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; known: {', '.join(list_spaces())}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    return SPACES[name](scale)
