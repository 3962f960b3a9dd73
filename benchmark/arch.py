"""Print an architecture of a space readably, with its MFLOPs (MACs) and params.

python -m benchmark.arch --space s1 --arch 0-1-2-3-4-5-6-7-8-9-0-1-2-3-4-5-6-7-8-0
python -m benchmark.arch --space s1 --scale proxy --arch first --json
"""

from __future__ import annotations

import argparse
import json
import sys

from spaces.arch import decode, describe, encode
from spaces.flops import arch_cost
from spaces.registry import SCALES, get_space, list_spaces


def named_arch(space, text: str) -> tuple[int, ...]:
    """`first` / `last` (every layer's first or last choice) or any architecture string."""
    if text == "first":
        return tuple(0 for _ in space.layers)
    if text == "last":
        return tuple(n - 1 for n in space.num_choices)
    return decode(space, text)


def report(space_name: str, scale: str, arch_text: str, resolution: int | None, num_classes: int | None) -> dict:
    """The architecture's layers, candidate names, MACs and params as plain data."""
    space = get_space(space_name, scale)
    arch = named_arch(space, arch_text)
    classes = num_classes or (1000 if scale == "imagenet" else 10)
    chans = 3 if scale == "imagenet" else 1
    res = resolution or space.resolution
    macs, params = arch_cost(space, arch, res, classes, chans)
    layers = [
        {"layer": i, "in": l.in_chs, "out": l.out_chs, "stride": l.stride, "choice": c, "op": l.choices[c]["name"]}
        for i, (l, c) in enumerate(zip(space.layers, arch))
    ]
    return {
        "space": space.name,
        "scale": scale,
        "resolution": res,
        "num_classes": classes,
        "arch": encode(arch),
        "readable": describe(space, arch),
        "mflops": macs / 1e6,
        "macs": macs,
        "params_m": params / 1e6,
        "layers": layers,
        "space_size": space.num_architectures,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input gives one line `error: ...` and exit status 2."""
    p = argparse.ArgumentParser(
        prog="python -m benchmark.arch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--space", required=True, help=", ".join(list_spaces()))
    p.add_argument("--scale", default="imagenet", choices=SCALES)
    p.add_argument("--arch", required=True, help="index form 2-1-0-..., readable form k3e3-id-..., first or last")
    p.add_argument("--resolution", type=int, help="input size in pixels (default: the scale's, 224 or 28)")
    p.add_argument("--classes", type=int, help="number of classes (default 1000 / 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    try:
        info = report(args.space, args.scale, args.arch, args.resolution, args.classes)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['space']}/{info['scale']} at {info['resolution']} px, {info['num_classes']} classes")
    print(f"arch {info['arch']}  ({info['readable']})")
    for row in info["layers"]:
        print(f"  layer {row['layer']:2d}  {row['in']:4d} -> {row['out']:4d}  stride {row['stride']}  {row['op']}")
    print(
        f"{info['mflops']:.2f} MFLOPs (MACs)  {info['params_m']:.3f} M params  "
        f"(space holds {info['space_size']:.3g} architectures)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
