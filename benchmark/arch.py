"""Print an architecture of a space readably, with its MFLOPs (MACs) and params.

python -m benchmark.arch --space s1 --arch 7-9-1-3-8-4-9-1   # the proxy scale by default, as a proxy run finds
python -m benchmark.arch --space s1 --preset imagenet --arch first --json
python -m benchmark.arch --space cream --arch cream-287   # a published network, beside its published figures
"""

from __future__ import annotations

import argparse
import json
import sys

from spaces.arch import decode, describe, encode
from spaces.flops import arch_cost
from spaces.published import Published, counter_extras, lookup, names_line, resolve_space
from spaces.registry import SCALES, get_space, list_spaces
from spaces.supernet import build_network


def named_arch(space, text: str) -> tuple[int, ...]:
    """`first` / `last` (every layer's first or last choice) or any architecture string."""
    if text == "first":
        return tuple(0 for _ in space.layers)
    if text == "last":
        return tuple(n - 1 for n in space.num_choices)
    try:
        return decode(space, text)
    except ValueError as err:
        raise ValueError(f"{err}; or name a published network: {names_line()}") from None


def published_report(entry: Published, space, arch, res: int, classes: int, macs: int, params: int) -> dict:
    """Our counts beside the published ones; differences only in the published setting (its px, 1000 classes)."""
    out = {
        "name": entry.name,
        "source": entry.source,
        "counter": entry.counter,
        "mflops": entry.macs_m,
        "params_m": entry.params_m,
        "matches": entry.matches,
        "note": entry.note,
        "comparable": res == entry.resolution and classes == 1000,
    }
    if out["comparable"]:
        with_extras = macs + counter_extras(build_network(space, arch, classes), res)
        out["counter_mflops"] = with_extras / 1e6
        out["diff_pct"] = 100 * (macs / 1e6 / entry.macs_m - 1)
        out["counter_diff_pct"] = 100 * (with_extras / 1e6 / entry.macs_m - 1)
        if entry.params_m is not None:
            out["params_diff_pct"] = 100 * (params / 1e6 / entry.params_m - 1)
    return out


def report(space_name: str, scale: str, arch_text: str, resolution: int | None, num_classes: int | None) -> dict:
    """The architecture's layers, candidate names, MACs and params as plain data (and published figures)."""
    entry = lookup(arch_text)
    if entry is not None:  # a published network: its own space (within --space's family) and resolution
        space_name = resolve_space(entry, space_name)
        if scale != "imagenet":
            raise ValueError(f"{entry.name} is an ImageNet network; it has no {scale} version")
        arch_text, resolution = entry.arch, resolution or entry.resolution
    space = get_space(space_name, scale)
    try:
        arch = named_arch(space, arch_text)
    except ValueError as err:
        raise ValueError(f"{err}{other_scale_hint(space_name, scale, arch_text)}") from None
    classes = num_classes or (1000 if scale == "imagenet" else 10)
    chans = 3 if scale == "imagenet" else 1
    res = resolution or space.resolution
    macs, params = arch_cost(space, arch, res, classes, chans)
    layers = [
        {"layer": i, "in": l.in_chs, "out": l.out_chs, "stride": l.stride, "choice": c, "op": l.choices[c]["name"]}
        for i, (l, c) in enumerate(zip(space.layers, arch))
    ]
    info = {
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
    if entry is not None:
        info["published"] = published_report(entry, space, arch, res, classes, macs, params)
    return info


def other_scale_hint(space_name: str, scale: str, arch_text: str) -> str:
    """'; it is an architecture of the <other> scale: add --scale <other>' where the other scale's space takes it."""
    for other in SCALES:
        if other != scale:
            try:
                named_arch(get_space(space_name, other), arch_text)
            except (KeyError, ValueError):
                continue
            return f"; it is an architecture of the {other} scale: add --scale {other}"
    return ""


def scale_of(args: argparse.Namespace) -> str:
    """--scale, else the --preset's scale, else imagenet for a published network and proxy for the rest (the
    scale of the embedded default's runs)."""
    if args.scale:
        return args.scale
    if args.preset:
        from benchmark.preset import load_preset

        return load_preset(args.preset).get("scale", "imagenet")
    return "imagenet" if lookup(args.arch) is not None else "proxy"


def print_published(pub: dict) -> None:
    """The published figures and how ours compare (see `spaces.published` for the conventions)."""
    params = "params not published" if pub["params_m"] is None else f"{pub['params_m']} M params"
    print(f"published {pub['name']}: {pub['mflops']:g} M MACs by {pub['counter']}, {params}")
    print(f"  source: {pub['source']}")
    if not pub["comparable"]:
        print("  (published at another resolution or class count: no comparison)")
    else:
        line = f"  ours {pub['diff_pct']:+.1f} %; with BatchNorm and conv biases as that counter counts them "
        line += f"{pub['counter_mflops']:.2f} M ({pub['counter_diff_pct']:+.1f} %)"
        if "params_diff_pct" in pub:
            line += f"; params {pub['params_diff_pct']:+.1f} %"
        print(line)
    match = {"conv+linear": "our conv + linear count", "counter": "the count with BatchNorm and biases"}
    print(f"  within 2 % of the published MACs: {match.get(pub['matches'], 'neither count')}")
    print(f"  note: {pub['note']}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input gives one line `error: ...` and exit status 2."""
    p = argparse.ArgumentParser(
        prog="python -m benchmark.arch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--space", required=True, help=", ".join(list_spaces()))
    p.add_argument(
        "--scale", choices=SCALES, help="default: the --preset's, else proxy (imagenet for a published name)"
    )
    p.add_argument("--preset", help="take the scale from this preset (smoke, proxy, imagenet or a JSON file)")
    p.add_argument(
        "--arch",
        required=True,
        help="index form 2-1-0-..., readable form k3e3-id-..., first, last, or a published network (cream-287, dna-a)",
    )
    p.add_argument("--resolution", type=int, help="input size in pixels (default: the scale's, 224 or 28)")
    p.add_argument("--classes", type=int, help="number of classes (default 1000 / 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    try:
        info = report(args.space, scale_of(args), args.arch, args.resolution, args.classes)
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
    if "published" in info:
        print_published(info["published"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
