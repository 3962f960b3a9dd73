"""FLOPs and params as pure functions of (space, arch, resolution, classes, channels).

Convention of the SPOS/Cream/DNA papers: multiply-accumulates of conv and linear layers only (BN,
activations, pooling and element-wise products not counted), counted with fvcore in eval mode. A
per-operator lookup table, counted with the same fvcore calls, makes constrained sampling fast; the
layers of a path are independent modules, so the table's sums equal fvcore's count on the whole
extracted network exactly.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import torch
from torch import nn

with warnings.catch_warnings():  # fvcore scripts its focal losses at import: torch's deprecation note, every run
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis

from spaces.arch import Arch, check_arch
from spaces.registry import SpaceSpec, get_space
from spaces.supernet import SuperNet

# fvcore counts these by default; the papers' convention does not.
NOT_COUNTED = (
    "aten::batch_norm",
    "aten::adaptive_avg_pool2d",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
)


def _count_nothing(inputs, outputs) -> int:
    """fvcore handle for operators the papers' convention does not count."""
    return 0


def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of conv and linear layers of one forward call, counted by fvcore in eval mode."""
    was_training = module.training
    module.eval()
    try:
        analysis = FlopCountAnalysis(module, inputs)
        # set_op_handle(op, None) only marks an op ignored and keeps counting it: give it a zero handle
        analysis.set_op_handle(**{op: _count_nothing for op in NOT_COUNTED})
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        with torch.no_grad():
            return int(analysis.total())
    finally:
        module.train(was_training)


def count_params(module: nn.Module) -> int:
    """Number of parameters of a module (BN affine parameters included, buffers not)."""
    return sum(p.numel() for p in module.parameters())


class FlopsTable:
    """Per-operator MACs and params of a space at one resolution, for fast and exact path costs."""

    def __init__(self, space: SpaceSpec, resolution: int | None = None, num_classes: int = 1000, in_chans: int = 3):
        self.space = space
        self.resolution = resolution or space.resolution
        net = SuperNet(space, num_classes, in_chans).eval()
        x = torch.zeros(1, in_chans, self.resolution, self.resolution)
        with torch.no_grad():
            h = net.stem(x)
            fixed_macs = count_macs(net.stem, x)
            self.layer_macs: list[list[int]] = []
            self.layer_params: list[list[int]] = []
            seen: dict[tuple, int] = {}  # layers of a stage repeat their shapes: count each shape once
            for spec, layer in zip(space.layers, net.layers):
                keys = [(repr(c), spec.in_chs, spec.out_chs, spec.stride, tuple(h.shape)) for c in spec.choices]
                for key, op in zip(keys, layer.candidates):
                    if key not in seen:
                        seen[key] = count_macs(op, h)
                self.layer_macs.append([seen[key] for key in keys])
                self.layer_params.append([count_params(op) for op in layer.candidates])
                h = layer.candidates[0](h)
            self.fixed_macs = fixed_macs + count_macs(net.tail, h)
        self.fixed_params = count_params(net.stem) + count_params(net.tail)

    def flops(self, arch: Sequence[int]) -> int:
        """MACs of the path `arch`."""
        check_arch(self.space, arch)
        return self.fixed_macs + sum(t[c] for t, c in zip(self.layer_macs, arch))

    def params(self, arch: Sequence[int]) -> int:
        """Parameters of the path `arch`."""
        check_arch(self.space, arch)
        return self.fixed_params + sum(t[c] for t, c in zip(self.layer_params, arch))

    def bounds(self) -> tuple[int, int]:
        """The smallest and largest MACs of any architecture in the space."""
        low = self.fixed_macs + sum(min(t) for t in self.layer_macs)
        high = self.fixed_macs + sum(max(t) for t in self.layer_macs)
        return low, high


@functools.lru_cache(maxsize=32)
def flops_table(space_name: str, scale: str, resolution: int | None, num_classes: int, in_chans: int) -> FlopsTable:
    """A cached lookup table: building one counts every candidate once (seconds at ImageNet scale)."""
    return FlopsTable(get_space(space_name, scale), resolution, num_classes, in_chans)


def arch_cost(
    space: SpaceSpec, arch: Arch, resolution: int | None = None, num_classes: int = 1000, in_chans: int = 3
) -> tuple[int, int]:
    """(MACs, params) of an architecture: a pure function of its arguments, served by the cached table."""
    table = flops_table(space.name, space.scale, resolution, num_classes, in_chans)
    return table.flops(arch), table.params(arch)
